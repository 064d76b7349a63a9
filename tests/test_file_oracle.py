"""Human-in-the-loop labeling: export a query, edit answers, import them, resume."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saal_tasks.core.errors import AnnotationError, ConfigError
from saal_tasks.engine import ActiveLearningLoop

from conftest import digits_loop_cfg

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(work_dir, oracle='FileOracle'):
    """2 rounds of 4 from 40 scored after 10 initial labels, answered by ``oracle``."""
    return digits_loop_cfg(work_dir, oracle=dict(type=oracle), seed=1,
                           al=dict(budget=4, initial_size=10))


def query_ids(folder: Path) -> list[int]:
    with open(folder / 'query.csv') as f:
        return [int(r['sample_id']) for r in csv.DictReader(f)]


def answer_csv(loop, folder: Path, out: Path, style='ours') -> Path:
    """What an annotator would hand back: our CSV filled in, or a Label Studio CSV export."""
    ids = query_ids(folder)
    truth = loop.task.ground_truth(np.array(ids))
    with open(out, 'w', newline='') as f:
        if style == 'ours':
            writer = csv.DictWriter(f, fieldnames=['sample_id', 'file', 'label'])
            writer.writeheader()
            for i in ids:
                writer.writerow({'sample_id': i, 'file': f'sample_{i:06d}.png',
                                 'label': truth[i]})
        else:  # Label Studio: uploaded files get a hash prefix; classes are named choices
            writer = csv.DictWriter(f, fieldnames=['annotation_id', 'choice', 'image', 'id'])
            writer.writeheader()
            for n, i in enumerate(ids):
                writer.writerow({'annotation_id': n, 'choice': str(truth[i]), 'id': 900 + n,
                                 'image': f'/data/upload/3/8f2c{n:02d}e1-sample_{i:06d}.png'})
    return out


def test_round_trip_equals_simulated_oracle(tmp_path):
    reference = ActiveLearningLoop.from_cfg(make_cfg(tmp_path / 'sim', 'SimulatedOracle'))
    reference.run()

    work = tmp_path / 'human'
    loop = ActiveLearningLoop.from_cfg(make_cfg(work))
    loop.run()
    styles = ['ours', 'label_studio', 'ours']
    for round_idx, style in enumerate(styles):
        assert loop.pending is not None and loop.pending.round_idx == round_idx
        folder = work / 'queries' / f'round_{round_idx:03d}'
        ids = query_ids(folder)
        assert len(list(folder.glob('sample_*.png'))) == len(ids) == (10 if round_idx == 0 else 4)
        answers = answer_csv(loop, folder, tmp_path / f'answers_{round_idx}.csv', style)
        loop = ActiveLearningLoop.from_cfg(make_cfg(work))
        assert loop.import_answers(answers) == (round_idx, len(ids))
        loop = ActiveLearningLoop.from_cfg(make_cfg(work))
        loop.run(resume=True)
    assert loop.pending is None
    assert loop.state == reference.state
    assert [r['accuracy'] for r in loop.records] == [r['accuracy'] for r in reference.records]


@pytest.mark.parametrize('edit, message', [
    (lambda rows: rows[0].update(label='12'), 'label 12 of sample'),
    (lambda rows: rows[0].update(sample_id='99999'), 'that were not queried'),
    (lambda rows: rows.append(dict(rows[0])), 'more than once'),
    (lambda rows: rows.pop(), 'did not answer queried ids'),
    (lambda rows: rows[1].update(label='seven'), "label 'seven' is neither a class index"),
    (lambda rows: rows[2].update(label=''), 'the label is empty'),
])
def test_bad_import_is_rejected_and_changes_nothing(tmp_path, edit, message):
    work = tmp_path / 'run'
    loop = ActiveLearningLoop.from_cfg(make_cfg(work))
    loop.run()
    folder = work / 'queries' / 'round_000'
    good = answer_csv(loop, folder, tmp_path / 'good.csv')
    with open(good) as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    bad = tmp_path / 'bad.csv'
    with open(bad, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['sample_id', 'file', 'label'])
        writer.writeheader()
        writer.writerows(rows)
    before = {p: p.read_bytes() for p in work.rglob('*') if p.is_file()}
    with pytest.raises(AnnotationError, match=message) as info:
        ActiveLearningLoop.from_cfg(make_cfg(work)).import_answers(bad)
    assert str(bad) in str(info.value) and '\n' not in str(info.value)
    assert {p: p.read_bytes() for p in work.rglob('*') if p.is_file()} == before


def test_import_needs_a_waiting_query_and_a_file_oracle(tmp_path):
    sim = ActiveLearningLoop.from_cfg(make_cfg(tmp_path / 'sim', 'SimulatedOracle'))
    sim.run()
    with pytest.raises(ConfigError, match="needs oracle = dict\\(type='FileOracle'\\)"):
        sim.import_answers(tmp_path / 'x.csv')


@pytest.mark.slow
def test_cli_exit_codes_and_json_answers(tmp_path):
    cfg_path = tmp_path / 'human.py'
    cfg = make_cfg(tmp_path / 'run')
    cfg.al.num_rounds = 0
    cfg.dump(str(cfg_path))

    def tool(name, *args):
        return subprocess.run([sys.executable, str(ROOT / 'tools' / name), str(cfg_path),
                               *map(str, args)], capture_output=True, text=True, timeout=300)

    first = tool('train_al.py')
    assert first.returncode == 3 and 'waiting for labels' in first.stdout, first.stderr
    folder = tmp_path / 'run' / 'queries' / 'round_000'
    ids = query_ids(folder)
    loop = ActiveLearningLoop.from_cfg(make_cfg(tmp_path / 'unused'))
    truth = loop.task.ground_truth(np.array(ids))
    answers = tmp_path / 'answers.json'
    answers.write_text(json.dumps({str(i): truth[i] for i in ids}))
    answers_bad = tmp_path / 'bad.json'
    answers_bad.write_text(json.dumps({str(i): 10 for i in ids}))
    bad = tool('import_labels.py', answers_bad)
    assert bad.returncode == 2 and bad.stderr.startswith('error: ') and \
        len(bad.stderr.strip().splitlines()) == 1
    ok = tool('import_labels.py', answers)
    assert ok.returncode == 0 and f'imported {len(ids)} answers for round 0' in ok.stdout
    done = tool('train_al.py', '--resume')
    assert done.returncode == 0 and 'finished: 1 rounds, 10 labeled' in done.stdout, done.stderr
