# SAAL with the ASAM perturbation, which is what the authors' released code computes
# (eps = theta^2 * g * rho / || |theta| * g ||).
_base_ = ['./saal_sam.py']
scorer = dict(perturbation=dict(_delete_=True, type='ASAMPerturbation', rho=0.05))
