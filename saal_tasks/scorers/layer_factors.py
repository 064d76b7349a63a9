"""Per-sample gradients of single layers from their factors, and forwards under per-sample ε.

For a layer that maps patches to outputs linearly (``nn.Linear``, ``nn.Conv2d``), the gradient
of sample ``b``'s loss with respect to the weight matrix ``W [p, d]`` is a sum of outer products
over the layer's ``T`` positions (tokens, or output pixels of a convolution)::

    G_b = D_b · U_bᵀ      D_b = ∂loss_b/∂output  [p, T],   U_b = input patches  [d, T]

so everything a per-sample perturbation needs comes from the layer's input (recorded in the
forward pass) and ``D`` (one ordinary backward pass for the whole batch). Two exact routes:

* **low rank** (SAM with ``q = 2`` only, where ``ε_b = s_b · G_b``): ``‖G_b‖² = Σ (UᵀU ⊙ DᵀD)``
  and ``(W + s_b G_b) · u' = W·u' + s_b · D_b (Uᵀ u')``, so neither ``G_b`` nor a per-sample
  weight is ever formed. For a convolution, the patch inner products ``UᵀU'`` are sums of
  ``kh·kw`` shifted blocks of the pixel Gram matrix ``XᵀX'`` (no im2col). Cheap where ``T`` is
  small: deep convolution layers, linear heads.
* **dense**: form ``G_b``, apply any entry-wise ``ε_b = s_b · φ(G_b, W)`` (ASAM, SAM with any
  ``q``) and run the layer with the per-sample weights ``W + ε_b`` in one batched call: a
  grouped convolution (one group per sample) where positions outnumber patch entries, a
  batched matrix product on patch rows elsewhere (:class:`DenseOps`).

``nn.BatchNorm*`` in eval mode is an affine map per channel of the normalised input ``x̂``
(fixed running statistics), so its per-sample gradients are ``Σ δ·x̂`` and ``Σ δ`` per channel;
so are ``nn.GroupNorm``'s (``x̂`` from the sample's own group statistics) and mmdet's
``L2Norm``'s (no bias). mmcv's ``Scale`` (``y = s·x``) has the per-sample gradient ``Σ δ·x``.

Only per-layer objects live here; the engine (:mod:`.fast_engine`) records the inputs, runs
the backward pass and picks the routes with :meth:`PatchLayer.low_rank_cost` and
:meth:`PatchLayer.dense_cost`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .perturbation_rules import PerturbationRule

#: A perturbed replacement of a module's forward for the current chunk of samples.
PerturbedForward = Callable[[Tensor], Tensor]


class UnsupportedLayer(Exception):
    """A module (or the way it is called) that the per-layer rules cannot handle exactly."""


def _own_trainable(module: nn.Module, name: str) -> nn.Parameter | None:
    p = module._parameters.get(name)
    return p if p is not None and p.requires_grad else None


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------- dense operations
class DenseOps:
    """Per-sample weight gradients and per-sample-weight forwards of one layer, in one layout.

    ``weight_matrix``, ``weight_grad`` and ``forward`` agree on the order of the ``d`` patch
    entries, which differs between implementations; entry-wise rules and norms do not care.

    Attributes:
        uses_buffer: ``weight_grad`` writes into the ``out`` buffer it is given.
    """

    uses_buffer = False

    def weight_matrix(self) -> Tensor:
        """``W`` as ``[p, d]`` in this layout."""
        raise NotImplementedError

    def weight_grad(self, x: Tensor, d_mat: Tensor, out: Tensor | None = None) -> Tensor:
        """Per-sample ``G = D Uᵀ``, ``[B, p, d]``.

        Args:
            x: The layer's input.
            d_mat: Output gradients ``D [B, p, T]``.
            out: A ``[B, p, d]`` buffer to write into where the implementation can.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, weights: Tensor, bias: Tensor | None) -> Tensor:
        """The layer's output with per-sample weights ``[B, p, d]`` and biases ``[B, p]``."""
        raise NotImplementedError


class _RowOps(DenseOps):
    """Batched matrix products on patch rows ``[B, T, d]`` (linear layers, deep convolutions)."""

    uses_buffer = True

    def __init__(self, layer: 'PatchLayer') -> None:
        self.layer = layer

    def weight_matrix(self):
        return self.layer.row_weight()

    def weight_grad(self, x, d_mat, out=None):
        return torch.bmm(d_mat, self.layer.rows(x), out=out)

    def forward(self, x, weights, bias):
        rows = self.layer.rows(x).transpose(1, 2)
        flat = (torch.bmm(weights, rows) if bias is None
                else torch.baddbmm(bias.unsqueeze(2), weights, rows))
        return self.layer.fold(flat, x)


class _GroupedConvOps(DenseOps):
    """One convolution group per sample (early convolution layers with many positions)."""

    def __init__(self, layer: 'Conv2dLayer') -> None:
        self.layer = layer

    def weight_matrix(self):
        return self.layer.module.weight.reshape(self.layer.out_features, -1)

    def weight_grad(self, x, d_mat, out=None):
        layer = self.layer
        b, c = x.shape[:2]
        out_hw = layer.out_size(x)
        g = torch.nn.grad.conv2d_weight(
            x.reshape(1, b * c, *x.shape[2:]), (b * layer.out_features, c, *layer.kernel),
            d_mat.reshape(1, b * layer.out_features, *out_hw), layer.stride, layer.padding,
            layer.dilation, groups=b)
        return g.reshape(b, layer.out_features, -1)

    def forward(self, x, weights, bias):
        layer = self.layer
        b, c = x.shape[:2]
        out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]),
                       weights.reshape(b * layer.out_features, c, *layer.kernel),
                       None if bias is None else bias.reshape(-1), layer.stride,
                       layer.padding, layer.dilation, groups=b)
        return out.reshape(b, layer.out_features, *out.shape[2:])


class _PerSampleConvOps(_GroupedConvOps):
    """One ordinary convolution per sample (image stems: an RGB input, many positions); the
    grouped route's layout, so the same weight matrix.

    oneDNN's grouped convolution vectorises over each group's input channels; with the three of
    an image it ran 1.3-2.7x slower than one batch-1 convolution per sample, in the forward and
    in the weight gradient alike (CPU, 1 thread, 2026-12-07: stems of 3 -> 16 and 3 -> 64
    channels, 3x3 and 7x7 kernels, 128-512 px, chunks of 8 and 32). Deeper layers, with more
    channels per group, keep the grouped convolution.
    """

    uses_buffer = True

    def weight_grad(self, x, d_mat, out=None):
        layer = self.layer
        b = x.shape[0]
        if out is None:
            out = d_mat.new_empty(b, layer.out_features, layer.in_features)
        deltas = d_mat.reshape(b, layer.out_features, *layer.out_size(x))
        for i in range(b):
            g = torch.nn.grad.conv2d_weight(x[i:i + 1], layer.module.weight.shape,
                                            deltas[i:i + 1], layer.stride,
                                            layer.padding, layer.dilation)
            out[i].copy_(g.reshape(layer.out_features, -1))
        return out

    def forward(self, x, weights, bias):
        layer = self.layer
        shape = layer.module.weight.shape
        return torch.cat([
            F.conv2d(x[i:i + 1], weights[i].reshape(shape),
                     None if bias is None else bias[i], layer.stride, layer.padding,
                     layer.dilation)
            for i in range(x.shape[0])])


# --------------------------------------------------------------------------- layer adapters
class PatchLayer:
    """A ``Linear`` or ``Conv2d`` seen as ``output = W · patches + bias``.

    Args:
        module: The layer.
        name: Its qualified name in the model (for messages).
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self.weight = _own_trainable(module, 'weight')
        self.bias = _own_trainable(module, 'bias')
        self.out_features = int(module.weight.shape[0])
        self.in_features = int(module.weight[0].numel())

    def params(self) -> list[nn.Parameter]:
        """Trainable parameters this layer perturbs."""
        return [p for p in (self.weight, self.bias) if p is not None]

    def positions(self, x: Tensor) -> int:
        """``T``: output positions per sample for input ``x``."""
        raise NotImplementedError

    def delta_matrix(self, delta: Tensor) -> Tensor:
        """Output gradient ``[B, *out]`` as ``D [B, p, T]``."""
        raise NotImplementedError

    def fold(self, flat: Tensor, x: Tensor) -> Tensor:
        """Outputs ``[B, p, T]`` for input ``x`` back into the module's output layout."""
        raise NotImplementedError

    def bias_view(self, bias: Tensor, out: Tensor) -> Tensor:
        """Per-sample biases ``[B, p]`` shaped to broadcast against an output ``out``."""
        raise NotImplementedError

    def rows(self, x: Tensor) -> Tensor:
        """Patch rows ``[B, T, d]`` in the order of :meth:`row_weight`."""
        raise NotImplementedError

    def row_weight(self) -> Tensor:
        """``W [p, d]`` in the entry order of :meth:`rows`."""
        raise NotImplementedError

    def gram(self, xa: Tensor, xb: Tensor) -> Tensor:
        """Patch inner products ``U_aᵀ U_b`` per sample, ``[B, T_a, T_b]``."""
        raise NotImplementedError

    def dense_ops(self, x: Tensor) -> DenseOps:
        """The faster dense implementation for inputs shaped like ``x``."""
        return _RowOps(self)

    def low_rank_cost(self, x: Tensor) -> int:
        """Multiply-adds per sample of the low-rank route for one call on ``x``."""
        raise NotImplementedError

    def dense_cost(self, x: Tensor) -> int:
        """Multiply-adds per sample of the dense route beyond the layer's own product.

        Forming ``G`` costs ``T·d·p``; the per-sample weights then take several memory-bound
        passes over ``d·p`` numbers (norm, perturbation, product), measured on CPU at about 96
        multiply-adds' time per number in all.
        """
        return (self.positions(x) + 96) * self.in_features * self.out_features


class LinearLayer(PatchLayer):
    """``nn.Linear`` on ``[B, *, d]`` inputs; the middle dimensions are the positions ``T``."""

    def positions(self, x):
        return x[0].numel() // self.in_features

    def delta_matrix(self, delta):
        return delta.reshape(delta.shape[0], -1, self.out_features).transpose(1, 2)

    def fold(self, flat, x):
        return flat.transpose(1, 2).reshape(*x.shape[:-1], self.out_features)

    def bias_view(self, bias, out):
        return bias.reshape(bias.shape[0], *([1] * (out.dim() - 2)), self.out_features)

    def rows(self, x):
        return x.reshape(x.shape[0], -1, self.in_features)

    def row_weight(self):
        return self.module.weight

    def gram(self, xa, xb):
        return torch.bmm(self.rows(xa), self.rows(xb).transpose(1, 2))

    def low_rank_cost(self, x):
        t = self.positions(x)
        return 2 * 2 * t * t * (self.in_features + self.out_features)


class Conv2dLayer(PatchLayer):
    """``nn.Conv2d`` with ``groups = 1`` and zero padding."""

    def __init__(self, module: nn.Conv2d, name: str) -> None:
        super().__init__(module, name)
        self.kernel = _pair(module.kernel_size)
        self.stride = _pair(module.stride)
        self.dilation = _pair(module.dilation)
        padding = module.padding
        if padding == 'valid':
            padding = (0, 0)
        elif padding == 'same':
            total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel)]
            if any(t % 2 for t in total):
                raise UnsupportedLayer(f"{name}: padding='same' with an even kernel pads "
                                       f'asymmetrically')
            padding = tuple(t // 2 for t in total)
        self.padding = _pair(padding)
        self.pointwise = self.kernel == (1, 1) and self.padding == (0, 0)
        self._row_weight: tuple[tuple, Tensor] | None = None

    def out_size(self, x: Tensor) -> tuple[int, int]:
        """Output height and width for input ``x``."""
        h, w = (
            (size + 2 * pad - dil * (k - 1) - 1) // st + 1
            for size, pad, dil, k, st in zip(x.shape[-2:], self.padding, self.dilation,
                                             self.kernel, self.stride))
        return h, w

    def positions(self, x):
        h, w = self.out_size(x)
        return h * w

    def delta_matrix(self, delta):
        return delta.reshape(delta.shape[0], self.out_features, -1)

    def fold(self, flat, x):
        return flat.reshape(flat.shape[0], self.out_features, *self.out_size(x))

    def bias_view(self, bias, out):
        return bias.reshape(*bias.shape, 1, 1)

    def rows(self, x):
        # Channels-last patches, entry order (kh, kw, C): the copy moves whole channel vectors,
        # which is far faster on CPU than F.unfold's (C, kh, kw) order.
        b, c, h, w = x.shape
        (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
        padded = x.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
        padded[:, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 1)
        oh, ow = self.out_size(x)
        s = padded.stride()
        view = padded.as_strided((b, oh, ow, *self.kernel, c),
                                 (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]))
        return view.reshape(b, oh * ow, -1)

    def row_weight(self):
        # Every dense chunk asks for this matrix twice (norm terms, perturbed forward), and the
        # permuted copy of a 512-channel kernel costs several ms: made once per weight state
        # (the weights do not change while a pool is scored; the version catches it if they
        # do). Through channels_last, whose copy kernel is about 4x faster on CPU than a
        # permute followed by reshape; same values.
        weight = self.module.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._row_weight is None or self._row_weight[0] != key:
            with torch.no_grad():
                rows = weight.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
                self._row_weight = (key, rows.reshape(self.out_features, -1))
        return self._row_weight[1]

    def dense_ops(self, x):
        # Measured on CPU (ResNet-18 shapes): per-sample grouped convolutions win where the
        # positions are many compared with the patch entries (the first two stages); batched
        # matrix products on patch rows win in the deep layers; an image stem with many
        # positions runs fastest as one plain convolution per sample (_PerSampleConvOps; at
        # 32x32 the grouped one was faster in all).
        if self.module.in_channels < 4 and self.positions(x) >= 4096:
            return _PerSampleConvOps(self)
        if 8 * self.positions(x) >= self.in_features:
            return _GroupedConvOps(self)
        return _RowOps(self)

    def _subsampled(self, x: Tensor) -> Tensor:
        """A pointwise convolution's patches are its input pixels at the stride: ``[B, C, T]``."""
        sh, sw = self.stride
        return x[:, :, ::sh, ::sw].reshape(x.shape[0], x.shape[1], -1)

    def gram(self, xa, xb):
        if self.pointwise:
            return torch.bmm(self._subsampled(xa).transpose(1, 2), self._subsampled(xb))
        b = xa.shape[0]
        (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
        # Pixel Gram XᵀX' [B, Ha, Wa, Hb, Wb], zero-padded like the inputs: a patch inner
        # product is the sum over kernel offsets of pixel inner products at shifted positions.
        pixels = torch.bmm(xa.flatten(2).transpose(1, 2), xb.flatten(2))
        pixels = F.pad(pixels.view(b, *xa.shape[2:], *xb.shape[2:]), (pw, pw, ph, ph) * 2)
        (oha, owa), (ohb, owb) = self.out_size(xa), self.out_size(xb)
        kh, kw = self.kernel
        # Kernel columns first, then kernel rows: each a strided view whose last axis moves
        # both positions by the same offset, summed in one reduction. (A single reduction over
        # both kernel axes is an order of magnitude slower on CPU.)
        st = pixels.stride()
        cols = pixels.as_strided(
            (b, pixels.shape[1], owa, pixels.shape[3], owb, kw),
            (st[0], st[1], st[2] * sw, st[3], st[4] * sw, (st[2] + st[4]) * dw)).sum(dim=5)
        st = cols.stride()
        rows = cols.as_strided(
            (b, oha, owa, ohb, owb, kh),
            (st[0], st[1] * sh, st[2], st[3] * sh, st[4], (st[1] + st[3]) * dh)).sum(dim=5)
        return rows.reshape(b, oha * owa, ohb * owb)

    def low_rank_cost(self, x):
        t = self.positions(x)
        pixels = t if self.pointwise else x.shape[2] * x.shape[3]
        c = x.shape[1]
        # Two pixel Grams (norm, perturbed pass), two [T, T] products with D; small batched
        # products run at about half the rate of a convolution on CPU.
        return 2 * (2 * pixels * pixels * c + 2 * t * t * self.out_features)


class _ChannelWise:
    """A layer whose parameters act per channel (or as one scalar): its trainable weight and
    bias (``None`` when frozen or absent) and the module's own values, which a frozen
    parameter keeps in the perturbed forward.

    Args:
        module: The module.
        name: Its qualified name (for messages).
        weight_name: Attribute of the weight (``'scale'`` for mmcv's ``Scale``).
        bias_name: Attribute of the bias, ``None`` for layers without one.
    """

    def __init__(self, module: nn.Module, name: str, weight_name: str = 'weight',
                 bias_name: str | None = 'bias') -> None:
        self.module = module
        self.name = name
        self.weight = _own_trainable(module, weight_name)
        self.bias = None if bias_name is None else _own_trainable(module, bias_name)
        self.module_weight: Tensor = getattr(module, weight_name)
        self.module_bias: Tensor | None = None if bias_name is None else getattr(module,
                                                                                bias_name)

    def params(self) -> list[nn.Parameter]:
        """Trainable parameters this layer perturbs."""
        return [p for p in (self.weight, self.bias) if p is not None]

    def check_mode(self) -> None:
        """Refuse a mode in which a sample's output depends on its batch (none by default)."""


class BatchNormLayer(_ChannelWise):
    """``nn.BatchNorm{1,2,3}d`` in eval mode: ``y = γ · x̂ + β`` with running statistics."""

    def check_mode(self) -> None:
        """Refuse batch statistics: they would make a sample's loss depend on its batch."""
        if self.module.training or self.module.running_mean is None:
            raise UnsupportedLayer(f'{self.name}: BatchNorm uses batch statistics (training mode '
                                   f'or track_running_stats=False)')

    def invstd(self) -> Tensor:
        """``1/sqrt(running_var + eps)``, ``[C]``."""
        return torch.rsqrt(self.module.running_var + self.module.eps)


class L2NormLayer(_ChannelWise):
    """A channel-wise scaled L2 normalisation, ``y = w_c · x / (‖x‖₂ + eps)``, the norm taken
    over channels at each position: mmdet's ``L2Norm`` (SSD's VGG16 neck).

    Recognised by its class name and shape (``weight [C]``, ``eps``): the scorers do not
    import mmdet.
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__(module, name, bias_name=None)

    def normalised(self, x: Tensor) -> Tensor:
        """``x / (‖x‖₂ + eps)`` with the norm over channels, as the module computes it."""
        x_float = x.float()
        return x_float / (x_float.pow(2).sum(1, keepdim=True).sqrt() + self.module.eps)


class GroupNormLayer(_ChannelWise):
    """``nn.GroupNorm`` with affine weights: ``y = γ_c · x̂ + β_c``, ``x̂`` normalised per
    sample and group (FCOS's and ATSS's head towers). The statistics are the sample's own, so
    the per-sample gradients are ``Σ δ·x̂`` and ``Σ δ`` per channel, as for an eval-mode
    batch norm, with ``x̂`` recomputed from the recorded input."""

    def normalised(self, x: Tensor) -> Tensor:
        """``x̂``: the module's normalisation without its affine part, same shape as ``x``."""
        return F.group_norm(x, self.module.num_groups, None, None, self.module.eps)


class ScaleLayer(_ChannelWise):
    """A learnable scalar factor, ``y = s · x``: mmcv's ``Scale`` (FCOS's and ATSS's box
    branches, one per level). Recognised by class name and shape (a 0-dim ``scale``): the
    scorers do not import mmcv."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__(module, name, weight_name='scale', bias_name=None)


def _is_scale(module: nn.Module) -> bool:
    scale = getattr(module, 'scale', None)
    return (type(module).__name__ == 'Scale' and isinstance(scale, nn.Parameter)
            and scale.dim() == 0 and len(module._parameters) == 1)


def _is_l2norm(module: nn.Module) -> bool:
    weight = getattr(module, 'weight', None)
    return (type(module).__name__ == 'L2Norm' and isinstance(weight, nn.Parameter)
            and weight.dim() == 1 and hasattr(module, 'eps'))


ChannelLayer = BatchNormLayer | L2NormLayer | GroupNormLayer | ScaleLayer


def layer_for(module: nn.Module, name: str) -> PatchLayer | ChannelLayer | None:
    """The adapter of a module with trainable parameters, or ``None`` if it has no rule.

    Args:
        module: A module that owns trainable parameters.
        name: Its qualified name (for messages).

    Raises:
        UnsupportedLayer: A known type in a configuration without an exact rule.
    """
    if type(module) is nn.Linear:
        return LinearLayer(module, name)
    if type(module) is nn.Conv2d:
        if module.groups != 1 or module.padding_mode != 'zeros':
            raise UnsupportedLayer(f'{name}: Conv2d with groups={module.groups}, '
                                   f'padding_mode={module.padding_mode!r}')
        return Conv2dLayer(module, name)
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        return BatchNormLayer(module, name)
    if type(module) is nn.GroupNorm:
        return GroupNormLayer(module, name) if module.affine else None
    if _is_l2norm(module):
        return L2NormLayer(module, name)
    if _is_scale(module):
        return ScaleLayer(module, name)
    return None


# --------------------------------------------------------------------------- per-chunk gradients
class LayerGradient:
    """Per-sample gradients of one layer for one chunk, in whatever form is cheapest."""

    def norm_terms(self, rule: PerturbationRule) -> Tensor:
        """This layer's per-sample contribution to the perturbation norm, ``[B]``."""
        raise NotImplementedError

    def perturbed_forward(self, rule: PerturbationRule, scale: Tensor) -> PerturbedForward:
        """The layer's forward with each sample's own ``ε_b = scale_b · φ(g_b)``.

        Args:
            rule: The perturbation's per-layer rule.
            scale: Per-sample scale ``s`` ``[B]``.
        """
        raise NotImplementedError


def _bias_grad(layer: PatchLayer, d_mats: list[Tensor]) -> Tensor | None:
    """Per-sample bias gradient ``Σ_t D`` ``[B, p]`` over all calls, or ``None`` if frozen."""
    if layer.bias is None:
        return None
    return sum(d.sum(dim=2) for d in d_mats)


class LowRankGradient(LayerGradient):
    """``G_b = Σ_calls D_b U_bᵀ`` kept as its factors (SAM with ``q = 2`` only).

    Args:
        layer: The linear or convolution layer.
        inputs: The layer's inputs, one ``[B, ...]`` tensor per call.
        d_mats: Output gradients ``[B, p, T_call]`` per call.
    """

    def __init__(self, layer: PatchLayer, inputs: list[Tensor], d_mats: list[Tensor]) -> None:
        self.layer, self.inputs, self.d_mats = layer, inputs, d_mats
        self.gb = _bias_grad(layer, d_mats)

    def norm_terms(self, rule):
        terms = torch.zeros_like(self.d_mats[0][:, 0, 0])
        if self.gb is not None:
            terms = terms + rule.norm_terms(self.gb, self.layer.bias)
        if self.layer.weight is not None:
            # ‖Σ_c D_c U_cᵀ‖²_F = Σ_{c,c'} Σ (U_cᵀU_c' ⊙ D_cᵀD_c'): [T, T] products per sample.
            for xa, da in zip(self.inputs, self.d_mats):
                for xb, db in zip(self.inputs, self.d_mats):
                    gram_d = torch.bmm(da.transpose(1, 2), db)
                    terms = terms + (self.layer.gram(xa, xb) * gram_d).sum(dim=(1, 2))
        return terms

    def perturbed_forward(self, rule, scale):
        layer = self.layer
        original = type(layer.module).forward
        # s_b · D_b, computed once for every call of the layer in the perturbed pass.
        sds = [d * scale.view(-1, 1, 1) for d in self.d_mats]
        sgb = None if self.gb is None else self.gb * scale.view(-1, 1)

        def forward(x: Tensor) -> Tensor:
            out = original(layer.module, x)
            if layer.weight is not None:
                # (W + s D Uᵀ) u' = W u' + s D (Uᵀ u'): patch inner products, never G itself.
                extra = sum(torch.bmm(sd, layer.gram(xc, x)) for sd, xc in zip(sds, self.inputs))
                out = out + layer.fold(extra, x)
            if sgb is not None:
                out = out + layer.bias_view(sgb, out)
            return out

        return forward


class DenseGradient(LayerGradient):
    """``G_b`` formed per sample; ε may be any entry-wise function of it (ASAM, SAM with q).

    Args:
        layer: The linear or convolution layer.
        inputs: The layer's inputs, one ``[B, ...]`` tensor per call.
        d_mats: Output gradients ``[B, p, T_call]`` per call.
        keep: Keep ``G`` between the norm and the perturbed forward (``B·p·d`` numbers) instead
            of forming it a second time.
        buffer: Optional callable giving ``[B, p, d]`` memory for ``G``, reused across chunks (a
            fresh allocation of that size costs page faults every time); called only if the
            layer's implementation can write into it. The memory must stay untouched while
            this gradient is alive if ``keep``, and between uses otherwise.
    """

    def __init__(self, layer: PatchLayer, inputs: list[Tensor], d_mats: list[Tensor],
                 keep: bool, buffer: Callable[[], Tensor] | None = None) -> None:
        self.layer, self.inputs, self.d_mats, self.keep = layer, inputs, d_mats, keep
        self.ops = layer.dense_ops(inputs[0])
        self.buffer = buffer() if buffer is not None and self.ops.uses_buffer else None
        self.gb = _bias_grad(layer, d_mats)
        self.g: Tensor | None = None

    def _weight_grad(self, d_mats: list[Tensor]) -> Tensor:
        g = None
        for x, d in zip(self.inputs, d_mats):
            if g is None:
                g = self.ops.weight_grad(x, d, out=self.buffer)
            else:
                g.add_(self.ops.weight_grad(x, d))
        return g

    def norm_terms(self, rule):
        terms = torch.zeros_like(self.d_mats[0][:, 0, 0])
        if self.gb is not None:
            terms = terms + rule.norm_terms(self.gb, self.layer.bias)
        if self.layer.weight is not None:
            # The rule may transform G in place into the form its finish() needs.
            prepared, weight_terms = rule.prepare(self._weight_grad(self.d_mats),
                                                  self.ops.weight_matrix())
            terms = terms + weight_terms
            if self.keep:
                self.g = prepared
        return terms

    def perturbed_forward(self, rule, scale):
        layer, ops = self.layer, self.ops
        w = ops.weight_matrix()

        def per_sample_weights() -> Tensor:
            # W + s_b φ(G_b), built in G's memory. A rule linear in g takes s_b through the
            # (small) output gradients instead of one more pass over the per-sample weights.
            if rule.linear:
                scaled = [d * scale.view(-1, 1, 1) for d in self.d_mats]
                return rule.shifted(self._weight_grad(scaled), w)
            return rule.perturbed(self._weight_grad(self.d_mats), w, scale)

        # Kept: formed now from the stored G. Not kept: formed again inside each call and
        # dropped right after it, so that only one layer's per-sample weights exist at a time.
        kept = rule.finish(self.g, w, scale) if self.g is not None else None
        self.g = None
        bias = layer.module.bias
        shift = None
        if self.gb is not None:
            bias = rule.perturbed(self.gb, bias, scale)
            shift = bias - layer.module.bias
        elif bias is not None:
            bias = bias.unsqueeze(0).expand(scale.shape[0], -1)
        original = type(layer.module).forward

        def forward(x: Tensor) -> Tensor:
            if layer.weight is None:
                # Only the bias is trainable: the layer's own product plus the per-sample shift.
                out = original(layer.module, x)
                return out + layer.bias_view(shift, out)
            weights = kept if kept is not None else per_sample_weights()
            return ops.forward(x, weights, bias)

        return forward


def _accumulate(total: Tensor | None, part: Tensor) -> Tensor:
    return part if total is None else total + part


class ChannelGradient(LayerGradient):
    """Per-sample gradients of a :class:`_ChannelWise` layer's weight and bias.

    Subclasses give one call's gradients (:meth:`call_gradients`) and the forward with
    per-sample parameters; the accumulation over calls, the norm terms and the per-sample
    parameter values are shared.

    Args:
        layer: The layer.
        inputs: Its inputs ``[B, C, *]``, one per call.
        deltas: Output gradients, same shapes.
    """

    def __init__(self, layer: _ChannelWise, inputs: list[Tensor],
                 deltas: list[Tensor]) -> None:
        self.layer = layer
        self.g_weight: Tensor | None = None
        self.g_bias: Tensor | None = None
        if not layer.params():
            return
        for x, d in zip(inputs, deltas):
            g_weight, g_bias = self.call_gradients(x, d)
            if g_weight is not None:
                self.g_weight = _accumulate(self.g_weight, g_weight)
            if g_bias is not None:
                self.g_bias = _accumulate(self.g_bias, g_bias)

    def call_gradients(self, x: Tensor, d: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """One call's per-sample weight and bias gradients (``None`` for a frozen one).

        Args:
            x: The call's input ``[B, C, *]``.
            d: Its output gradient, same shape.
        """
        raise NotImplementedError

    def norm_terms(self, rule):
        terms = 0
        if self.g_weight is not None:
            terms = terms + rule.norm_terms(self.g_weight, self.layer.weight)
        if self.g_bias is not None:
            terms = terms + rule.norm_terms(self.g_bias, self.layer.bias)
        return terms

    def perturbed_params(self, rule: PerturbationRule,
                         scale: Tensor) -> tuple[Tensor, Tensor | None]:
        """Each sample's weight and bias, ``[B, *shape]``: ``θ + ε_b`` where trainable, the
        module's own value where frozen."""
        def value(grad: Tensor | None, param: Tensor | None) -> Tensor | None:
            if param is None:
                return None
            if grad is None:
                return param.unsqueeze(0).expand(scale.shape[0], *param.shape)
            return rule.perturbed(grad, param, scale)

        weight = value(self.g_weight, self.layer.module_weight)
        assert weight is not None
        return weight, value(self.g_bias, self.layer.module_bias)


def _channel_view(x: Tensor) -> tuple[int, ...]:
    """``(B, C, 1, ...)``: per-sample, per-channel values broadcast against ``x``."""
    return (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)


class BatchNormGradient(ChannelGradient):
    """Per-sample ``γ`` and ``β`` gradients of an eval-mode batch norm, ``[B, C]`` each."""

    layer: BatchNormLayer

    def call_gradients(self, x, d):
        b, c = d.shape[:2]
        d = d.reshape(b, c, -1)
        sum_d = d.sum(dim=2)
        g_weight = None
        if self.layer.weight is not None:
            # Σ δ·x̂ = invstd · (Σ δ·x − μ · Σ δ): one pass over the activations, not three.
            g_weight = ((d * x.reshape(b, c, -1)).sum(dim=2)
                        - self.layer.module.running_mean * sum_d) * self.layer.invstd()
        return g_weight, sum_d if self.layer.bias is not None else None

    def perturbed_forward(self, rule, scale):
        gamma, beta = self.perturbed_params(rule, scale)
        # y = (x - μ)·invstd·γ_b + β_b = x·a_b + (β_b - μ·a_b): one fused multiply-add.
        a = gamma * self.layer.invstd()
        shift = beta - self.layer.module.running_mean * a

        def forward(x: Tensor) -> Tensor:
            view = _channel_view(x)
            return torch.addcmul(shift.reshape(view), x, a.reshape(view))

        return forward


class L2NormGradient(ChannelGradient):
    """Per-sample weight gradients of an :class:`L2NormLayer`, ``Σ δ · x̂`` ``[B, C]``."""

    layer: L2NormLayer

    def call_gradients(self, x, d):
        b, c = d.shape[:2]
        g = (d.reshape(b, c, -1) * self.layer.normalised(x).reshape(b, c, -1)).sum(dim=2)
        return g.to(self.layer.module_weight.dtype), None

    def perturbed_forward(self, rule, scale):
        weight, _ = self.perturbed_params(rule, scale)
        eps = self.layer.module.eps

        def forward(x: Tensor) -> Tensor:
            x_float = x.float()
            norm = x_float.pow(2).sum(1, keepdim=True).sqrt() + eps
            # The module's own order of operations: (w · x) / norm.
            return (weight.float()[:, :, None, None] * x_float / norm).type_as(x)

        return forward


class GroupNormGradient(ChannelGradient):
    """Per-sample ``γ`` and ``β`` gradients of a group norm, ``Σ δ·x̂`` and ``Σ δ`` ``[B, C]``."""

    layer: GroupNormLayer

    def call_gradients(self, x, d):
        b, c = d.shape[:2]
        d = d.reshape(b, c, -1)
        g_weight = None
        if self.layer.weight is not None:
            g_weight = (d * self.layer.normalised(x).reshape(b, c, -1)).sum(dim=2)
        return g_weight, d.sum(dim=2) if self.layer.bias is not None else None

    def perturbed_forward(self, rule, scale):
        gamma, beta = self.perturbed_params(rule, scale)
        assert beta is not None  # an affine GroupNorm has both

        def forward(x: Tensor) -> Tensor:
            view = _channel_view(x)
            return torch.addcmul(beta.reshape(view), self.layer.normalised(x),
                                 gamma.reshape(view))

        return forward


class ScaleGradient(ChannelGradient):
    """Per-sample gradient of a :class:`ScaleLayer`'s scalar, ``Σ δ·x``, kept as ``[B, 1]``
    (the rules' per-sample reductions run over a trailing axis; ``[1]`` broadcasts against the
    0-dim parameter)."""

    layer: ScaleLayer

    def call_gradients(self, x, d):
        g = (d.reshape(d.shape[0], -1) * x.reshape(x.shape[0], -1)).sum(dim=1, keepdim=True)
        return g.to(self.layer.module_weight.dtype), None

    def perturbed_forward(self, rule, scale):
        factor, _ = self.perturbed_params(rule, scale)

        def forward(x: Tensor) -> Tensor:
            return x * factor.reshape((x.shape[0],) + (1,) * (x.dim() - 1))

        return forward


__all__ = ['UnsupportedLayer', 'DenseOps', 'PatchLayer', 'LinearLayer', 'Conv2dLayer',
           'BatchNormLayer', 'ChannelLayer', 'L2NormLayer', 'layer_for', 'LayerGradient',
           'LowRankGradient', 'DenseGradient', 'BatchNormGradient', 'L2NormGradient',
           'ChannelGradient', 'GroupNormLayer', 'GroupNormGradient', 'ScaleLayer',
           'ScaleGradient',
           'PerturbedForward']
