# SAAL with the ASAM perturbation, which is what the authors' released code computes
# (eps = theta^2 * g * rho / || |theta| * g ||).
_base_ = ['./saal_sam.py']
scorer = dict(
    perturbation=dict(_delete_=True, type='ASAMPerturbation', rho=0.05),
    # ASAM forms every layer's per-sample gradient (no low-rank route). In chunks of 8 they
    # all fit the engine's 512 MB keep budget for ResNet-18, so none is formed twice: measured
    # faster than chunks of 32 and at 60 % of the memory (docs/performance.md).
    engine=dict(chunk_size=8))
