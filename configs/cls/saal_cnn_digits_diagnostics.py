# The digits demo (configs/cls/saal_cnn_digits.py) with the sharpness diagnostics switched on:
# every round writes work_dir/diagnostics/round_NNN.{json,npz,png} (Theorem 3.3's terms and
# their correlation with the score, psi(rho) and the margin of Theorem 3.1, the perturbed
# loss of the labeled/unlabeled/whole set), the first and last rounds a 2-D loss landscape,
# and the end of the run diagnostics/summary.png. See docs/diagnostics.md.
_base_ = ['./saal_cnn_digits.py']

hooks = [
    dict(type='LearningCurveHook', metric='accuracy'),
    dict(type='SharpnessDiagnosticsHook',
         num_samples=200,  # a seeded uniform subset of each round's 500 scored samples
         power_iters=20,
         tol=1e-3,
         chunk_size=200,  # one vmap chunk: larger chunks amortise per-call overhead
         landscape_rounds=[1, -1],
         landscape_steps=21,
         landscape_span=1.0),
]
