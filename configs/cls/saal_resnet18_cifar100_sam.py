# SAAL on cifar100, the classifier trained with the SAM optimizer (rho 0.05) over SGD with
# momentum 0.9 at the paper's SAM learning rate (A.5: 1e-3, 0.1 for CIFAR-100).
_base_ = ['./saal_resnet18_cifar100.py']
task = dict(
    optimizer=dict(
        _delete_=True,
        type='SAM',
        base_optimizer=dict(type='SGD', lr=0.1, momentum=0.9),
        rho=0.05))
