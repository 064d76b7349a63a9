# SAAL with the SAM perturbation of the paper (Eq. 11, q = 2, rho = 0.05), exact per sample.
scorer = dict(
    type='SharpnessScorer',
    perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
    # Exact per sample from per-layer gradient factors (docs/performance.md); memory grows
    # with chunk_size, not with the pool.
    engine=dict(type='FastExactEngine', chunk_size=32),
    mode='max')
selector = dict(type='TopKSelector')
