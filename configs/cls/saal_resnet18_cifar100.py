# SAAL (SAM perturbation, exact per-sample scores) on cifar100, trained with Adam, paper A.4.
_base_ = [
    '../_base_/datasets/cifar100.py', '../_base_/protocols/low_budget_cifar100.py',
    '../_base_/scorers/saal_sam.py', '../_base_/default_runtime.py'
]
