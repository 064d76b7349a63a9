"""Test-only: kill this process with SIGKILL at a chosen point of a run.

Imported through the config's ``custom_imports`` by the kill-and-resume tests
(tests/test_kill_resume.py, tests/test_kill_resume_tasks.py); does nothing unless
``SAAL_KILL_AT`` is set, to one of:

* ``train:<k>:<n>``     during the k-th training call (``task.train`` or ``task.train_steps``),
                        at the n-th per-iteration call counted for the task (see below);
* ``score:<k>:<n>``     during the k-th scoring call (outermost ``BaseScorer.score``: a scorer
                        that wraps another counts once), at its n-th ``task.loss_per_unit``;
* ``select:<k>``        right after the k-th selection was written, before it is recorded;
* ``write:<suffix>[:<n>]``  at the n-th (default 1st) write of a state file whose path ends
                        with ``suffix``: the temporary file is complete but not yet renamed
                        into place.

Counts start at 1 and are per process: in a resumed process, the first training call is the
first one that process makes.

Two more variables choose what is counted:

* ``SAAL_KILL_TASK=module:Class``: the task class whose training and unit losses are counted;
  default ``saal_tasks.tasks.classification.task:ClassificationTask``.
* ``SAAL_KILL_TRAIN_CALL=module:attr[.attr]``: the call counted once (or a fixed number of
  times) per training iteration; default :data:`TRAIN_CALLS` of the task class: the loss
  function for tasks that train in their own loop, mmengine's ``OptimWrapper.update_params``
  (one per iteration) for tasks trained by an mmengine ``Runner``.
"""
from __future__ import annotations

import functools
import importlib
import os
import signal
from typing import Any, Callable

SPEC = os.environ.get('SAAL_KILL_AT', '')
DEFAULT_TASK = 'saal_tasks.tasks.classification.task:ClassificationTask'
#: Per task class name: the call counted inside training (one or more per iteration).
TRAIN_CALLS = {
    'ClassificationTask': 'torch.nn.functional:cross_entropy',
    # Source CE, plus target CE when the target batch has revealed pixels.
    'SegmentationTask': 'torch.nn.functional:cross_entropy',
    # mmengine's BaseModel.train_step updates the weights once per iteration through this.
    'DetectionTask': 'mmengine.optim:OptimWrapper.update_params',
}
#: The task methods that train (the in-run schedule calls ``train_steps``).
TRAIN_METHODS = ('train', 'train_steps')


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def resolve(path: str) -> tuple[Any, str]:
    """``'module:A.b'`` -> (the object ``module.A``, ``'b'``): where to patch ``b``."""
    module_name, _, attrs = path.partition(':')
    if not attrs:
        raise ValueError(f'{path!r} must read module:attribute, e.g. '
                         'torch.nn.functional:cross_entropy')
    owner: Any = importlib.import_module(module_name)
    *parents, name = attrs.split('.')
    for parent in parents:
        owner = getattr(owner, parent)
    getattr(owner, name)  # fail here, not at the first call, when the name is wrong
    return owner, name


def train_call(task_cls: type) -> str:
    """The counted training call of ``task_cls`` (the environment may override it)."""
    override = os.environ.get('SAAL_KILL_TRAIN_CALL')
    if override:
        return override
    for klass in task_cls.__mro__:
        if klass.__name__ in TRAIN_CALLS:
            return TRAIN_CALLS[klass.__name__]
    raise ValueError(f'no training call known for {task_cls.__name__}: set '
                     'SAAL_KILL_TRAIN_CALL=module:attribute')


def count_calls(owner: Any, names: tuple[str, ...], k: int, n_inner: int, inner_owner: Any,
                inner_name: str, on_hit: Callable[[], None] = _die) -> None:
    """Call ``on_hit`` at the n-th call of ``inner`` made inside the k-th outermost call of
    any of ``owner.<names>``.

    Calls nested in an outer call (``train`` calling ``train_steps``, a scorer wrapping
    another scorer) belong to the outermost one, so ``k`` counts what the loop calls.
    """
    inner = getattr(inner_owner, inner_name)
    state = {'outer': 0, 'inner': 0, 'depth': 0, 'active': False}

    @functools.wraps(inner)
    def counted_inner(*args, **kwargs):
        if state['active']:
            state['inner'] += 1
            if state['inner'] == n_inner:
                on_hit()
        return inner(*args, **kwargs)

    def counted(outer):
        @functools.wraps(outer)
        def counted_outer(*args, **kwargs):
            if state['depth'] == 0:
                state['outer'] += 1
                state['active'] = state['outer'] == k
            state['depth'] += 1
            try:
                return outer(*args, **kwargs)
            finally:
                state['depth'] -= 1
                if state['depth'] == 0:
                    state['active'] = False
        return counted_outer

    for name in names:
        setattr(owner, name, counted(getattr(owner, name)))
    setattr(inner_owner, inner_name, counted_inner)


def _die_after_select(k: int) -> None:
    from saal_tasks.engine.stages import SelectStage
    original_select, calls = SelectStage.run, [0]

    def select_then_die(self, loop, rnd):
        original_select(self, loop, rnd)
        calls[0] += 1
        if calls[0] == k:
            _die()

    SelectStage.run = select_then_die


def _die_while_writing(suffix: str, n: int) -> None:
    original_replace, calls = os.replace, [0]

    def replace_or_die(src, dst, *a, **kw):
        if str(dst).endswith(suffix):
            calls[0] += 1
            if calls[0] == n:
                _die()
        return original_replace(src, dst, *a, **kw)

    os.replace = replace_or_die


def install(spec: str) -> None:
    """Arm the kill point ``spec`` (the format of ``SAAL_KILL_AT``) in this process."""
    point, *args = spec.split(':')
    if point in ('train', 'score'):
        owner, name = resolve(os.environ.get('SAAL_KILL_TASK') or DEFAULT_TASK)
        task_cls = getattr(owner, name)
        if point == 'train':
            inner_owner, inner_name = resolve(train_call(task_cls))
            names = tuple(m for m in TRAIN_METHODS if hasattr(task_cls, m))
            count_calls(task_cls, names, int(args[0]), int(args[1]), inner_owner, inner_name)
        else:
            from saal_tasks.core.scorer import BaseScorer
            count_calls(BaseScorer, ('score',), int(args[0]), int(args[1]), task_cls,
                        'loss_per_unit')
    elif point == 'select':
        _die_after_select(int(args[0]))
    elif point == 'write':
        _die_while_writing(args[0], int(args[1]) if len(args) > 1 else 1)
    else:
        raise ValueError(f'unknown SAAL_KILL_AT point {point!r}')


if SPEC:
    install(SPEC)
