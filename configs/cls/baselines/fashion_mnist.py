# The paper's Table 1 protocol on Fashion-MNIST (A.4) for every strategy, Adam and SAM, 5 seeds:
#   python tools/benchmark_al.py configs/cls/baselines/fashion_mnist.py --workers 1
# ResNet-18 from scratch each round, 50 epochs; written for a GPU (task.device='cuda'; use
# --cfg-options task.device=cpu to run on a CPU). The data must be in the folder named by
# task.dataset.root (nothing is downloaded).
_base_ = [
    '../../_base_/datasets/fashion_mnist.py', '../../_base_/protocols/low_budget.py',
    '../../_base_/default_runtime.py', './_base_/strategies.py'
]
task = dict(device='cuda')
hooks = []
optimizers = dict(
    adam=dict(type='Adam', lr=1e-3),
    # The SAM optimizer (rho 0.05) over SGD with momentum 0.9 at the paper's SAM learning rate.
    sam=dict(type='SAM', base_optimizer=dict(type='SGD', lr=1e-3, momentum=0.9), rho=0.05))
# 28x28 images: the convolutional VAE needs sides divisible by 8, so VAAL uses an MLP VAE.
strategies = dict(vaal=dict(scorer=dict(vae=dict(_delete_=True, type='MLPVAE', hidden=512,
                                                 latent_dim=64))))
