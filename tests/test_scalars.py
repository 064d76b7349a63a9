"""Per-round numbers through mmengine's visualiser backends (ScalarsHook)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import digits_loop_cfg
from saal_tasks.core.errors import MissingDependencyError
from saal_tasks.engine import ActiveLearningLoop


def _run(work_dir, **hook):
    cfg = digits_loop_cfg(work_dir, hooks=[dict(type='ScalarsHook', **hook)],
                          al=dict(num_rounds=2), task=dict(epochs=1))
    return ActiveLearningLoop.from_cfg(cfg).run()


def test_local_backend_holds_one_line_per_round_equal_to_the_records(tmp_path):
    records = _run(tmp_path / 'w')
    lines = [json.loads(line) for line in
             (tmp_path / 'w' / 'vis_data' / 'scalars.json').read_text().splitlines()]
    assert [line['step'] for line in lines] == [r['round'] for r in records] == [1, 2, 3]
    for line, record in zip(lines, records):
        expected = {k: v for k, v in record.items() if k != 'round'}
        assert {k: v for k, v in line.items() if k != 'step'} == pytest.approx(expected)


@pytest.mark.skipif(importlib.util.find_spec('tensorboard') is not None,
                    reason='tensorboard is installed: the missing-package path cannot occur')
def test_tensorboard_backend_without_tensorboard_is_one_line(tmp_path):
    with pytest.raises(MissingDependencyError) as err:
        _run(tmp_path / 'w', vis_backends=[dict(type='TensorboardVisBackend')])
    text = str(err.value)
    assert '\n' not in text and 'tensorboard' in text and 'ScalarsHook' in text
