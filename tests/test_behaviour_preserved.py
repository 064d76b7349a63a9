"""The layered refactor kept behaviour: the reference runs select and measure what they did
before it (recorded in tests/data/behaviour.json by tests/behaviour_runs.py).

A recording belongs to a CPU kind (see ``behaviour_runs.py``): another CPU's vector kernels
round float32 sums differently in the last bits, and over rounds of training that changes
what is picked. On its own kind a run reproduces its selections exactly; scores and metrics
are compared to float32 rounding.
"""
from __future__ import annotations

import json
import math

import pytest

from behaviour_runs import RUNS, cpu_kind, recording_path

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('name', sorted(RUNS))
def test_run_selects_and_measures_as_recorded(tmp_path, name):
    if name in ('det', 'seg'):
        pytest.importorskip('mmdet' if name == 'det' else 'mmseg')
    recording = recording_path()
    if recording is None:
        pytest.skip(f'no behaviour recording for this CPU kind {cpu_kind()}: record one on a '
                    'commit known to be right (tests/behaviour_runs.py)')
    expected = json.loads(recording.read_text())[name]
    got = RUNS[name](tmp_path)
    assert got['initial'] == expected['initial']
    assert len(got['rounds']) == len(expected['rounds'])
    for r, (g, e) in enumerate(zip(got['rounds'], expected['rounds']), start=1):
        assert g.get('selected') == e.get('selected'), f'round {r}: selected ids'
        assert g.get('units') == e.get('units'), f'round {r}: selected units'
        if e.get('scores') is None:
            assert g.get('scores') is None, f'round {r}: scores of the query'
        else:
            assert g.get('scores') == pytest.approx(e['scores'], rel=1e-5), \
                f'round {r}: scores of the query'
        assert sorted(g['metrics']) == sorted(e['metrics']), f'round {r}: metric names'
        for key, value in e['metrics'].items():
            got_value = g['metrics'][key]
            if isinstance(value, float) and math.isnan(value):
                # NaN metrics (IoU of absent classes) stay NaN.
                assert math.isnan(got_value), f'round {r}: {key}'
            else:
                assert got_value == pytest.approx(value, rel=1e-4, abs=1e-6), \
                    f'round {r}: {key}'
