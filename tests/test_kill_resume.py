"""Kill a run with SIGKILL at several points, resume, and get the uninterrupted result."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

CONFIG = """
_base_ = ['{root}/configs/cls/saal_cnn_digits.py']
custom_imports = dict(imports=['fault_injection'], allow_failed_imports=False)
task = dict(model=dict(width=4), optimizer=dict(lr=1e-2), epochs=10, batch_size=16,
            log_interval=1000)
scorer = dict(engine=dict(chunk_size=10), log_interval=1000)
al = dict(num_rounds=3, budget=5, subset_size=40, schedule=dict(type='{schedule}'))
hooks = []
"""


def run_tool(cfg, work_dir, kill_at=None, resume=False):
    env = dict(os.environ, PYTHONPATH=f'{TESTS}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    env.pop('SAAL_KILL_AT', None)
    if kill_at:
        env['SAAL_KILL_AT'] = kill_at
    cmd = [sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(cfg), '--work-dir',
           str(work_dir)] + (['--resume'] if resume else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def outcome(work_dir):
    """What must not depend on interruptions: labels with their rounds, metrics, selections."""
    manifest = json.loads((work_dir / 'manifest.json').read_text())
    with np.load(work_dir / manifest['pool_state']) as state:
        pool = (state['sample_ids'].tolist(), state['rounds'].tolist())
    metrics = [{k: v for k, v in json.loads(line).items() if not k.endswith('_s')}
               for line in (work_dir / 'metrics.jsonl').read_text().splitlines()]
    selections = [json.loads(p.read_text())['sample_ids']
                  for p in sorted(work_dir.glob('rounds/round_*/selected.json'))]
    return pool, metrics, selections


@pytest.fixture(scope='module')
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cfg')
    out = {}
    for mode in ('scratch', 'continue'):
        path = folder / f'tiny_{mode}.py'
        path.write_text(CONFIG.format(root=ROOT, schedule=f'{mode.capitalize()}Schedule'))
        out[mode] = path
    return out


@pytest.fixture(scope='module')
def reference_dirs(configs, tmp_path_factory):
    """The work dir of an uninterrupted run per schedule."""
    dirs = {}
    for mode, cfg in configs.items():
        work_dir = tmp_path_factory.mktemp(f'ref_{mode}')
        proc = run_tool(cfg, work_dir)
        assert proc.returncode == 0, proc.stderr
        dirs[mode] = work_dir
    return dirs


@pytest.fixture(scope='module')
def uninterrupted(reference_dirs):
    return {mode: outcome(work_dir) for mode, work_dir in reference_dirs.items()}


KILL_POINTS = [
    ('train:2:7', 'scratch'),                        # mid-training, round 2
    ('score:2:3', 'scratch'),                        # mid-scoring, round 2
    ('select:2', 'scratch'),                         # right after selection, round 2
    ('write:round_002/pool_state.npz', 'scratch'),   # while writing the labeled state
    ('write:manifest.json', 'scratch'),              # while recording the first stage
    ('train:3:5', 'continue'),                       # continued training needs round 2's model
    ('write:round_001/model.pth', 'continue'),       # while writing a checkpoint
]


@pytest.mark.slow
@pytest.mark.parametrize('kill_at, mode', KILL_POINTS)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, configs, uninterrupted, kill_at,
                                                  mode):
    killed = run_tool(configs[mode], tmp_path, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / 'metrics.jsonl').exists() or \
        len((tmp_path / 'metrics.jsonl').read_text().splitlines()) < 4
    resumed = run_tool(configs[mode], tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert outcome(tmp_path) == uninterrupted[mode]
    assert not list(tmp_path.rglob('*.tmp'))  # no half-written file survives the resume


@pytest.mark.slow
def test_sigkill_at_seeded_random_times_then_resume_equals_uninterrupted(
        tmp_path, configs, reference_dirs, uninterrupted):
    """Three SIGKILLs at seeded random moments (imports, training, scoring, writes: wherever
    they land), each followed by a restart; the finished run equals the uninterrupted one in
    every recorded state file, byte for byte."""
    env = dict(os.environ, PYTHONPATH=f'{TESTS}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    env.pop('SAAL_KILL_AT', None)
    delays = np.random.default_rng(2026).uniform(2.0, 9.0, size=3)
    cmd = [sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(configs['scratch']),
           '--work-dir', str(tmp_path)]
    killed = 0
    for delay in [*delays, None]:
        # A kill before the run left any trace (during imports) is restarted as a new run.
        started = (tmp_path / 'manifest.json').exists() or (tmp_path / 'run.log').exists()
        proc = subprocess.Popen(cmd + (['--resume'] if started else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            _, err = proc.communicate(timeout=300 if delay is None else float(delay))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            killed += 1
            continue
        assert proc.returncode == 0, err.decode()
        if delay is None:
            break
    assert killed >= 1  # the delays are shorter than a run: at least one kill landed
    reference = json.loads((reference_dirs['scratch'] / 'manifest.json').read_text())['files']
    assert json.loads((tmp_path / 'manifest.json').read_text())['files'] == reference
    assert outcome(tmp_path) == uninterrupted['scratch']
