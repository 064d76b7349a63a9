"""FastExactEngine: float64 parity with ReferenceEngine, untouched weights, layer-level pieces."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import nn
from torchvision.models.resnet import BasicBlock

from saal_tasks.scorers import SharpnessScorer
from saal_tasks.scorers.fast_engine import FastExactEngine, plan_layers
from saal_tasks.scorers.layer_factors import (Conv2dLayer, LinearLayer, _GroupedConvOps,
                                              _PerSampleConvOps, _RowOps)

from conftest import TinyBNNet, bit_identical, snapshot

IDS = np.arange(300, 324)
SAM = dict(type='SAMPerturbation', rho=0.05)
ASAM = dict(type='ASAMPerturbation', rho=0.05)
SAM_Q3 = dict(type='SAMPerturbation', rho=0.5, q=3)


def _scores(task, model, engine, pert, mode='max', ids=IDS):
    scorer = SharpnessScorer(perturbation=pert, engine=engine, mode=mode)
    return scorer.score(task, model, ids, np.random.default_rng(0))


def _engine_after(task, model, engine_cfg, pert):
    """The engine object of a scorer after one scoring run (to read what it recorded)."""
    scorer = SharpnessScorer(perturbation=pert, engine=engine_cfg)
    scorer.score(task, model, IDS, np.random.default_rng(0))
    return scorer.engine


def _assert_parity(task, model, engine, pert, mode='max'):
    ref = _scores(task, model, dict(type='ReferenceEngine'), pert, mode)
    fast = _scores(task, model, engine, pert, mode)
    assert np.array_equal(fast.sample_ids, ref.sample_ids)
    assert ref.scores.std() > 0  # non-trivial scores: the comparison can fail
    # Relative to each score (floored where `diff` scores are tiny), as the issue asks.
    scale = np.maximum(np.abs(ref.scores), 1e-3)
    assert np.max(np.abs(fast.scores - ref.scores) / scale) <= 1e-6
    np.testing.assert_allclose(fast.extras['clean_loss'], ref.extras['clean_loss'], rtol=1e-12)


class TinyResNet(nn.Module):
    """Stem + one torchvision BasicBlock (stride 2, 1x1 downsample, in-place ReLUs, `+=`)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block = BasicBlock(4, 8, stride=2, downsample=nn.Sequential(
            nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8)))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        return self.head(self.block(x).mean(dim=(2, 3)))


class TokenNet(nn.Module):
    """A dilated 'same' conv, then one Linear applied twice to 16 tokens (multi-call)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding='same', dilation=2)
        self.proj = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        tokens = F.avg_pool2d(self.conv(x), 2).flatten(2).transpose(1, 2)  # [B, 16, 6]
        tokens = self.proj(torch.tanh(self.proj(tokens)))
        return self.head(tokens.mean(dim=1))


class RGBStemNet(nn.Module):
    """An image stem as detectors have it: 3 input channels, 64x64 positions (the digits
    upsampled and repeated), so its dense route is one plain convolution per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        x = F.interpolate(x, size=(64, 64)).repeat(1, 3, 1, 1)
        return self.head(torch.relu(self.stem(x)).mean(dim=(2, 3)))


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Float64 copy with random weights and non-trivial batch-norm statistics, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


# --------------------------------------------------------------------------- parity
@pytest.mark.parametrize('mode', ['max', 'diff'])
@pytest.mark.parametrize('pert,method', [(SAM, 'auto'), (SAM, 'low_rank'), (SAM, 'dense'),
                                         (ASAM, 'auto'), (SAM_Q3, 'auto')])
def test_small_cnn_matches_reference(digits_task, trained_cnn, pert, method, mode):
    _assert_parity(digits_task, trained_cnn,
                   dict(type='FastExactEngine', chunk_size=7, layer_method=method), pert, mode)


@pytest.mark.parametrize('pert,method', [(SAM, 'low_rank'), (SAM, 'dense'), (ASAM, 'auto')])
def test_batchnorm_net_matches_reference(digits_task, pert, method):
    model = _randomised(TinyBNNet())
    model.train()  # the scorer switches to eval mode for scoring and restores this mode
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=10, layer_method=method), pert)
    assert model.training


@pytest.mark.parametrize('pert,method', [(SAM, 'auto'), (SAM, 'low_rank'), (SAM, 'dense'),
                                         (ASAM, 'auto'), (SAM_Q3, 'auto')])
def test_tiny_resnet_matches_reference(digits_task, pert, method):
    model = _randomised(TinyResNet())
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=9, layer_method=method), pert)


@pytest.mark.parametrize('pert', [SAM, ASAM, SAM_Q3])
def test_rgb_stem_per_sample_convolutions_match_reference(digits_task, pert):
    model = _randomised(RGBStemNet())
    layer = Conv2dLayer(model.stem, 'stem')
    assert isinstance(layer.dense_ops(torch.zeros(2, 3, 64, 64)), _PerSampleConvOps)
    assert type(layer.dense_ops(torch.zeros(2, 3, 32, 32))) is _GroupedConvOps
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=5, layer_method='dense'), pert)


@pytest.mark.parametrize('pert,method', [(SAM, 'low_rank'), (SAM, 'dense'), (ASAM, 'auto')])
def test_tokens_multi_call_and_frozen_weight_match_reference(digits_task, pert, method):
    model = _randomised(TokenNet())
    model.conv.weight.requires_grad_(False)  # only its bias is perturbed
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=8, layer_method=method), pert)


def test_auto_routes_follow_the_cost_model(digits_task):
    model = _randomised(TinyResNet())
    engine = _engine_after(digits_task, model, dict(type='FastExactEngine', chunk_size=8), SAM)
    # 8x8 digits, cost model in multiply-adds per sample: low rank 2·(2·pixels²·C + 2·T²·p)
    # against dense (T + 96)·d·p. Dense: the stem (81920 vs 5760), the strided conv1 (73728
    # vs 32256), the 1x1 downsample (12288 vs 3584). Low rank: conv2 (16384 vs 64512) and the
    # head (72 vs 7760). The four batch norms have their own rule.
    assert engine.last_routes == {'low_rank': 2, 'dense': 3, 'batch_norm': 4,
                                  'channel_scale': 0}
    engine = _engine_after(digits_task, model, dict(type='FastExactEngine', chunk_size=8), ASAM)
    # ASAM has no low-rank form.
    assert engine.last_routes == {'low_rank': 0, 'dense': 5, 'batch_norm': 4,
                                  'channel_scale': 0}


# --------------------------------------------------------------------------- invariants
@pytest.mark.parametrize('pert', [SAM, ASAM])
def test_parameters_and_grads_untouched(digits_task, pert):
    model = _randomised(TinyResNet())
    model.head.weight.grad = torch.ones_like(model.head.weight)
    before = snapshot(model)
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    _scores(digits_task, model, dict(type='FastExactEngine', chunk_size=5), pert)
    assert bit_identical(model, before)
    for g, p in zip(grads, model.parameters()):
        assert (g is None and p.grad is None) or torch.equal(g, p.grad)
    assert 'forward' not in model.__dict__ and 'forward' not in model.head.__dict__


def test_scores_do_not_depend_on_chunking(digits_task, trained_cnn):
    a = _scores(digits_task, trained_cnn, dict(type='FastExactEngine', chunk_size=3), SAM)
    b = _scores(digits_task, trained_cnn, dict(type='FastExactEngine', chunk_size=24), SAM)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)


def test_dense_memory_budget_does_not_change_scores(digits_task):
    model = _randomised(TinyResNet())
    kept = _scores(digits_task, model, dict(type='FastExactEngine', chunk_size=8), ASAM)
    formed_twice = _scores(digits_task, model,
                           dict(type='FastExactEngine', chunk_size=8, max_kept_mb=0), ASAM)
    np.testing.assert_allclose(formed_twice.scores, kept.scores, rtol=1e-12)


def test_pseudo_label_pass_is_reused(digits_task, trained_cnn):
    calls = []
    handle = trained_cnn.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        _scores(digits_task, trained_cnn, dict(type='FastExactEngine', chunk_size=12), SAM)
    finally:
        handle.remove()
    # Two chunks, each one clean pass (pseudo-labels and loss) and one perturbed pass; a
    # plain implementation would run three.
    assert len(calls) == 4


def test_task_calling_the_model_differently_is_still_exact(digits_task, trained_cnn):
    class CopyingTask(type(digits_task)):
        def loss_per_unit(self, model, inputs, targets):
            return super().loss_per_unit(model, inputs.clone(), targets)  # no memo hit

    task = CopyingTask.__new__(CopyingTask)
    task.__dict__.update(digits_task.__dict__)
    _assert_parity(task, trained_cnn, dict(type='FastExactEngine', chunk_size=10), SAM)


def test_task_sharing_its_own_pseudo_label_pass_is_exact(digits_task, trained_cnn):
    class SharingTask(type(digits_task)):
        """Like the detection adapter: pseudo-labels from a grad-enabled pass that the loss
        reuses, through submodules (the model's top-level forward is never called)."""

        def pseudo_label(self, model, inputs):
            with torch.enable_grad():
                logits = model.head(model.forward_features(inputs))
            labels = logits.detach().argmax(dim=1)
            self.shared = (inputs, logits)
            return labels

        def loss_per_unit(self, model, inputs, targets):
            shared, self.shared = getattr(self, 'shared', None), None
            if shared is not None and shared[0] is inputs and torch.is_grad_enabled():
                return F.cross_entropy(shared[1], targets, reduction='none')
            return F.cross_entropy(model.head(model.forward_features(inputs)), targets,
                                   reduction='none')

    task = SharingTask.__new__(SharingTask)
    task.__dict__.update(digits_task.__dict__)
    _assert_parity(task, trained_cnn, dict(type='FastExactEngine', chunk_size=10), SAM)


class L2NormNet(nn.Module):
    """Conv -> mmdet's L2Norm (SSD's VGG16 neck, weight init 20) -> conv -> head."""

    def __init__(self) -> None:
        super().__init__()
        from mmdet.models.necks.ssd_neck import L2Norm
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.norm = L2Norm(6, scale=20.0)
        self.conv2 = nn.Conv2d(6, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 16, 10)

    def forward(self, x):
        x = self.norm(torch.relu(self.conv(x)))
        return self.head(torch.relu(self.conv2(x)).flatten(1))


@pytest.mark.parametrize('pert,method', [(SAM, 'low_rank'), (SAM, 'dense'), (ASAM, 'auto')])
def test_l2norm_net_matches_reference(digits_task, pert, method):
    """mmdet's L2Norm has a per-sample rule (Σ δ·x̂ for its channel weights): SSD300 scores
    in chunks. L2Norm computes in float32 whatever the model's dtype, so the two engines
    agree to float32 rounding there, not to float64's."""
    pytest.importorskip('mmdet')
    model = _randomised(L2NormNet())
    with torch.no_grad():  # its own generator: the test must not depend on earlier tests
        model.norm.weight.uniform_(10.0, 30.0, generator=torch.Generator().manual_seed(1))
    engine = _engine_after(digits_task, model, dict(type='FastExactEngine', chunk_size=8,
                                                    layer_method=method), pert)
    assert engine.fallback_reason is None and engine.last_routes['channel_scale'] == 1
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=8, layer_method=method), pert)


class GroupNormScaleNet(nn.Module):
    """FCOS's head in miniature: conv -> GroupNorm -> ReLU, twice, then a conv whose output
    goes through mmcv's Scale (a learnable scalar), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        from mmcv.cnn import Scale
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 4, 3, stride=2, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(4, 4)
        self.scale = Scale(1.5)
        self.head = nn.Linear(4 * 16, 10)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        x = self.scale(torch.relu(self.norm2(self.conv2(x))))
        return self.head(x.flatten(1))


@pytest.mark.parametrize('pert,method', [(SAM, 'low_rank'), (SAM, 'dense'), (ASAM, 'auto'),
                                         (SAM_Q3, 'auto')])
def test_group_norm_and_scale_match_reference(digits_task, pert, method):
    """nn.GroupNorm (statistics within each sample) and mmcv's Scale have per-sample rules,
    so FCOS and ATSS heads score in chunks: float64 parity with the reference."""
    pytest.importorskip('mmcv')
    model = _randomised(GroupNormScaleNet())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5, generator=gen)
        model.norm2.bias.uniform_(-0.5, 0.5, generator=gen)
    engine = _engine_after(digits_task, model, dict(type='FastExactEngine', chunk_size=8,
                                                    layer_method=method), pert)
    assert engine.fallback_reason is None and engine.last_routes['channel_scale'] == 3
    _assert_parity(digits_task, model,
                   dict(type='FastExactEngine', chunk_size=8, layer_method=method), pert)


def test_group_norm_without_affine_weights_needs_no_rule():
    """A GroupNorm without weights perturbs nothing: it is not a layer of the plan."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4, affine=False),
                          nn.Flatten(), nn.Linear(4 * 36, 3))
    layers, problems = plan_layers(model)
    assert problems == [] and [type(layer).__name__ for layer in layers] == [
        'Conv2dLayer', 'LinearLayer']


# --------------------------------------------------------------------------- fallback
class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.LayerNorm([4, 8, 8])
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_unknown_layer_falls_back_to_an_exact_engine(digits_task):
    model = _randomised(NormNet())
    ref = _scores(digits_task, model, dict(type='ReferenceEngine'), SAM)
    logger, lines = MMLogger.get_current_instance(), _Lines()
    logger.addHandler(lines)
    try:
        engine = _engine_after(digits_task, model, dict(type='FastExactEngine', chunk_size=8),
                               SAM)
        fast = _scores(digits_task, model, dict(type='FastExactEngine', chunk_size=8), SAM)
    finally:
        logger.removeHandler(lines)
    np.testing.assert_array_equal(fast.scores, ref.scores)  # the reference did the work
    assert 'norm (LayerNorm)' in engine.fallback_reason
    said = [line for line in lines.lines if line.startswith('FastExactEngine:')]
    assert len(said) == 2 and 'scoring with ReferenceEngine instead' in said[0]  # once a run


def test_plan_names_every_obstacle():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.LayerNorm(4), nn.Linear(4, 4))
    model.append(nn.Linear(4, 4))
    model[3].weight = model[2].weight  # tied weights
    layers, problems = plan_layers(model)
    assert [type(layer).__name__ for layer in layers] == ['LinearLayer', 'LinearLayer']
    text = ' | '.join(problems)
    assert 'groups=2' in text and '(LayerNorm)' in text and 'shared with 2.weight' in text


def test_invalid_options():
    with pytest.raises(ValueError, match='chunk_size'):
        FastExactEngine(chunk_size=0)
    with pytest.raises(ValueError, match='layer_method must be one of'):
        FastExactEngine(layer_method='fast')
    with pytest.raises(ValueError, match='max_kept_mb'):
        FastExactEngine(max_kept_mb=-1)


def test_low_rank_route_refuses_asam(digits_task, trained_cnn):
    with pytest.raises(ValueError, match="needs SAMPerturbation with q=2"):
        _scores(digits_task, trained_cnn, dict(type='FastExactEngine', layer_method='low_rank'),
                ASAM)


# --------------------------------------------------------------------------- layer pieces
CONVS = [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=3, dilation=2, padding=2), dict(kernel_size=1, stride=2),
         dict(kernel_size=(2, 3), stride=(1, 2), padding=(0, 1))]


def _per_sample_conv_grad(conv: nn.Conv2d, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``G_b`` by autograd, one sample at a time: ``[B, p, C·kh·kw]``."""
    out = []
    for xb, db in zip(x, d):
        w = conv.weight.detach().clone().requires_grad_()
        y = F.conv2d(xb[None], w, None, conv.stride, conv.padding, conv.dilation)
        (g,) = torch.autograd.grad(y, w, db[None])
        out.append(g.reshape(g.shape[0], -1))
    return torch.stack(out)


@pytest.mark.parametrize('kwargs', CONVS)
def test_conv_gram_equals_unfolded_patch_products(kwargs):
    gen = torch.Generator().manual_seed(1)
    conv = nn.Conv2d(3, 5, **kwargs).double()
    layer = Conv2dLayer(conv, 'conv')
    xa = torch.randn(2, 3, 9, 8, generator=gen, dtype=torch.float64)
    xb = torch.randn(2, 3, 7, 10, generator=gen, dtype=torch.float64)
    unfold = dict(kernel_size=conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                  stride=conv.stride)
    expected = torch.bmm(F.unfold(xa, **unfold).transpose(1, 2), F.unfold(xb, **unfold))
    torch.testing.assert_close(layer.gram(xa, xb), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kwargs', CONVS)
@pytest.mark.parametrize('ops_cls', [_RowOps, _GroupedConvOps, _PerSampleConvOps])
def test_conv_dense_ops_match_autograd_and_conv2d(kwargs, ops_cls):
    gen = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(3, 5, **kwargs).double()
    layer = Conv2dLayer(conv, 'conv')
    ops = ops_cls(layer)
    x = torch.randn(3, 3, 9, 8, generator=gen, dtype=torch.float64)
    d = torch.randn(3, 5, *layer.out_size(x), generator=gen, dtype=torch.float64)
    g = ops.weight_grad(x, layer.delta_matrix(d))
    expected = _per_sample_conv_grad(conv, x, d)
    # The two layouts order the d entries differently; norms and the forward below do not care.
    torch.testing.assert_close((g * g).sum(dim=2), (expected * expected).sum(dim=2),
                               rtol=1e-12, atol=1e-12)
    weights = ops.weight_matrix() + g  # a per-sample weight in the ops' own layout
    bias = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    out = ops.forward(x, weights, bias)
    for b in range(3):
        w_b = conv.weight + expected[b].reshape(conv.weight.shape)
        ref = F.conv2d(x[b:b + 1], w_b, bias[b], conv.stride, conv.padding, conv.dilation)
        torch.testing.assert_close(out[b:b + 1], ref, rtol=1e-12, atol=1e-12)


def test_conv_row_weight_is_made_once_per_weight_state():
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    layer = Conv2dLayer(conv, 'conv')
    first = layer.row_weight()
    # Entry order (kh, kw, C), the order of the patch rows.
    torch.testing.assert_close(first, conv.weight.permute(0, 2, 3, 1).reshape(6, -1),
                               rtol=0, atol=0)
    assert layer.row_weight() is first
    assert not first.requires_grad
    with torch.no_grad():
        conv.weight.mul_(2.0)  # in place: the version changes, the storage does not
    again = layer.row_weight()
    assert again is not first
    torch.testing.assert_close(again, 2.0 * first, rtol=0, atol=0)


def test_linear_gram_and_rows_on_tokens():
    gen = torch.Generator().manual_seed(3)
    layer = LinearLayer(nn.Linear(4, 3).double(), 'proj')
    x = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(layer.gram(x, x), x @ x.transpose(1, 2))
    d = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    g = _RowOps(layer).weight_grad(x, layer.delta_matrix(d))
    torch.testing.assert_close(g, d.transpose(1, 2) @ x)
