"""Test-only: kill this process with SIGKILL at a chosen point of a run.

Imported through the config's ``custom_imports`` by tests/test_kill_resume.py; does nothing
unless ``SAAL_KILL_AT`` is set, to one of:

* ``train:<k>:<n>``   during the k-th training call, at its n-th loss evaluation;
* ``score:<k>:<n>``   during the k-th scoring call, at its n-th unit-loss evaluation;
* ``select:<k>``      right after the k-th selection was written, before it is recorded;
* ``write:<suffix>``  while writing a state file whose path ends with ``suffix``: the
                      temporary file is complete but not yet renamed into place.
"""
import os
import signal

import torch.nn.functional as F

SPEC = os.environ.get('SAAL_KILL_AT', '')


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _count_calls(owner, name, k, n_inner, inner_owner, inner_name):
    """Die at the n-th call of ``inner`` made inside the k-th call of ``owner.name``."""
    outer = getattr(owner, name)
    inner = getattr(inner_owner, inner_name)
    state = {'outer': 0, 'inner': 0, 'active': False}

    def counted_inner(*args, **kwargs):
        if state['active']:
            state['inner'] += 1
            if state['inner'] == n_inner:
                _die()
        return inner(*args, **kwargs)

    def counted_outer(*args, **kwargs):
        state['outer'] += 1
        state['active'] = state['outer'] == k
        try:
            return outer(*args, **kwargs)
        finally:
            state['active'] = False

    setattr(owner, name, counted_outer)
    setattr(inner_owner, inner_name, counted_inner)


if SPEC:
    point, *args = SPEC.split(':')
    from saal_tasks.core.loop import ActiveLearningLoop
    from saal_tasks.scorers.base import BaseScorer
    from saal_tasks.tasks.classification.task import ClassificationTask
    if point == 'train':
        _count_calls(ClassificationTask, 'train', int(args[0]), int(args[1]), F, 'cross_entropy')
    elif point == 'score':
        _count_calls(BaseScorer, 'score', int(args[0]), int(args[1]), ClassificationTask,
                     'loss_per_unit')
    elif point == 'select':
        original_select, calls = ActiveLearningLoop._select, [0]

        def select_then_die(self, ctx):
            original_select(self, ctx)
            calls[0] += 1
            if calls[0] == int(args[0]):
                _die()

        ActiveLearningLoop._select = select_then_die
    elif point == 'write':
        original_replace = os.replace

        def replace_or_die(src, dst, *a, **k):
            if str(dst).endswith(args[0]):
                _die()
            return original_replace(src, dst, *a, **k)

        os.replace = replace_or_die
    else:
        raise ValueError(f'unknown SAAL_KILL_AT point {point!r}')
