"""tools/train_al.py end to end, and its one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'cls' / 'saal_cnn_digits.py'
SMALL = ['--cfg-options', 'al.num_rounds=2', 'task.epochs=2', 'task.model.width=4']


def run_tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_demo_config_runs_and_resumes(tmp_path):
    proc = run_tool(DEMO, '--work-dir', tmp_path, '--seed', 5, *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert 'finished: 3 rounds, 40 labeled' in proc.stdout
    assert 'scoring' in proc.stdout + proc.stderr and 'epoch 2/2' in proc.stdout + proc.stderr
    assert (tmp_path / 'learning_curve.png').exists()
    assert (tmp_path / 'saal_cnn_digits.py').exists()  # the merged config
    dumped = (tmp_path / 'saal_cnn_digits.py').read_text()
    assert 'seed = 5' in dumped and 'num_rounds=2' in dumped
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 3
    assert json.loads((tmp_path / 'manifest.json').read_text())['completed_round'] == 3
    # A second start in the same folder is refused; a resume of a finished run is a no-op.
    again = run_tool(DEMO, '--work-dir', tmp_path, '--seed', 5, *SMALL)
    assert again.returncode == 2 and 'pass --resume' in again.stderr
    resumed = run_tool(DEMO, '--work-dir', tmp_path, '--seed', 5, '--resume', *SMALL)
    assert resumed.returncode == 0, resumed.stderr
    assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.parametrize('args, message', [
    (['--cfg-options', 'scorer.type=SharpnesScorer'], "'SharpnesScorer' is not a registered scorer; did you mean 'SharpnessScorer'? registered: "),
    (['--cfg-options', 'al.num_rounds=1000'], 'lower al.num_rounds or al.budget'),
    (['--cfg-options', 'al.budget=5000'], 'must be >= budget'),
    (['--resume'], 'nothing to resume'),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    proc = run_tool(DEMO, '--work-dir', tmp_path / 'w', *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], \
        proc.stderr


@pytest.mark.slow
def test_missing_dataset_is_one_line(tmp_path):
    cfg = tmp_path / 'cifar_missing.py'
    cfg.write_text(f"_base_ = ['{DEMO}']\n"
                   "task = dict(dataset=dict(_delete_=True, type='CIFAR10Data', "
                   "root='/nonexistent/c10'))\n")
    proc = run_tool(cfg, '--work-dir', tmp_path / 'w')
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert 'CIFAR-10 not found under /nonexistent/c10' in lines[0] and 'download=True' in lines[0]
    assert not (tmp_path / 'w' / 'manifest.json').exists()


def test_missing_config_file(tmp_path):
    proc = run_tool(tmp_path / 'nope.py')
    assert proc.returncode == 2 and 'does not exist' in proc.stderr


def test_missing_base_names_the_file(tmp_path):
    (tmp_path / 'parent.py').write_text("_base_ = ['./nope.py']\na = 1\n")
    (tmp_path / 'child.py').write_text("_base_ = ['./parent.py']\n")
    proc = run_tool(tmp_path / 'child.py', '--work-dir', tmp_path / 'w')
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert (f"config {tmp_path / 'parent.py'} (inherited through {tmp_path / 'child.py'}) "
            f"inherits './nope.py' (_base_), but {tmp_path / 'nope.py'} does not exist") in lines[0]
    assert not (tmp_path / 'w').exists()
