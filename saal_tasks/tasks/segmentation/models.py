"""Segmentation networks on mmseg 1.2.2: DeepLab-v2, DeepLab-v3+ and a tiny CPU model.

The builders return plain mmseg config dicts for ``EncoderDecoder``; :func:`build_segmentor`
turns one into a module. All three models have output stride 8: ResNet strides
``(1, 2, 1, 1)`` and dilations ``(1, 1, 2, 4)`` with ``contract_dilation=True``, i.e. the
first block of a dilated stage uses half the stage's dilation. That is what torchvision's
``replace_stride_with_dilation=[False, True, True]`` does, which is the backbone RIPU trains
(and mmseg's own DeepLab configs), so ImageNet weights see the receptive fields they expect.

Choices shared by every config here:

* ``data_preprocessor=None``: mmengine then uses its ``BaseDataPreprocessor``, which only
  moves/casts tensors. The segmentation task normalises images itself, so normalising again
  in the model would double it.
* ``norm_cfg=BN`` (not SyncBN): training runs on one device.
* The top-level key ``backbone_weights`` (path or ``None``) is OURS, not mmseg's:
  :func:`build_segmentor` pops it before building and then loads the file with
  ``torch.load(weights_only=True)``. mmengine's ``Pretrained`` initialiser is not used
  because its ``torch.load`` call does not pass ``weights_only`` (see the design notes on
  torch >= 2.6). A config with this key must therefore be built with
  :func:`build_segmentor`, not with ``MODELS.build`` directly.

:func:`segment_logits` is the one forward the task uses: backbone + decode head, logits
resized to the input, differentiable in train and eval mode.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from ...core.errors import ConfigError
from ...compat.mmcv_ops import ensure_mmcv_ops
from ...compat.mmengine_runtime import quiet_current_logger
from .summed_convs import summed_same_convs, uses_matmul_backward

ensure_mmcv_ops()  # before mmseg: mmseg imports mmcv.ops at import time

import mmseg.models  # noqa: E402,F401  (registers EncoderDecoder, ResNet, the heads)
from mmseg.models.decode_heads.decode_head import BaseDecodeHead  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402

__all__ = ['ARCHITECTURES', 'ASPPSumHead', 'deeplab_v2', 'deeplab_v3plus', 'tiny',
           'build_segmentor', 'load_backbone_weights', 'model_config', 'segment_logits',
           'BACKBONE_WEIGHTS_KEY']

#: Top-level config key naming the backbone's ImageNet weights (popped by build_segmentor).
BACKBONE_WEIGHTS_KEY = 'backbone_weights'


# Functions, not module constants: a caller editing one returned config in place must not
# change the next one.
def _bn(frozen: bool = False) -> dict:
    # Frozen = RIPU's FrozenBatchNorm2d (MODEL.FREEZE_BN in its SYNTHIA configs): the ImageNet
    # statistics and affine stay fixed; with norm_eval the layers also stay in eval mode.
    return dict(type='BN', requires_grad=not frozen)


def _ce() -> dict:
    # mmseg's default averages the CE over ALL pixels, ignored ones included; averaging over
    # the labeled pixels only is torch's (and RIPU's) CrossEntropyLoss(ignore_index=255).
    return dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                avg_non_ignore=True)


@MODELS.register_module()
class ASPPSumHead(BaseDecodeHead):
    """DeepLab-v2's classifier: parallel dilated 3x3 convolutions to logits, summed.

    Each branch maps the backbone feature straight to ``num_classes`` logits (3x3 conv with
    bias, padding = dilation so the size is kept); the head returns the sum of the branches.
    There is no shared 1x1 classifier, no normalisation and no dropout.

    ``BaseDecodeHead`` is subclassed only so that mmseg's ``EncoderDecoder`` (its loss,
    predict and input selection) accepts the head. Its constructor always creates a 1x1
    ``conv_seg`` from ``channels`` to the classes; we pass ``channels=in_channels`` to
    satisfy it and then delete ``conv_seg``, because a parameter that never takes part in
    the forward would still be decayed by the optimiser, saved in checkpoints and reported
    as unused by DistributedDataParallel. ``dropout_ratio=0`` means no dropout layer is made.
    ``cls_seg`` therefore must not be called (``forward`` does not).

    Args:
        in_channels: Channels ``D`` of the selected backbone feature.
        num_classes: Number of classes ``C``.
        dilations: One branch per dilation.
        init_cfg: mmengine init config; the default is DeepLab-v2's classifier init:
            weights ~ N(0, 0.01^2), biases 0.
        **kwargs: Passed on to ``BaseDecodeHead`` (``in_index``, ``align_corners``,
            ``ignore_index``, ``loss_decode``, ...).
    """

    def __init__(self, in_channels: int, num_classes: int,
                 dilations: Sequence[int] = (6, 12, 18, 24),
                 init_cfg: dict | list[dict] | None = None, **kwargs: Any) -> None:
        for key in ('channels', 'dropout_ratio', 'input_transform'):
            if key in kwargs:
                raise ConfigError(
                    f'ASPPSumHead takes no {key!r}: it classifies one feature map straight '
                    f'from in_channels; remove {key!r} from its config')
        dilations = tuple(dilations)
        if not dilations or not all(isinstance(d, int) and d >= 1 for d in dilations):
            raise ConfigError(f'ASPPSumHead dilations must be positive integers, got '
                              f'{dilations!r}; e.g. (6, 12, 18, 24)')
        if init_cfg is None:
            init_cfg = dict(type='Normal', std=0.01, bias=0, layer='Conv2d')
        super().__init__(in_channels, in_channels, num_classes=num_classes, dropout_ratio=0.0,
                         init_cfg=init_cfg, **kwargs)
        del self.conv_seg  # see the class docstring
        self.dilations = dilations
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, self.out_channels, kernel_size=3, padding=d, dilation=d,
                      bias=True) for d in dilations)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Sum of the branches' logits.

        Args:
            inputs: Backbone features; ``in_index`` selects one ``[B, D, h, w]``.

        Returns:
            Logits ``[B, C, h, w]``.
        """
        x = self._transform_inputs(inputs)
        # In eval mode (scoring: the exact SAAL gradient of each image) the same sum, with a
        # backward 5-10x faster on CPU (summed_convs.py). Training keeps autograd's own
        # backward: the float32 rounding of the other summation order would change trained
        # weights, and so the recorded runs of tests/test_behaviour_preserved.py.
        if not self.training and uses_matmul_backward(x, self.branches):
            return summed_same_convs(x, self.branches)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f'num_classes must be an integer >= 2, got {num_classes!r}')


def _dilated_resnet(type_: str, depth: int, out_indices: tuple[int, ...],
                    freeze_bn: bool = False, **extra: Any) -> dict:
    """An output-stride-8 mmseg ResNet config (strides (1,2,1,1), dilations (1,1,2,4))."""
    return dict(type=type_, depth=depth, num_stages=4, out_indices=out_indices,
                strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True,
                style='pytorch', norm_cfg=_bn(freeze_bn), norm_eval=freeze_bn, **extra)


def _encoder_decoder(backbone: dict, decode_head: dict, backbone_weights: str | None) -> dict:
    return dict(type='EncoderDecoder', data_preprocessor=None, backbone=backbone,
                decode_head=decode_head, train_cfg=dict(), test_cfg=dict(mode='whole'),
                **{BACKBONE_WEIGHTS_KEY: backbone_weights})


def deeplab_v2(num_classes: int = 16, backbone_weights: str | None = None,
               freeze_bn: bool = False) -> dict:
    """DeepLab-v2: ResNet-101 (original 7x7 stem, torchvision layout) + :class:`ASPPSumHead`.

    Args:
        num_classes: Number of classes ``C``.
        backbone_weights: Path to torchvision ImageNet ResNet-101 weights, or ``None`` to
            train from scratch.
        freeze_bn: Keep the backbone's batch norms at their ImageNet statistics and affine
            (RIPU's ``FREEZE_BN``, set in its SYNTHIA configs).

    Returns:
        An ``EncoderDecoder`` config for :func:`build_segmentor`.
    """
    _check_num_classes(num_classes)
    return _encoder_decoder(
        _dilated_resnet('ResNet', 101, (3,), freeze_bn),
        dict(type='ASPPSumHead', in_channels=2048, in_index=0, num_classes=num_classes,
             dilations=(6, 12, 18, 24), align_corners=False, loss_decode=_ce()),
        backbone_weights)


def deeplab_v3plus(num_classes: int = 16, backbone_weights: str | None = None,
                   freeze_bn: bool = False) -> dict:
    """DeepLab-v3+: ResNet-101 + mmseg's ``DepthwiseSeparableASPPHead``.

    The head's ASPP has dilations (1, 12, 24, 36) plus image pooling on the stride-8 feature
    (stage 4, 2048 channels) and fuses the stage-1 feature (256 channels -> 48) before two
    separable 3x3 convs and the 1x1 classifier (dropout 0.1 before it, as in mmseg).

    The backbone keeps the original 7x7 stem (not mmseg's deep-stem ResNetV1c) so that
    torchvision ImageNet ResNet-101 weights fill all of it, as in RIPU's DeepLab-v3+.

    Args:
        num_classes: Number of classes ``C``.
        backbone_weights: Path to ImageNet ResNet-101 weights, or ``None``.
        freeze_bn: Freeze the batch norms of the backbone and of the head (RIPU freezes
            both with ``FREEZE_BN``).

    Returns:
        An ``EncoderDecoder`` config for :func:`build_segmentor`.
    """
    _check_num_classes(num_classes)
    return _encoder_decoder(
        _dilated_resnet('ResNet', 101, (0, 1, 2, 3), freeze_bn),
        dict(type='DepthwiseSeparableASPPHead', in_channels=2048, in_index=3, channels=512,
             dilations=(1, 12, 24, 36), c1_in_channels=256, c1_channels=48,
             dropout_ratio=0.1, num_classes=num_classes, norm_cfg=_bn(freeze_bn),
             align_corners=False,
             loss_decode=_ce()),
        backbone_weights)


def tiny(num_classes: int = 16) -> dict:
    """A small DeepLab-v2-shaped model for CPU demos and tests (e.g. 64x128 images).

    ResNet-18 layout with 16 stem/base channels (stage widths 16, 32, 64, 128), output
    stride 8, and an :class:`ASPPSumHead` with dilations (1, 2, 3, 4) sized for a feature
    map of about 8x16.

    Args:
        num_classes: Number of classes ``C``.

    Returns:
        An ``EncoderDecoder`` config for :func:`build_segmentor` (no backbone weights).
    """
    _check_num_classes(num_classes)
    return _encoder_decoder(
        _dilated_resnet('ResNet', 18, (3,), stem_channels=16, base_channels=16),
        dict(type='ASPPSumHead', in_channels=128, in_index=0, num_classes=num_classes,
             dilations=(1, 2, 3, 4), align_corners=False, loss_decode=_ce()),
        None)


#: Model builders a config can name with ``model=dict(arch=...)``.
ARCHITECTURES = {'tiny': tiny, 'deeplab_v2': deeplab_v2, 'deeplab_v3plus': deeplab_v3plus}


def model_config(model: Mapping[str, Any], num_classes: int) -> dict:
    """The segmentor config of the task option ``model``.

    Args:
        model: ``dict(arch='tiny' | 'deeplab_v2' | 'deeplab_v3plus', **builder options)``, or
            a full mmseg segmentor config (with ``type``), which is returned as is (a copy).
        num_classes: Number of classes ``C`` passed to the builder.

    Returns:
        A config for :func:`build_segmentor`.

    Raises:
        ConfigError: ``arch`` names no builder of :data:`ARCHITECTURES`, an option is not
            one of its builder's, or a full config's ``Pretrained`` ``init_cfg`` names a
            local file that does not exist.
    """
    model = dict(model)
    if 'type' in model:  # a full mmseg segmentor config
        # When the task is built, before a run directory exists: a missing weights file is
        # a one-line error, not a failure at the first round.
        _check_local_checkpoints(model, 'task.model')
        return model
    arch = model.pop('arch', None)
    if arch not in ARCHITECTURES:
        raise ConfigError(f'task.model.arch must be one of {sorted(ARCHITECTURES)}, got '
                          f'{arch!r} (or give a full mmseg segmentor config with type)')
    builder = ARCHITECTURES[arch]
    accepted = set(inspect.signature(builder).parameters) - {'num_classes'}
    unknown = sorted(set(model) - accepted)
    if unknown:
        raise ConfigError(f"task.model.{unknown[0]} is not an option of arch={arch!r}: it takes "
                          f"{', '.join(sorted(accepted)) or 'no options'}")
    return builder(num_classes=num_classes, **model)


def build_segmentor(cfg: Mapping[str, Any]) -> nn.Module:
    """Build an mmseg segmentor from a config of this module, initialise it, load weights.

    The caller seeds (``torch.manual_seed``) before calling: the random init draws from
    torch's global generator.

    Args:
        cfg: A config from :func:`deeplab_v2`, :func:`deeplab_v3plus`, :func:`tiny` (or
            any mmseg segmentor config), optionally with the top-level key
            ``backbone_weights`` (path or ``None``). Not modified.

    Returns:
        The segmentor (an mmseg ``EncoderDecoder``), in training mode.

    Raises:
        ConfigError: The backbone weights file is missing, unreadable or does not fit.
    """
    cfg = dict(copy.deepcopy(cfg))
    weights = cfg.pop(BACKBONE_WEIGHTS_KEY, None)
    if weights is not None and not Path(weights).is_file():
        # Checked before building: a ResNet-101 takes seconds to build.
        raise ConfigError(
            f'backbone weights {weights} not found: put ImageNet ResNet-101 weights '
            '(torchvision resnet101 state dict, .pth) there or set backbone_weights=None to '
            'train from scratch')
    _check_local_checkpoints(cfg, 'task.model')
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    # init_weights writes one log entry per parameter; keep the run's log readable.
    with quiet_current_logger():
        model.init_weights()
    if weights is not None:
        load_backbone_weights(model.backbone, weights)
    return model


def _check_local_checkpoints(node: Any, key: str) -> None:
    """Refuse, in one line, an ``init_cfg`` of type ``Pretrained`` whose checkpoint is a
    local path with no file (mmseg configs name them; a URL is left to mmengine)."""
    if isinstance(node, Mapping):
        checkpoint = node.get('checkpoint')
        if (node.get('type') == 'Pretrained' and isinstance(checkpoint, str)
                and '://' not in checkpoint and not Path(checkpoint).is_file()):
            raise ConfigError(
                f'{key}.checkpoint: {checkpoint} not found: save the pretrained weights '
                f'there, or set {key.rsplit(".", 1)[0]}.init_cfg=None to train from scratch')
        for name, value in node.items():
            _check_local_checkpoints(value, f'{key}.{name}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_local_checkpoints(value, f'{key}[{i}]')


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a ResNet state dict (torchvision key names) into an mmseg ResNet backbone.

    The file is read with ``torch.load(weights_only=True)``. A ``{'state_dict': ...}``
    wrapper and a ``module.`` key prefix are accepted; the classifier ``fc.*`` of a
    torchvision checkpoint is dropped. Tensors are copied by name (mmseg's ResNet uses
    torchvision's names: ``conv1``, ``bn1``, ``layerN.i.convK``/``bnK``/``downsample.*``).
    Missing and unexpected names are reported in one log line.

    Args:
        backbone: The segmentor's backbone (e.g. ``model.backbone``).
        path: The ``.pth`` file.

    Returns:
        ``(missing, unexpected)`` key names.

    Raises:
        ConfigError: The file cannot be read as a state dict, shares no tensor name with
            the backbone, or has a tensor of the wrong shape.
    """
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a plain state dict"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f'backbone weights {path} cannot be read with '
                          f'torch.load(weights_only=True) ({first_line}): save a plain state '
                          'dict, e.g. torch.save(model.state_dict(), path)') from None
    if isinstance(state, Mapping) and isinstance(state.get('state_dict'), Mapping):
        state = state['state_dict']
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ConfigError(f'backbone weights {path} are not a state dict of named tensors: '
                          'save one with torch.save(model.state_dict(), path)')
    state = {k.removeprefix('module.'): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith('fc.')}

    own = backbone.state_dict()
    shared = [k for k in state if k in own]
    name = type(backbone).__name__
    if not shared:
        raise ConfigError(f'backbone weights {path} share no tensor name with the {name} '
                          'backbone: expected torchvision ResNet names such as conv1.weight '
                          'and layer1.0.conv1.weight')
    wrong = [k for k in shared if state[k].shape != own[k].shape]
    if wrong:
        shown = ', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
                          for k in wrong[:3])
        raise ConfigError(f'backbone weights {path} do not fit the {name} backbone '
                          f'({len(wrong)} tensors of another shape: {shown}): use weights '
                          'of the same ResNet depth')
    missing, unexpected = backbone.load_state_dict(state, strict=False)

    def _some(keys: list[str]) -> str:
        return f' (e.g. {", ".join(keys[:3])})' if keys else ''

    print_log(f'backbone weights {path}: loaded {len(shared)} tensors into {name}; '
              f'{len(missing)} missing{_some(missing)}, '
              f'{len(unexpected)} unexpected{_some(unexpected)}', logger='current')
    return list(missing), list(unexpected)


def segment_logits(model: nn.Module, images: Tensor) -> Tensor:
    """Per-pixel class logits at the input resolution.

    Runs ``model.extract_feat`` and the decode head's ``forward`` (no auxiliary head, no
    data preprocessor), then resizes bilinearly with ``align_corners=False``. Respects the
    model's train/eval mode and keeps the graph.

    Args:
        model: A segmentor from :func:`build_segmentor`.
        images: Normalised images ``[B, 3, H, W]``.

    Returns:
        Logits ``[B, C, H, W]``.
    """
    if images.dim() != 4:
        raise ValueError(f'segment_logits expects images [B, 3, H, W], got shape '
                         f'{tuple(images.shape)}')
    logits = model.decode_head(model.extract_feat(images))
    if logits.shape[-2:] == images.shape[-2:]:
        return logits
    return F.interpolate(logits, size=images.shape[-2:], mode='bilinear', align_corners=False)
