"""Extending a finished run with more rounds, and Ctrl-C with the exact resume command.

A finished run's last round trains and evaluates without a query. Resumed with more rounds
(``--allow-config-change``), that round makes its query then, so the extended run equals a
run started with the larger number of rounds, file for file (timings aside).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from saal_tasks.engine.manifest import Manifest

from test_errors import make_cfg, run

ROOT = Path(__file__).resolve().parents[1]


def _records(work_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith('_s')}
            for line in (work_dir / 'metrics.jsonl').read_text().splitlines()]


def _round_files(work_dir: Path, round_idx: int) -> dict[str, bytes]:
    folder = work_dir / 'rounds' / f'round_{round_idx:03d}'
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.suffix in ('.json', '.npz') and p.name != 'metrics.json'}


def _weights(work_dir: Path, round_idx: int) -> dict[str, torch.Tensor]:
    path = work_dir / 'rounds' / f'round_{round_idx:03d}' / 'model.pth'
    return torch.load(path, map_location='cpu', weights_only=True)


def test_extended_run_queries_in_its_old_last_round_and_equals_a_longer_run(tmp_path):
    longer = tmp_path / 'longer'
    run(make_cfg(longer, num_rounds=2))

    extended = tmp_path / 'extended'
    run(make_cfg(extended, num_rounds=1))
    finished = Manifest.load(extended)
    assert finished.round == 2 and 'label' not in finished.stages
    assert not (extended / 'rounds' / 'round_002' / 'selected.json').exists()

    records = run(make_cfg(extended, num_rounds=2), resume=True, allow_config_change=True)
    assert [r['round'] for r in records] == [1, 2, 3]
    assert records[1]['num_selected'] == 5            # before: round 2 never queried
    assert _records(extended) == _records(longer)
    for round_idx in (1, 2):
        assert _round_files(extended, round_idx) == _round_files(longer, round_idx)
    for round_idx in (2, 3):
        ours, theirs = _weights(extended, round_idx), _weights(longer, round_idx)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    manifest = Manifest.load(extended)
    assert manifest.completed_round == 3
    assert any('round 2 queries' in line for line in manifest.history), manifest.history


def test_extension_killed_before_its_first_new_stage_resumes_the_same(tmp_path):
    work_dir = tmp_path / 'run'
    run(make_cfg(work_dir, num_rounds=1))

    class Stop(Exception):
        pass

    from saal_tasks.engine import ActiveLearningLoop
    loop = ActiveLearningLoop.from_cfg(make_cfg(work_dir, num_rounds=2))
    original = loop.scoring.score

    def stop(*args, **kwargs):
        raise Stop

    loop.scoring.score = stop
    try:
        loop.run(resume=True, allow_config_change=True)
    except Stop:
        pass
    else:
        raise AssertionError('scoring was not reached')
    loop.scoring.score = original
    # Killed inside the reopened round, before its query was recorded.
    stopped = Manifest.load(work_dir)
    assert stopped.round == 2 and 'label' not in stopped.stages
    records = run(make_cfg(work_dir, num_rounds=2), resume=True, allow_config_change=True)
    assert [r['round'] for r in records] == [1, 2, 3] and records[1]['num_selected'] == 5


def _default_sigint() -> None:
    # A test run started in the background (nohup, `cmd &`) ignores SIGINT, and a Python
    # started with SIGINT ignored never raises KeyboardInterrupt: give the child the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train_al(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / 'tools' / 'train_al.py'), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'},
                            preexec_fn=_default_sigint)


def test_ctrl_c_prints_the_round_and_the_exact_resume_command(tmp_path):
    work_dir = tmp_path / 'w'
    # 1,000 epochs keep round 1 training for seconds: at 30 the whole run took 2 s and once
    # finished before the interrupt arrived.
    options = ['--cfg-options', 'al.num_rounds=2', 'task.epochs=1000', 'task.model.width=4']
    proc = _train_al('configs/cls/saal_cnn_digits.py', '--work-dir', str(work_dir), *options)
    deadline = time.time() + 300
    log = work_dir / 'run.log'
    while time.time() < deadline:       # interrupt once round 1 has started training
        if log.exists() and 'round 1/3: training' in log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('interrupted in round 1'), err
    assert 'Traceback' not in err
    command = lines[0].split('continue with: ', 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ['python', 'tools/train_al.py'] and '--resume' in argv
    assert argv[argv.index('--work-dir') + 1] == str(work_dir)
    assert argv[argv.index('--cfg-options') + 1:][:3] == options[1:]
    # The printed command continues the run (the config matches: no "different config").
    resumed = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                             cwd=ROOT, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert 'finished: 3 rounds' in resumed.stdout


def test_printed_import_and_resume_commands_carry_the_run_options(tmp_path):
    """train_al (query waiting) -> the import command it prints -> the resume command that
    prints -> finished; the run's --cfg-options travel through both (before, the resume
    command dropped them and the resume refused "a different config")."""
    from test_file_oracle import make_cfg as human_cfg, query_ids

    config = tmp_path / 'human.py'
    human_cfg(tmp_path / 'unused').dump(str(config))
    work_dir = tmp_path / 'run'
    options = ['--cfg-options', 'al.num_rounds=0', 'task.epochs=2']

    def shell(command: str) -> subprocess.CompletedProcess:
        argv = shlex.split(command)
        assert argv[0] == 'python'
        return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)

    first = subprocess.run([sys.executable, 'tools/train_al.py', str(config), '--work-dir',
                            str(work_dir), *options], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    assert first.returncode == 3, first.stderr
    line = next(x for x in first.stdout.splitlines() if x.startswith('import the answers'))
    folder = work_dir / 'queries' / 'round_000'
    ids = query_ids(folder)
    from saal_tasks.engine import ActiveLearningLoop
    truth = ActiveLearningLoop.from_cfg(human_cfg(tmp_path / 'truth')).task.ground_truth(ids)
    answers = tmp_path / 'answers.json'
    answers.write_text(json.dumps({str(i): int(truth[i]) for i in ids}))
    imported = shell(line.split('with: ', 1)[1].replace('ANSWERS', str(answers)))
    assert imported.returncode == 0, imported.stderr
    resume = imported.stdout.strip().splitlines()[-1].split('continue with: ', 1)[1]
    assert shlex.split(resume)[-3:] == options
    done = shell(resume)
    assert done.returncode == 0 and 'finished: 1 rounds, 10 labeled' in done.stdout, \
        done.stdout + done.stderr
