"""mmcv's compiled ops when they are installed; otherwise the few SSD needs, from torchvision.

mmdet 3.3.0 imports ``mmcv.ops`` at import time, and ``mmcv.ops`` loads mmcv's compiled
extension ``mmcv._ext``. The full mmcv 2.1.0 ships only as source (about an hour to build on
two cores), while ``mmcv-lite`` installs in seconds but has no ``_ext``. SSD (and its
evaluation) needs exactly one compiled op, NMS, and torchvision has a compiled NMS with the
same semantics. So, when ``mmcv._ext`` cannot be imported, :func:`ensure_mmcv_ops` registers a
stand-in ``mmcv._ext`` module before ``mmcv.ops`` is imported:

* ``nms`` runs ``torchvision.ops.nms`` (mmcv's ``offset=1`` convention, where a box is
  ``x2 - x1 + 1`` wide, is reproduced by shifting the far corners by one).
* Every other op name exists (``mmcv.ops`` checks names when it is imported) but raises a
  one-line error naming the op and how to get the compiled ops.

:func:`ensure_mmcv_ops` logs which path is active the first time it runs. Set
``SAAL_MMCV_OPS=torchvision`` to force the fallback even where the compiled ops exist (used by
the parity tests); the default, ``auto``, prefers the compiled ops.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import types
from typing import Any, Callable

import torch

from ..core.errors import MissingDependencyError

#: The op names the fallback implements.
SUPPORTED_OPS = ('nms',)
#: Values of the ``SAAL_MMCV_OPS`` environment variable.
CHOICES = ('auto', 'torchvision')
COMPILED = 'mmcv-compiled'
FALLBACK = 'torchvision-fallback'

_active: str | None = None


def torchvision_nms(bboxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                    offset: int = 0) -> torch.Tensor:
    """mmcv's ``_ext.nms`` contract, computed by torchvision's compiled kernel.

    Args:
        bboxes: Boxes ``[N, 4]`` as ``(x1, y1, x2, y2)``.
        scores: Scores ``[N]``.
        iou_threshold: Boxes overlapping a kept box by more than this IoU are dropped.
        offset: 0, or 1 for the convention where a box is ``x2 - x1 + 1`` wide.

    Returns:
        Indices of the kept boxes ``[K]`` (int64), by decreasing score.
    """
    from torchvision.ops import nms

    if offset not in (0, 1):
        raise ValueError(f'nms offset must be 0 or 1, got {offset}')
    if offset:
        # IoU with widths x2 - x1 + 1 equals plain IoU after moving x2, y2 out by one.
        bboxes = torch.cat([bboxes[:, :2], bboxes[:, 2:] + offset], dim=1)
    return nms(bboxes, scores.to(bboxes.dtype), float(iou_threshold))


def _unavailable(name: str) -> Callable[..., Any]:
    def op(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f'mmcv op {name!r} needs mmcv\'s compiled ops, which are not installed (only '
            f'{", ".join(SUPPORTED_OPS)} has a torchvision fallback): run `make mmcv-full` or '
            'install an mmcv 2.1.0 wheel built for this torch')
    op.__name__ = name
    return op


class _FallbackExt(types.ModuleType):
    """Stand-in for ``mmcv._ext``: NMS from torchvision, every other op a clear error."""

    def __init__(self) -> None:
        super().__init__('mmcv._ext', 'torchvision stand-in for mmcv._ext '
                         '(saal_tasks.compat.mmcv_ops)')
        # A spec without a loader: importlib and mmengine's mmcv_full_available() then see
        # "no compiled mmcv" (True to fact) instead of failing on a module with no spec.
        self.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
        self.nms = torchvision_nms

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith('__'):
            raise AttributeError(name)
        return _unavailable(name)


def active_path() -> str | None:
    """``'mmcv-compiled'``, ``'torchvision-fallback'``, or ``None`` before the first call."""
    return _active


def ensure_mmcv_ops(choice: str | None = None) -> str:
    """Make ``import mmcv.ops`` work; return which path is active.

    Must run before anything imports ``mmcv.ops`` (mmdet does at import time). Idempotent.

    Args:
        choice: ``'auto'`` (compiled ops when importable, else the fallback) or
            ``'torchvision'`` (always the fallback); default: ``$SAAL_MMCV_OPS`` or ``'auto'``.

    Returns:
        ``'mmcv-compiled'`` or ``'torchvision-fallback'``.

    Raises:
        MissingDependencyError: mmcv (full or lite) is not installed (an ``ImportError``).
        ValueError: ``choice`` is not one of :data:`CHOICES`.
    """
    global _active
    if _active is not None:
        return _active
    choice = choice or os.environ.get('SAAL_MMCV_OPS', 'auto')
    if choice not in CHOICES:
        raise ValueError(f'SAAL_MMCV_OPS must be one of {", ".join(CHOICES)}, got {choice!r}')
    try:
        import mmcv  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            'mmcv is not installed (mmdet and mmseg need it but do not declare it): pip '
            'install mmcv-lite==2.1.0 (NMS then comes from torchvision) or a compiled mmcv '
            '2.1.0 for your torch; in a checkout `make setup-det` chooses') from None
    reason = 'forced by SAAL_MMCV_OPS=torchvision'
    if 'mmcv.ops' in sys.modules:
        # Someone imported mmcv.ops first: report what it uses; it cannot be switched now.
        loaded = FALLBACK if isinstance(sys.modules.get('mmcv._ext'), _FallbackExt) else COMPILED
        if choice == 'torchvision' and loaded == COMPILED:
            raise ImportError('SAAL_MMCV_OPS=torchvision, but mmcv.ops was already imported '
                              'with the compiled ops: set it before anything imports mmdet')
        _active = loaded
        reason = 'chosen when mmcv.ops was first imported'
    elif choice == 'auto':
        try:
            importlib.import_module('mmcv._ext')
            _active = COMPILED
        except (ImportError, OSError) as err:
            # ImportError: mmcv-lite (no _ext); OSError: an _ext built for another torch.
            reason = f'mmcv._ext not importable: {err}'
    if _active is None:
        sys.modules['mmcv._ext'] = _FallbackExt()
        _active = FALLBACK
    importlib.import_module('mmcv.ops')
    from mmengine.logging import print_log
    if _active == COMPILED:
        print_log('mmcv ops: compiled (mmcv._ext)', logger='current')
    else:
        print_log(f'mmcv ops: torchvision fallback ({reason}); NMS runs '
                  'torchvision.ops.nms, other compiled mmcv ops are unavailable',
                  logger='current')
    return _active


__all__ = ['CHOICES', 'COMPILED', 'FALLBACK', 'SUPPORTED_OPS', 'active_path', 'ensure_mmcv_ops',
           'torchvision_nms']
