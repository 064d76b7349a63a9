"""Query mode: a trained model scores a pool nobody labeled and the picks are exported.

Parity with the loop (same model, candidates and streams: the same picks and scores), a
folder of unlabeled images end to end through ``tools/query.py``, the export read back as
answers, a killed query that continues, and the one-line refusals.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saal_tasks.core.errors import ConfigError, ResumeError
from saal_tasks.core.pool_state import PoolState
from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.engine.manifest import Manifest
from saal_tasks.engine.query import load_model_file, run_query

from test_errors import make_cfg, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def finished(tmp_path_factory) -> Path:
    work_dir = tmp_path_factory.mktemp('run') / 'w'
    run(make_cfg(work_dir, num_rounds=1))
    return work_dir


def test_query_with_a_round_model_picks_what_the_loop_picked(finished, tmp_path):
    loop = ActiveLearningLoop.from_cfg(make_cfg(tmp_path / 'unused', num_rounds=1))
    with np.load(finished / 'rounds/round_001/scores.npz') as data:
        candidates, scores = data['sample_ids'], data['scores']
    loop_picks = json.loads((finished / 'rounds/round_001/selected.json').read_text())
    manifest = Manifest.load(finished)
    state = PoolState.load(finished / manifest.pool_state, expected_ids=loop.task.sample_ids())
    model = load_model_file(loop.task, finished / 'rounds/round_001/model.pth')
    outcome = run_query(loop.task, loop.scorer, loop.selector, model, budget=5,
                        out_dir=tmp_path / 'q', seed=0, round_idx=1,
                        labeled_ids=state.labeled_ids(0), candidate_ids=candidates)
    np.testing.assert_array_equal(outcome.result.sample_ids, candidates)
    np.testing.assert_array_equal(outcome.result.scores, scores)      # bit for bit
    assert outcome.sample_ids.tolist() == loop_picks['sample_ids']


def _digit_folder(root: Path, count: int = 40) -> Path:
    """The first digits as PNG files in two subfolders, some at twice the size."""
    from sklearn.datasets import load_digits
    images = load_digits().images
    for i in range(count):
        folder = root / ('left' if i % 2 else 'right')
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray((images[i] / 16 * 255).round().astype(np.uint8))
        img.resize((16, 16) if i % 5 == 0 else (8, 8)).save(folder / f'digit {i:03d}.png')
    return root


def _query_tool(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'query.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def test_folder_of_unlabeled_images_end_to_end(finished, tmp_path):
    from saal_tasks.registry import TASKS
    data = _digit_folder(tmp_path / 'unlabeled')
    config = tmp_path / 'digits.py'
    make_cfg(tmp_path / 'unused', num_rounds=1).dump(str(config))
    checkpoint = finished / 'rounds/round_002/model.pth'
    out = tmp_path / 'out'
    proc = _query_tool(config, '--checkpoint', checkpoint, '--data', data, '--budget', 6,
                       '--out', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'picked 6 of 40' in proc.stdout
    page = (out / 'report.html').read_text()           # the picks, drawn, with their files
    assert page.count('class="thumb') == 6 and page.count('<img') == 7
    assert 'digit ' in page and 'https://' not in page
    with open(out / 'selected.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['rank']) for r in rows] == list(range(1, 7))
    scores = [float(r['score']) for r in rows]
    assert scores == sorted(scores, reverse=True)          # TopK: best first
    every = np.load(out / 'scores.npz')['scores']
    assert scores[0] == every.max() and len(every) == 40
    for r in rows:                                         # the original file of each pick
        assert (data / r['source']).is_file()
        assert r['source'] == f"{'left' if int(r['source'][-7:-4]) % 2 else 'right'}/" \
                              f"digit {r['source'][-7:-4]}.png"
    # The export is the file oracle's: fill in query.csv and it reads back as answers.
    with open(out / 'images' / 'query.csv') as f:
        query = list(csv.DictReader(f))
    assert sorted(int(q['sample_id']) for q in query) == sorted(int(r['sample_id'])
                                                                  for r in rows)
    for q in query:
        assert (out / 'images' / q['file']).is_file()
        q['label'] = '3'
    answers = tmp_path / 'answers.csv'
    with open(answers, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['sample_id', 'file', 'label'])
        writer.writeheader()
        writer.writerows(query)
    task_cfg = dict(make_cfg(tmp_path / 'unused').task)
    task_cfg['dataset'] = dict(type='UnlabeledImagesData', root=str(data),
                               like=task_cfg['dataset'])
    task = TASKS.build(task_cfg)
    assert sorted(task.read_answers(answers)) == sorted((int(r['sample_id']), 3) for r in rows)
    with pytest.raises(ConfigError, match='has no labels'):
        task.ground_truth(np.array([0]))


def test_killed_query_continues_to_the_same_picks(finished, tmp_path):
    loop = ActiveLearningLoop.from_cfg(make_cfg(tmp_path / 'unused', num_rounds=1))
    model = load_model_file(loop.task, finished / 'rounds/round_002/model.pth')
    out = tmp_path / 'q'
    first = run_query(loop.task, loop.scorer, loop.selector, model, 7, out, seed=3)
    picked = (out / 'selected.csv').read_bytes()
    # As if killed after scoring: the record says only 'score', later files are gone.
    record = json.loads((out / 'query.json').read_text())
    record['stages'] = ['score']
    (out / 'query.json').write_text(json.dumps(record))
    for name in ('selected.json', 'selected.csv'):
        (out / name).unlink()

    def no_rescoring(*args, **kwargs):
        raise AssertionError('the recorded scores must be reused')

    loop.scorer.score = no_rescoring
    again = run_query(loop.task, loop.scorer, loop.selector, model, 7, out, seed=3)
    assert again.sample_ids.tolist() == first.sample_ids.tolist()
    assert (out / 'selected.csv').read_bytes() == picked
    # Other inputs in the same folder are refused, naming it; nothing is changed.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ResumeError, match='holds a query of other inputs'):
        run_query(loop.task, loop.scorer, loop.selector, model, 8, out, seed=3)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_bad_query_input_is_one_line(finished, tmp_path):
    config = tmp_path / 'digits.py'
    make_cfg(tmp_path / 'unused', num_rounds=1).dump(str(config))
    checkpoint = finished / 'rounds/round_001/model.pth'
    cases = [
        (('--checkpoint', tmp_path / 'nope.pth', '--budget', 3), 'does not exist'),
        (('--checkpoint', checkpoint, '--budget', 0), '--budget must be between 1 and'),
        (('--checkpoint', checkpoint, '--budget', 3, '--data', tmp_path / 'none'),
         'does not exist: check --data'),
        (('--checkpoint', checkpoint, '--budget', 3, '--cfg-options', 'task.model.width=3'),
         'does not fit the model the config builds'),
    ]
    for args, expected in cases:
        proc = _query_tool(config, *args, '--out', tmp_path / 'out')
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
