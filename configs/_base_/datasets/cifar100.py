# CIFAR100 from a local torchvision-format folder (no download at run time), ResNet-18
# with the 32x32 stem, Adam lr 1e-3, 50 epochs per round (paper A.4).
task = dict(
    type='ClassificationTask',
    dataset=dict(type='CIFAR100Data', root='data/cifar100'),
    model=dict(type='ResNet18CIFAR'),
    optimizer=dict(type='Adam', lr=1e-3),
    epochs=50,
    batch_size=64,
    eval_batch_size=512,
    augment=True)
