"""Segmentation models (DeepLab-v2 / v3+ / tiny on mmseg) and RIPU's auxiliary losses.

ResNet-101 models are only built and run once on a 1x3x33x33 image; everything trained or
differentiated uses the tiny model, so the file stays fast on two CPU cores.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from saal_tasks.core.errors import ConfigError
from saal_tasks.tasks.segmentation.losses import (local_consistency_loss,
                                                  negative_learning_loss, semantic_boundary)


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def seg() -> ModuleType:
    """The models module (needs mmseg; the loss tests below do not)."""
    pytest.importorskip('mmseg')
    from saal_tasks.tasks.segmentation import models
    return models


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- ASPPSumHead
def _build_head(seg, in_channels: int, num_classes: int, dilations=(1, 2, 3, 4)):
    loss = dict(type='CrossEntropyLoss', avg_non_ignore=True)
    head = seg.MODELS.build(dict(type='ASPPSumHead', in_channels=in_channels, in_index=0,
                                 num_classes=num_classes, dilations=dilations,
                                 loss_decode=loss))
    head.init_weights()
    return head


def test_aspp_sum_head_is_the_sum_of_its_dilated_convolutions(seg):
    torch.manual_seed(0)
    dilations = (1, 2, 3, 4)
    head = _build_head(seg, 6, 5, dilations)
    x = _randn(2, 6, 9, 11)
    out = head([x])
    assert out.shape == (2, 5, 9, 11)
    expected = sum(F.conv2d(x, conv.weight, conv.bias, padding=d, dilation=d)
                   for conv, d in zip(head.branches, dilations))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # Exactly four 3x3 convolutions with bias, nothing else (conv_seg is removed).
    assert not hasattr(head, 'conv_seg')
    assert sum(p.numel() for p in head.parameters()) == 4 * (6 * 5 * 9 + 5)


def test_aspp_sum_head_branch_d_reaches_exactly_offsets_0_and_d(seg):
    # An impulse through all-ones kernels lights up the positions centre + {-d, 0, d}^2 of
    # every branch: with dilations (1, 3) the union is a 5x5 pattern of 17 cells.
    head = _build_head(seg, 1, 3, (1, 3))
    with torch.no_grad():
        for conv in head.branches:
            conv.weight.fill_(1.0)
            conv.bias.zero_()
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    out = head([x])[0, 1]
    expected = torch.zeros(9, 9)
    for d in (1, 3):
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                expected[4 + dy, 4 + dx] += 1.0
    torch.testing.assert_close(out, expected)
    assert int((out > 0).sum()) == 17 and out[4, 4] == 2.0


def test_aspp_sum_head_init_and_bad_config(seg):
    torch.manual_seed(0)
    head = _build_head(seg, 64, 16)
    weights = torch.cat([c.weight.detach().flatten() for c in head.branches])
    assert abs(float(weights.std()) - 0.01) < 5e-4 and abs(float(weights.mean())) < 5e-4
    assert all(float(c.bias.detach().abs().max()) == 0.0 for c in head.branches)
    with pytest.raises(ConfigError, match='channels'):
        seg.MODELS.build(dict(type='ASPPSumHead', in_channels=8, channels=4, num_classes=3))
    with pytest.raises(ConfigError, match='dilations'):
        seg.MODELS.build(dict(type='ASPPSumHead', in_channels=8, num_classes=3, dilations=()))


def _module_path_grads(head, x, grad_out, wanted):
    """The head's output and gradients through its nn.Conv2d branches (autograd's backward)."""
    hooks = [b.register_forward_hook(lambda *_: None) for b in head.branches]
    try:  # a hook on a branch sends the head down the module path
        out = head([x])
        grads = torch.autograd.grad(out, wanted, grad_out)
    finally:
        for h in hooks:
            h.remove()
    return out, grads


@pytest.mark.parametrize('dilations', [(6, 12, 18, 24), (1, 2, 3, 4), (2,)])
def test_aspp_sum_head_matmul_backward_equals_autograd_in_float64(seg, dilations):
    from saal_tasks.tasks.segmentation.summed_convs import uses_matmul_backward
    torch.manual_seed(0)
    head = _build_head(seg, 12, 5, dilations).double().eval()  # eval: the scoring path
    with torch.no_grad():  # nonzero biases: their gradients are compared too
        for b in head.branches:
            b.bias.normal_()
    x = _randn(2, 12, 9, 30, seed=1).double().requires_grad_(True)
    grad_out = _randn(2, 5, 9, 30, seed=2).double()
    wanted = [x, *head.parameters()]
    assert uses_matmul_backward(x, head.branches)
    out = head([x])
    grads = torch.autograd.grad(out, wanted, grad_out)
    ref_out, ref_grads = _module_path_grads(head, x, grad_out, wanted)
    assert torch.equal(out, ref_out)  # the same F.conv2d calls, summed in the same order
    assert len(grads) == len(ref_grads) == 1 + 2 * len(dilations)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    # Gradients for the weights only (a frozen input), then for the input only (frozen head).
    x_frozen = x.detach()
    g_w = torch.autograd.grad(head([x_frozen]), list(head.parameters()), grad_out)
    for g, r in zip(g_w, ref_grads[1:]):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)
    head.requires_grad_(False)
    (g_x,) = torch.autograd.grad(head([x]), [x], grad_out)
    torch.testing.assert_close(g_x, ref_grads[0], rtol=1e-12, atol=1e-12)


def test_aspp_sum_head_matmul_backward_under_torch_func_and_when_it_is_off(seg, monkeypatch):
    from torch.func import functional_call, grad, vmap
    from saal_tasks.tasks.segmentation import summed_convs
    from saal_tasks.tasks.segmentation.summed_convs import uses_matmul_backward
    torch.manual_seed(0)
    head = _build_head(seg, 6, 3, (1, 3)).double().eval()
    params = {k: v.detach() for k, v in head.named_parameters()}
    xs = _randn(3, 6, 7, 8, seed=3).double()
    calls = []
    backward = summed_convs._SummedSameConvs.backward
    monkeypatch.setattr(summed_convs._SummedSameConvs, 'backward',
                        staticmethod(lambda ctx, g: calls.append(1) or backward(ctx, g)))

    def loss(p, x):
        return functional_call(head, p, ([x[None]],)).pow(2).sum()

    # Per-sample gradients by vmap(grad) (the VectorizedEngine's route) go through it too.
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    assert calls
    calls.clear()
    head.train()  # training keeps autograd's own backward (the recorded runs)
    torch.autograd.grad(head([xs[:1]]).sum(), list(head.parameters()))
    assert not calls
    head.eval()
    for i in range(3):
        hooks = [b.register_forward_hook(lambda *_: None) for b in head.branches]
        try:  # the module path: autograd's own convolution backward
            out = head([xs[i:i + 1]])
            expected = torch.autograd.grad(out.pow(2).sum(), list(head.parameters()))
        finally:
            for h in hooks:
                h.remove()
        for (name, _), e in zip(head.named_parameters(), expected):
            torch.testing.assert_close(per_sample[name][i], e, rtol=1e-12, atol=1e-12)
    # The module path everywhere the matrix-product backward does not apply.
    x = xs[:1].clone().requires_grad_(True)
    assert uses_matmul_backward(x, head.branches)
    with torch.no_grad():
        assert not uses_matmul_backward(x, head.branches)
    assert not uses_matmul_backward(xs[:1], head.branches.requires_grad_(False))
    head.requires_grad_(True)
    hook = head.branches[1].register_forward_hook(lambda *_: None)
    assert not uses_matmul_backward(x, head.branches)
    hook.remove()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not uses_matmul_backward(x, head.branches)
    strided = torch.nn.Conv2d(6, 3, 3, stride=2, padding=1)
    no_bias = torch.nn.Conv2d(6, 3, 3, padding=1, bias=False)
    odd_padding = torch.nn.Conv2d(6, 3, 3, padding=2, dilation=1)
    for conv in (strided, no_bias, odd_padding):
        assert not uses_matmul_backward(x.float(), [conv.float()])


# --------------------------------------------------------------------------- tiny
def test_tiny_forward_shape_stride_and_gradients(seg):
    torch.manual_seed(0)
    model = seg.build_segmentor(seg.tiny(num_classes=16))
    images = _randn(2, 3, 64, 128)
    feats = model.extract_feat(images)
    assert len(feats) == 1 and feats[0].shape == (2, 128, 8, 16)  # output stride 8
    logits = seg.segment_logits(model, images)
    assert logits.shape == (2, 16, 64, 128)
    labels = torch.randint(0, 16, (2, 64, 128), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(logits, labels).backward()
    # mmseg zero-initialises each block's last BN scale (zero_init_residual), so at init the
    # gradient reaches a block's convs only through that scale; the stem and the downsample
    # shortcuts get it directly.
    for name in ('backbone.conv1.weight', 'backbone.layer1.0.bn2.weight',
                 'backbone.layer2.0.downsample.0.weight', 'backbone.layer4.1.bn2.weight',
                 'decode_head.branches.0.weight', 'decode_head.branches.3.bias'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    # Eval mode: same shape, deterministic, the graph is kept for scorers that need it.
    model.eval()
    a = seg.segment_logits(model, images)
    torch.testing.assert_close(a, seg.segment_logits(model, images))
    assert a.requires_grad
    # The head's own resize contract: segment_logits == bilinear resize of the head output.
    with torch.no_grad():
        raw = model.decode_head(model.extract_feat(images))
        torch.testing.assert_close(
            a.detach(), F.interpolate(raw, size=(64, 128), mode='bilinear', align_corners=False))
    with pytest.raises(ValueError, match=r'\[B, 3, H, W\]'):
        seg.segment_logits(model, images[0])


def test_builders_return_independent_configs(seg):
    a, b = seg.tiny(), seg.tiny()
    a['decode_head']['loss_decode']['loss_weight'] = 2.0
    a['backbone']['norm_cfg']['requires_grad'] = False
    assert b['decode_head']['loss_decode']['loss_weight'] == 1.0
    assert b['backbone']['norm_cfg']['requires_grad'] is True
    cfg = seg.deeplab_v2(backbone_weights='x.pth')
    seg_cfg = dict(cfg)
    with pytest.raises(ConfigError):
        seg.build_segmentor(cfg)
    assert cfg == seg_cfg and cfg['backbone_weights'] == 'x.pth'  # not popped from the input
    with pytest.raises(ConfigError, match='num_classes'):
        seg.tiny(num_classes=1)


# --------------------------------------------------------------------------- ResNet-101
def test_deeplab_v2_parameter_count_dilations_and_forward(seg):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    model = seg.build_segmentor(seg.deeplab_v2(num_classes=16))
    tv = torchvision.models.resnet101(weights=None)
    resnet_params = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith('fc.'))
    assert resnet_params == 42_500_160
    expected = resnet_params + 4 * (2048 * 16 * 9 + 16)
    assert sum(p.numel() for p in model.parameters()) == expected == 43_679_872
    # Backbone tensors are named (and shaped) like torchvision's.
    own = {k: v.shape for k, v in model.backbone.state_dict().items()}
    assert own == {k: v.shape for k, v in tv.state_dict().items() if not k.startswith('fc.')}
    # Output stride 8 with torchvision's dilation layout (first block of a stage: half).
    bb = model.backbone
    assert bb.layer3[0].conv2.stride == (1, 1) and bb.layer4[0].conv2.stride == (1, 1)
    assert bb.layer3[0].conv2.dilation == (1, 1) and bb.layer3[1].conv2.dilation == (2, 2)
    assert bb.layer4[0].conv2.dilation == (2, 2) and bb.layer4[2].conv2.dilation == (4, 4)
    assert [c.dilation for c in model.decode_head.branches] == [(6, 6), (12, 12), (18, 18),
                                                                (24, 24)]
    model.eval()
    with torch.no_grad():
        out = seg.segment_logits(model, _randn(1, 3, 33, 33))
    assert out.shape == (1, 16, 33, 33) and torch.isfinite(out).all()


def test_deeplab_v3plus_builds_and_runs(seg):
    torch.manual_seed(0)
    model = seg.build_segmentor(seg.deeplab_v3plus(num_classes=16))
    assert type(model.backbone).__name__ == 'ResNet' and not hasattr(model.backbone, 'stem')
    head = model.decode_head
    assert type(head).__name__ == 'DepthwiseSeparableASPPHead'
    assert head.dilations == (1, 12, 24, 36) and head.c1_bottleneck.conv.in_channels == 256
    assert head.conv_seg.out_channels == 16
    model.eval()  # the image-pooling branch has BatchNorm on 1x1 maps: batch 1 needs eval
    with torch.no_grad():
        out = seg.segment_logits(model, _randn(1, 3, 33, 33))
    assert out.shape == (1, 16, 33, 33) and torch.isfinite(out).all()


def test_deeplab_v3plus_from_mmseg_config_is_mmsegs_model_in_the_paper_setting(seg):
    """configs/seg/ri_saal_synthia_v3plus_mmseg.py takes DeepLab-v3+ from mmseg's own
    config file through the `mmseg::` scope: mmseg's ResNetV1c (deep stem) at depth 101, and
    exactly the decode head our builder writes (frozen BN, CE over labeled pixels), no
    auxiliary head; it builds and runs (the run-config check of every shipped config is in
    tests/test_config_boundary.py)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / 'seg' / 'ri_saal_synthia_v3plus_mmseg.py'))
    model_cfg = cfg.task.model.to_dict()
    assert model_cfg['backbone']['type'] == 'ResNetV1c' and model_cfg['backbone']['depth'] == 101
    assert 'auxiliary_head' not in model_cfg and model_cfg['data_preprocessor'] is None
    ours = seg.deeplab_v3plus(num_classes=16, freeze_bn=True)['decode_head']
    normalise = lambda d: {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    assert normalise(model_cfg['decode_head']) == normalise(ours)
    # The ImageNet weights file the config names is checked when the task reads its model
    # option (before a run directory exists), and again before building, in one line.
    missing = (r'task\.model\.backbone\.init_cfg\.checkpoint: checkpoints/resnet101_v1c\.pth '
               r'not found.*task\.model\.backbone\.init_cfg=None')
    with pytest.raises(ConfigError, match=missing):
        seg.model_config(model_cfg, 16)
    with pytest.raises(ConfigError, match=missing):
        seg.build_segmentor(model_cfg)
    model_cfg['backbone']['init_cfg'] = None
    torch.manual_seed(0)
    model = seg.build_segmentor(seg.model_config(model_cfg, 16)).eval()
    assert type(model.backbone).__name__ == 'ResNetV1c' and hasattr(model.backbone, 'stem')
    assert not any(p.requires_grad for n, p in model.named_parameters() if 'bn' in n)
    with torch.no_grad():
        out = seg.segment_logits(model, _randn(1, 3, 33, 33))
    assert out.shape == (1, 16, 33, 33) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- backbone weights
def _resnet18_cfg(seg, weights) -> dict:
    cfg = seg.tiny(num_classes=4)
    cfg['backbone'].update(stem_channels=64, base_channels=64)
    cfg['decode_head']['in_channels'] = 512
    cfg['backbone_weights'] = str(weights)
    return cfg


def test_backbone_weights_load_torchvision_state_dict(seg, tmp_path):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    gen = torch.Generator().manual_seed(3)
    # Fresh BatchNorm statistics are 0/1 in both libraries: make them distinctive.
    for key in state:
        if key.endswith(('running_mean', 'running_var')):
            state[key] = torch.rand(state[key].shape, generator=gen) + 0.5
    path = tmp_path / 'resnet18.pth'
    torch.save(state, path)

    torch.manual_seed(1)
    model = seg.build_segmentor(_resnet18_cfg(seg, path))
    own = model.backbone.state_dict()
    for key in ('conv1.weight', 'bn1.running_var', 'layer2.0.downsample.0.weight',
                'layer4.1.bn2.running_mean'):
        torch.testing.assert_close(own[key], state[key], rtol=0, atol=0)
    assert set(own) == {k for k in state if not k.startswith('fc.')}
    assert all(torch.equal(own[k], state[k]) for k in own)
    # Wrapped state dicts with a DataParallel prefix load the same way.
    wrapped = tmp_path / 'wrapped.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in state.items()}}, wrapped)
    missing, unexpected = seg.load_backbone_weights(model.backbone, wrapped)
    assert missing == [] and unexpected == []


def test_backbone_weights_errors_name_the_path(seg, tmp_path):
    torchvision = pytest.importorskip('torchvision')
    missing_path = tmp_path / 'nowhere' / 'resnet101.pth'
    with pytest.raises(ConfigError, match=rf'backbone weights {missing_path} not found'):
        seg.build_segmentor(seg.deeplab_v2(backbone_weights=str(missing_path)))
    # ResNet-18 (64 channels) weights into the 16-channel tiny backbone: shapes differ.
    path = tmp_path / 'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    cfg = seg.tiny()
    cfg['backbone_weights'] = str(path)
    with pytest.raises(ConfigError, match='do not fit the ResNet backbone'):
        seg.build_segmentor(cfg)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ConfigError, match='weights_only=True'):
        seg.build_segmentor(_resnet18_cfg(seg, garbage))
    other = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.zeros(3)}, other)
    with pytest.raises(ConfigError, match='share no tensor name'):
        seg.build_segmentor(_resnet18_cfg(seg, other))


# --------------------------------------------------------------------------- losses
def _one_hot_map(labels: list[list[int]], num_classes: int) -> torch.Tensor:
    """Probabilities [1, C, H, W] that are one-hot at the given class per pixel."""
    return F.one_hot(torch.tensor(labels), num_classes).permute(2, 0, 1)[None].float()


def test_semantic_boundary_is_ripus_rule():
    # 8 y(i) - sum of the 8 neighbours (zero padding) != 0, on the raw values.
    labels = torch.tensor([[[2, 2, 2], [2, 2, 2], [2, 2, 2]]])
    expected = torch.ones(1, 3, 3, dtype=torch.bool)
    expected[0, 1, 1] = False  # the only pixel whose 8 neighbours are all in the image
    assert torch.equal(semantic_boundary(labels), expected)
    assert not semantic_boundary(torch.zeros(1, 4, 5, dtype=torch.long)).any()
    # An interior pixel beside a class change is a boundary; 255 counts as a value.
    labels = torch.zeros(1, 5, 5, dtype=torch.long)
    labels[0, 2, 3] = 255
    got = semantic_boundary(labels)[0]
    assert got[1:4, 2:5].all() and int(got.sum()) == 9


def test_local_consistency_known_answers():
    # A constant distribution everywhere agrees with its window mean.
    dist = torch.softmax(_randn(5), dim=0)
    constant = dist.view(1, 5, 1, 1).expand(2, 5, 4, 6).clone()
    assert float(local_consistency_loss(constant, torch.ones(2, 4, 6, dtype=torch.long))) \
        == pytest.approx(0.0, abs=1e-7)
    # 1 x 3, one-hot classes [0, 1, 1], labels [0, 1, 1] (every pixel on a boundary): the
    # replicate-padded window means are (2/3, 1/3), (1/3, 2/3), (0, 1), so the discrepancies
    # are 2/3, 2/3, 0 and their mean 4/9.
    probs = _one_hot_map([[0, 1, 1]], 2)
    labels = torch.tensor([[[0, 1, 1]]])
    assert float(local_consistency_loss(probs, labels)) == pytest.approx(4 / 9)
    # An ignore label removes its pixel from the mean (it still makes its neighbours
    # boundaries): pixel 1 is ignored -> (2/3 + 0) / 2.
    labels = torch.tensor([[[0, 255, 1]]])
    assert float(local_consistency_loss(probs, labels)) == pytest.approx(1 / 3)


def test_local_consistency_gradient_and_no_boundary():
    probs = torch.softmax(_randn(2, 4, 5, 7), dim=1).requires_grad_()
    labels = torch.randint(0, 4, (2, 5, 7), generator=torch.Generator().manual_seed(0))
    loss = local_consistency_loss(probs, labels)
    loss.backward()
    assert 0.0 < float(loss.detach()) <= 2.0 and float(probs.grad.abs().sum()) > 0
    flat = torch.softmax(_randn(1, 3, 4, 4), dim=1).requires_grad_()
    zero = local_consistency_loss(flat, torch.zeros(1, 4, 4, dtype=torch.long))
    zero.backward()  # RIPU's mean over no pixel is NaN; here an exact, connected zero
    assert float(zero.detach()) == 0.0 and torch.equal(flat.grad, torch.zeros_like(flat))
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        local_consistency_loss(torch.rand(3, 4, 5), labels)
    with pytest.raises(ValueError, match='labels must be integer maps'):
        local_consistency_loss(probs, labels.float())


def test_negative_learning_known_answers_and_mask():
    # 1x2 image, 3 classes: pixel 0 = (0.01, 0.04, 0.95), pixel 1 = (0.02, 0.50, 0.48).
    probs = torch.tensor([[0.01, 0.02], [0.04, 0.50], [0.95, 0.48]]).view(1, 3, 1, 2)
    probs.requires_grad_()
    loss = negative_learning_loss(probs, threshold=0.05)
    expected = -(math.log(0.99) + math.log(0.96) + math.log(0.98)) / 3
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    # d loss / d p = 1 / (3 (1 - p)) on the three selected entries, 0 elsewhere.
    loss.backward()
    grad = torch.zeros(3, 2)
    for (c, x), p in {(0, 0): 0.01, (1, 0): 0.04, (0, 1): 0.02}.items():
        grad[c, x] = 1 / (3 * (1 - p))
    torch.testing.assert_close(probs.grad.view(3, 2), grad, rtol=1e-4, atol=1e-6)
    # A higher threshold selects more classes: pixel 1's 0.48 and 0.50 join at 0.6.
    wide = -(math.log(0.99) + math.log(0.96) + math.log(0.98) + math.log(0.5)
             + math.log(0.52)) / 5
    assert float(negative_learning_loss(probs, threshold=0.6)) == pytest.approx(wide, abs=1e-5)
    # The mask keeps pixel 1 only.
    mask = torch.tensor([[[False, True]]])
    assert float(negative_learning_loss(probs, 0.05, mask)) == pytest.approx(
        -math.log(0.98), abs=1e-5)


def test_negative_learning_nothing_selected_and_errors():
    probs = torch.full((2, 4, 3, 3), 0.25, requires_grad=True)
    loss = negative_learning_loss(probs, threshold=0.05)
    loss.backward()
    assert float(loss) == 0.0 and torch.equal(probs.grad, torch.zeros_like(probs))
    masked_out = negative_learning_loss(torch.softmax(_randn(1, 4, 2, 2) * 10, dim=1), 0.05,
                                        torch.zeros(1, 2, 2, dtype=torch.bool))
    assert float(masked_out) == 0.0
    with pytest.raises(ValueError, match='mask'):
        negative_learning_loss(probs, 0.05, torch.ones(2, 3, 3))  # not bool
    with pytest.raises(ValueError, match='mask'):
        negative_learning_loss(probs, 0.05, torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='threshold'):
        negative_learning_loss(probs, threshold=0.0)
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        negative_learning_loss(probs[0])


def test_frozen_batch_norm_is_ripus():
    """``freeze_bn=True`` (RIPU's FREEZE_BN): the backbone's batch norms keep their statistics
    and affine through training mode, and the optimizer has no parameter of theirs."""
    from saal_tasks.tasks.segmentation import models as seg
    torch.manual_seed(0)
    model = seg.build_segmentor(seg.model_config(dict(arch='deeplab_v2', freeze_bn=True), 16))
    model.train()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(not p.requires_grad for m in norms for p in m.parameters())
    # Training leaves them as they are: tests/test_seg_runner_training.py.
    default = seg.build_segmentor(seg.model_config(dict(arch='deeplab_v2'), 16)).train()
    assert all(m.training for m in default.backbone.modules()
               if isinstance(m, torch.nn.BatchNorm2d))


def test_builder_options_are_checked():
    """An option the architecture's builder does not take is one ConfigError naming it and
    the options there are (not a TypeError from the builder)."""
    from saal_tasks.core.errors import ConfigError
    from saal_tasks.tasks.segmentation import models as seg
    with pytest.raises(ConfigError, match=r"task\.model\.freeze_bn is not an option of "
                                          r"arch='tiny': it takes no options"):
        seg.model_config(dict(arch='tiny', freeze_bn=True), 16)
    with pytest.raises(ConfigError, match=r'task\.model\.weights is not an option of '
                                          r"arch='deeplab_v2': it takes backbone_weights, "
                                          'freeze_bn'):
        seg.model_config(dict(arch='deeplab_v2', weights='x.pth'), 16)
