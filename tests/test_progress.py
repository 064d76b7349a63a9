"""Progress lines with the time left: after the first batch, every interval, at the end."""
from __future__ import annotations

import time

import pytest

import saal_tasks.core.scorer as scorer_module
from saal_tasks.core.scorer import BaseScorer, format_seconds


@pytest.mark.parametrize('seconds, text', [(0, '0 s'), (41.6, '42 s'), (425, '7 min 5 s'),
                                           (12000, '3 h 20 min'), (-3, '0 s')])
def test_format_seconds_known_answers(seconds, text):
    assert format_seconds(seconds) == text


def test_scoring_progress_gives_an_early_estimate_then_every_interval(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(scorer_module, 'print_log', lambda msg, **kw: lines.append(msg))
    clock = iter([10.0, 20.0, 30.0, 40.0, 50.0])
    monkeypatch.setattr(time, 'perf_counter', lambda: next(clock))
    scorer = BaseScorer(log_interval=500)
    last = [0]
    for done in (100, 200, 600, 1000):   # the clock is read only when a line is due: 10 s,
                                         # 20 s, 30 s after a start at 0
        scorer._progress(done, 1000, 0.0, last)
    assert lines == [
        'scoring 100/1000 samples (10.0 samples/s, 1 min 30 s left)',   # the first batch
        'scoring 600/1000 samples (30.0 samples/s, 13 s left)',         # 500 after it
        'scoring 1000/1000 samples (33.3 samples/s)',                   # the end
    ]
