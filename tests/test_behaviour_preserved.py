"""The layered refactor kept behaviour: the reference runs select and measure exactly what
they did before it (recorded in tests/data/behaviour.json by tests/behaviour_runs.py)."""
from __future__ import annotations

import json

import pytest

from behaviour_runs import RECORDING, RUNS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize('name', sorted(RUNS))
def test_run_selects_and_measures_as_recorded(tmp_path, name):
    if name in ('det', 'seg'):
        pytest.importorskip('mmdet' if name == 'det' else 'mmseg')
    expected = json.loads(RECORDING.read_text())[name]
    got = RUNS[name](tmp_path)
    assert got['initial'] == expected['initial']
    assert len(got['rounds']) == len(expected['rounds'])
    for r, (g, e) in enumerate(zip(got['rounds'], expected['rounds']), start=1):
        assert g.get('selected') == e.get('selected'), f'round {r}: selected ids'
        assert g.get('units') == e.get('units'), f'round {r}: selected units'
        assert g.get('scores') == e.get('scores'), f'round {r}: scores of the query'
        # Through JSON text: NaN metrics (IoU of absent classes) compare equal to themselves.
        assert json.dumps(g['metrics'], sort_keys=True) == \
            json.dumps(e['metrics'], sort_keys=True), f'round {r}: metrics'
