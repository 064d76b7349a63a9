"""A sum of size-keeping convolutions of one input whose CPU backward is two matrix products.

DeepLab-v2's classifier (:class:`~.models.ASPPSumHead`) sums four 3x3 convolutions from 2048
channels to 16 logits at dilations 6-24. On CPU, oneDNN runs the forward of such a layer fast
but its backward 5-10x slower than that forward (AMD EPYC, 2 threads, a 40x80 feature map:
0.13-0.32 s per branch against 0.03-0.04 s), so the classifier costs about a quarter of a
DeepLab-v2 backward pass. With few output channels the backward is small as matrix products.
For branch ``n`` with weight ``W_n`` ``[O, C, k, k]`` and dilation ``d_n``:

* ``S_n[b, (o, i, j), p] = grad_out[b, o, p - d_n·(i - r, j - r)]`` (zero outside the map,
  ``r = k // 2``) is the output gradient shifted once per kernel tap: ``O·k²`` rows, cheap
  because ``O`` is small;
* ``grad_in[b] = Σ_n W_nᵀ S_n[b]``: one product with every branch's rows stacked;
* ``grad_W_n = Σ_b S_n[b] x[b]ᵀ`` (``[O·k², C]``, reordered to ``[O, C, k, k]``);
* ``grad_bias_n = Σ grad_out`` over batch and pixels.

The forward is the plain ``F.conv2d`` calls, summed in branch order, so outputs are
bit-identical to calling the ``nn.Conv2d`` branches; gradients agree to float rounding (the
sums run in another order). The head uses it in eval mode, i.e. for scoring; training keeps
autograd's own backward so that trained weights stay those of the recorded runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['summed_same_convs', 'uses_matmul_backward']


def _shifted_grad(grad_out: Tensor, kernel: int, dilation: int) -> Tensor:
    """``S`` of the module docstring, ``[B, O·k², H·W]``, from ``grad_out`` ``[B, O, H, W]``."""
    batch, channels, height, width = grad_out.shape
    r, d = kernel // 2, dilation
    padded = F.pad(grad_out, (d * r,) * 4)
    # Tap (i, j) reads the output gradient at p - d·(i - r, j - r): the window of the padded
    # map that starts at d·(2r - i, 2r - j).
    taps = [padded[:, :, d * (2 * r - i):d * (2 * r - i) + height,
                   d * (2 * r - j):d * (2 * r - j) + width]
            for i in range(kernel) for j in range(kernel)]
    return torch.stack(taps, dim=2).reshape(batch, channels * kernel * kernel, height * width)


class _SummedSameConvs(torch.autograd.Function):
    """``Σ_n F.conv2d(x, W_n, b_n, padding=d_n·r, dilation=d_n)`` with the backward above."""

    # The backward is plain differentiable torch code, so torch.func can vmap it.
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, dilations: tuple[int, ...], *weights_and_biases: Tensor) -> Tensor:
        n = len(dilations)
        weights, biases = weights_and_biases[:n], weights_and_biases[n:]
        out = None
        for w, b, d in zip(weights, biases, dilations):
            y = F.conv2d(x, w, b, padding=d * (w.shape[-1] // 2), dilation=d)
            out = y if out is None else out + y  # the order of ASPPSumHead's module path
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, dilations, *weights_and_biases = inputs
        ctx.save_for_backward(x, *weights_and_biases[:len(dilations)])
        ctx.dilations = dilations

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        x, *weights = ctx.saved_tensors
        n = len(weights)
        batch, channels, height, width = x.shape
        shifted = [_shifted_grad(grad_out, w.shape[-1], d)
                   for w, d in zip(weights, ctx.dilations)]
        grad_x = None
        if ctx.needs_input_grad[0]:
            # One product over every branch's taps: no per-branch [B, C, H, W] buffers to add.
            rows = torch.cat([w.permute(1, 0, 2, 3).reshape(channels, -1) for w in weights], 1)
            grad_x = torch.matmul(rows, torch.cat(shifted, 1)).view(batch, channels, height,
                                                                   width)
        flat = x.reshape(batch, channels, height * width).transpose(1, 2)
        grad_ws: list[Tensor | None] = []
        for m, (w, s) in enumerate(zip(weights, shifted)):
            if ctx.needs_input_grad[2 + m]:
                out_channels, _, k, _ = w.shape
                g = torch.matmul(s, flat).sum(0)  # [O·k², C]
                grad_ws.append(g.view(out_channels, k, k, channels).permute(0, 3, 1, 2))
            else:
                grad_ws.append(None)
        grad_bs = [grad_out.sum((0, 2, 3)) if ctx.needs_input_grad[2 + n + m] else None
                   for m in range(n)]
        return (grad_x, None, *grad_ws, *grad_bs)


def uses_matmul_backward(x: Tensor, convs: Sequence[nn.Conv2d]) -> bool:
    """Whether :func:`summed_same_convs` should replace calling ``convs`` as modules.

    Only for a CPU backward (on CUDA cuDNN's kernels are used; this was not measured there),
    outside autocast, with equal dtypes, size-keeping odd-square-kernel convolutions with
    biases (stride 1, ``groups = 1``, zero padding ``d·(k // 2)``), and no hooks on the
    modules (hooks observe module calls, which this path does not make).
    """
    if not torch.is_grad_enabled() or x.device.type != 'cpu' \
            or torch.is_autocast_enabled('cpu'):
        return False
    if not (x.requires_grad or any(c.weight.requires_grad for c in convs)):
        return False
    for c in convs:
        k = c.kernel_size[0]
        d = c.dilation[0]
        if (c.kernel_size != (k, k) or k % 2 != 1 or c.stride != (1, 1) or c.groups != 1
                or c.dilation != (d, d) or c.padding != (d * (k // 2),) * 2
                or c.padding_mode != 'zeros' or c.bias is None
                or c.weight.dtype != x.dtype or c._forward_hooks or c._forward_pre_hooks
                or c._backward_hooks):
            return False
    return True


def summed_same_convs(x: Tensor, convs: Sequence[nn.Conv2d]) -> Tensor:
    """``Σ_n convs[n](x)`` with the matrix-product backward of the module docstring.

    Args:
        x: Input ``[B, C, H, W]``.
        convs: Convolutions accepted by :func:`uses_matmul_backward`, each ``C -> O``.

    Returns:
        The sum of their outputs, ``[B, O, H, W]``.
    """
    return _SummedSameConvs.apply(x, tuple(c.dilation[0] for c in convs),
                                  *[c.weight for c in convs], *[c.bias for c in convs])
