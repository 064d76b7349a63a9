# SAAL (SAM perturbation, exact per-sample scores) on cifar10, trained with Adam, paper A.4.
_base_ = [
    '../_base_/datasets/cifar10.py', '../_base_/protocols/low_budget.py',
    '../_base_/scorers/saal_sam.py', '../_base_/default_runtime.py'
]
