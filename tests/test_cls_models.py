"""Tests of the classification networks (saal_tasks.tasks.classification.models)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from saal_tasks.registry import MODELS
from saal_tasks.tasks.classification.models import ResNet18CIFAR, SmallCNN


@pytest.mark.parametrize('in_channels,size', [(1, 8), (3, 32), (1, 28)])
def test_small_cnn_shapes_and_embed_dim(in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=in_channels, num_classes=7, width=4).eval()
    x = torch.randn(3, in_channels, size, size)
    feats = model.forward_features(x)
    # 2 * width channels pooled to 2x2 -> 16, independent of the input resolution.
    assert model.embed_dim == 32
    assert feats.shape == (3, model.embed_dim)
    assert model.head.in_features == model.embed_dim
    assert model.head.out_features == 7
    logits = model(x)
    assert logits.shape == (3, 7)
    torch.testing.assert_close(logits, model.head(feats), rtol=0, atol=0)


def test_small_cnn_default_embed_dim_and_layers() -> None:
    model = SmallCNN()
    assert model.embed_dim == 256  # 2 * 32 channels * 2 * 2
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with_bn = SmallCNN(batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 2


def test_small_cnn_forward_does_not_modify_input() -> None:
    model = SmallCNN(width=4)
    x = torch.randn(2, 1, 8, 8)
    x_copy = x.clone()
    model(x)
    assert torch.equal(x, x_copy)


def test_registry_builds_models() -> None:
    model = MODELS.build(dict(type='SmallCNN', in_channels=3, num_classes=5, width=2))
    assert isinstance(model, SmallCNN)
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 5)


def _per_sample_grads_vmap(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_fn(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0), ))
        return F.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, x, y)


def _per_sample_grads_loop(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    names = [k for k, _ in model.named_parameters()]
    per_sample: dict[str, list[Tensor]] = {k: [] for k in names}
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in model.named_parameters():
            per_sample[k].append(p.grad.detach().clone())
    return {k: torch.stack(v) for k, v in per_sample.items()}


@pytest.mark.parametrize('batch_norm', [False, True])
def test_small_cnn_vmap_per_sample_grads_match_loop(batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=3, width=3, batch_norm=batch_norm).double()
    if batch_norm:
        # Non-trivial running statistics, so eval-mode BN actually transforms activations.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])

    vmapped = _per_sample_grads_vmap(model, x, y)
    looped = _per_sample_grads_loop(model, x, y)

    assert vmapped.keys() == looped.keys()
    for k in looped:
        assert vmapped[k].shape == (4, *dict(model.named_parameters())[k].shape)
        torch.testing.assert_close(vmapped[k], looped[k], rtol=1e-10, atol=1e-12)
    # Per-sample gradients really differ between samples (not a broadcast batch mean).
    assert not torch.allclose(vmapped['head.weight'][0], vmapped['head.weight'][1])


def test_resnet18_cifar_stem_and_shapes() -> None:
    torch.manual_seed(0)
    model = ResNet18CIFAR(in_channels=3, num_classes=10).eval()
    assert isinstance(model.conv1, nn.Conv2d)
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.in_channels == 3
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert isinstance(model.head, nn.Linear)
    assert model.embed_dim == 512
    assert (model.head.in_features, model.head.out_features) == (512, 10)
    assert 'head.weight' in model.state_dict()
    assert not any(k.startswith('fc.') for k in model.state_dict())

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, 512)
    assert logits.shape == (2, 10)
    torch.testing.assert_close(logits, model.head(feats), rtol=0, atol=0)


def test_resnet18_cifar_other_channels_via_registry() -> None:
    model = MODELS.build(dict(type='ResNet18CIFAR', in_channels=1, num_classes=4)).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 16)).shape == (1, 4)
