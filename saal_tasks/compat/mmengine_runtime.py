"""Running mmengine/mmdet machinery inside an active-learning run without side effects.

mmengine's ``Runner`` is built for one training per process: it seeds the global RNGs, and
registers process-wide "current" logger, message hub, visualizer and default scope. An
active-learning run trains once per round, and the loop (and the test suite) keep using their
own logger and registries in between, so every Runner here runs inside
:func:`isolated_runner_globals` and :func:`preserved_global_rng`.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; on torch >= 2.6 that means
``weights_only=True``, which refuses the numpy and mmengine objects stored in Runner
checkpoints. Safe loading stays on: :func:`safe_checkpoint_globals` allows exactly the
classes such checkpoints contain, only while our own loads run.
"""
from __future__ import annotations

import pickle
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.visualization import Visualizer


@contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global RNG states on exit.

    mmdet's data transforms draw from the global numpy RNG, and the Runner seeds all three
    from the round's seed; the caller's streams are left exactly as they were.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextmanager
def isolated_runner_globals() -> Iterator[None]:
    """Drop the logger, message hub, visualizer and default scope a Runner registers.

    mmengine keeps them in ``ManagerMixin._instance_dict`` (the latest entry is "current");
    removing the entries added inside the block makes the caller's instances current again,
    and closes the Runner's log file.
    """
    managers = (MMLogger, MessageHub, Visualizer, DefaultScope)
    before = {m: set(m._instance_dict) for m in managers}
    try:
        yield
    finally:
        for manager in managers:
            for name in [n for n in manager._instance_dict if n not in before[manager]]:
                instance = manager._instance_dict.pop(name)
                if isinstance(instance, MMLogger):
                    for handler in list(instance.handlers):
                        handler.close()
                        instance.removeHandler(handler)


def runner_launch_args(distributed: bool) -> dict:
    """The ``launcher`` and ``cfg`` arguments of a Runner in this process.

    In a torchrun run the Runner trains data-parallel like mmdet's and mmseg's own tools
    (``MMDistributedDataParallel``); on CPUs DDP needs ``device_ids=None``, which mmengine's
    default wrapper (one device per local rank) does not pass. Buffers are not broadcast
    every step; the tasks broadcast rank 0's once training ends.

    Args:
        distributed: Whether this process is one of several (``world_size > 1``).

    Returns:
        Keyword arguments for ``Runner(...)``.
    """
    cfg = (dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', device_ids=None,
                                       broadcast_buffers=False))
           if distributed and not torch.cuda.is_available() else None)
    return dict(launcher='pytorch' if distributed else 'none', cfg=cfg)


@contextmanager
def quiet_current_logger(level: str = 'WARNING') -> Iterator[None]:
    """Make a console-only logger at ``level`` the current one inside the block.

    ``BaseModule.init_weights`` writes one entry per parameter to the current logger (its
    file, or the console when it has none); building a model each round would bury the run's
    log. Warnings (e.g. missing checkpoint keys) still show.
    """
    with isolated_runner_globals():
        MMLogger.get_instance(f'saal_quiet_{id(object())}', log_level=level)
        yield


#: HistoryBuffer statistics a Runner checkpoint's message hub refers to by name.
_HISTORY_BUFFER_METHODS = frozenset({'min', 'max', 'mean', 'current'})


def _history_buffer_method(obj: object, name: str) -> object:
    """The one ``getattr`` a Runner checkpoint needs, and nothing else.

    ``HistoryBuffer`` pickles its statistics table as ``getattr(HistoryBuffer, 'mean')`` etc.
    Allowing ``builtins.getattr`` itself would let a file reach any attribute of any allowed
    object (and from there arbitrary code), so the name resolves to this function instead.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS | set(
            HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for {getattr(obj, "__name__", type(obj).__name__)}.{name}, which is '
        'not part of an mmengine Runner checkpoint: refusing to load it')


def _checkpoint_allow_list() -> list:
    """Objects a Runner checkpoint pickles besides tensors (meta, message hub, numpy)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed: list = [HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
                     multiarray.scalar,
                     (_history_buffer_method, 'builtins.getattr'),
                     (_history_buffer_method, '__builtin__.getattr')]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return allowed


@contextmanager
def safe_checkpoint_globals() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` read Runner checkpoints inside the block.

    Only the classes listed in :func:`_checkpoint_allow_list` are added, and only for the
    duration of the block; anything else in a file is still refused.
    """
    with torch.serialization.safe_globals(_checkpoint_allow_list()):
        yield


def load_checkpoint_weights(path: str) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file (a Runner checkpoint or a bare state dict).

    Args:
        path: Local ``.pth`` file.

    Returns:
        The state dict (``checkpoint['state_dict']`` when present).

    Raises:
        FileNotFoundError: The file does not exist.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist: check task.init_checkpoint')
    with safe_checkpoint_globals():
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    return checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else checkpoint


__all__ = ['isolated_runner_globals', 'load_checkpoint_weights', 'preserved_global_rng',
           'quiet_current_logger', 'runner_launch_args', 'safe_checkpoint_globals']
