# The MNIST-5k protocol (configs/sweeps/mnist5k_table1.py) with the paper's network: ResNet-18
# with the 32x32 CIFAR stem on the digits zero-padded to 32x32, Adam 1e-3 as in the paper's
# A.4, 30 epochs per round, and 500-sample scoring subsets to keep a cell at a few minutes on
# a 2-core CPU (SAAL scores exactly, per sample; see docs/performance.md).
#   python tools/benchmark_al.py configs/sweeps/mnist5k_resnet18.py --seeds 5
_base_ = ['./mnist5k_table1.py']

task = dict(
    dataset=dict(pad=2),
    model=dict(_delete_=True, type='ResNet18CIFAR'),
    epochs=30,
    batch_size=32)
al = dict(subset_size=500)
optimizers = dict(adam=dict(type='Adam', lr=1e-3))
