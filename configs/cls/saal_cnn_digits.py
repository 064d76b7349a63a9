# The embedded default: scikit-learn's digits (real 8x8 handwritten digits that ship inside
# scikit-learn, no download), a small CNN, exact per-sample SAAL with the SAM perturbation.
# Sized for a 2-core CPU: 20 class-balanced initial samples, 20 rounds of 10 queries chosen
# from a random 500-sample subset of the unlabeled pool.
_base_ = ['../_base_/scorers/saal_sam.py', '../_base_/default_runtime.py']

task = dict(
    type='ClassificationTask',
    dataset=dict(type='DigitsData', test_fraction=0.25, split_seed=0),
    model=dict(type='SmallCNN', width=32),
    optimizer=dict(type='Adam', lr=1e-3),
    epochs=40,
    batch_size=32,
    eval_batch_size=512,
    log_interval=20)
scorer = dict(engine=dict(chunk_size=100), log_interval=250)
al = dict(
    num_rounds=20,
    budget=10,
    subset_size=500,
    initial_size=20,
    initial_set=dict(type='BalancedInitialSet'),
    schedule=dict(type='ScratchSchedule'))
