"""Damaged state, moved data and competing processes (docs/reliability.md, cases 25-37).

Each case that reports a problem ends in one line naming the file or key and the fix, and
leaves every file already written as it was (``snapshot`` before and after).
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saal_tasks.core.errors import ConfigError, ResumeError, StateCorruptedError, WorkDirError
from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.engine.identity import PoolChangedError
from saal_tasks.registry import DATASETS

from test_errors import make_cfg, make_image_folder, one_line, run, snapshot

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'configs' / 'cls' / 'saal_cnn_digits.py'
TINY = ['--cfg-options', 'al.num_rounds=1', 'task.epochs=1', 'task.model.width=4']


def run_tool(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, **(env or {})})


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a tool that exited with 2."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
    return lines[0]


def folder_cfg(tmp_path: Path, **al):
    return make_cfg(tmp_path / 'w', dataset=dict(type='ImageFolderData',
                                                 root=str(tmp_path / 'imgs'), grayscale=True),
                    **{**dict(initial_size=6, budget=2, subset_size=10, num_rounds=2), **al})


def stop_after_round(cfg, round_idx: int) -> None:
    """Run ``cfg`` and stop it (as a crash would) once round ``round_idx`` is committed."""
    loop = ActiveLearningLoop.from_cfg(cfg)

    class Stop(Exception):
        pass

    class StopHook:
        def __getattr__(self, name):
            return lambda *a, **k: None

        def after_round(self, loop, r, record):
            if r == round_idx:
                raise Stop

    loop.hooks.append(StopHook())
    with pytest.raises(Stop):
        loop.run()


def metrics_without_timings(work_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.endswith('_s')}
            for line in (work_dir / 'metrics.jsonl').read_text().splitlines()]


# ----------------------------------------------------------------------------- identity
def test_25_ids_pointing_at_other_files_refuse_to_resume(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    cfg = folder_cfg(tmp_path)
    stop_after_round(cfg, 1)
    keys = json.loads((tmp_path / 'w' / 'rounds' / 'round_000' / 'sample_keys.json').read_text())
    assert len(keys) == 24 and keys['0'].startswith('train/a/000.png ')
    before = snapshot(tmp_path / 'w')
    # Same count: one image added to class a, one deleted from class c; ids 8.. now shift.
    (tmp_path / 'imgs' / 'train' / 'a' / '000.png').rename(tmp_path / 'imgs' / 'train' / 'a'
                                                           / '100.png')
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / 'imgs' / 'train' / 'a'
                                                       / '101.png')
    (tmp_path / 'imgs' / 'train' / 'c' / '007.png').unlink()
    with pytest.raises(PoolChangedError) as info:
        run(cfg, resume=True)
    text = one_line(info.value)
    assert 'id 0: train/a/000.png is now train/a/001.png' in text
    assert '24 sample id(s)' in text and 'restore the dataset folder' in text
    assert snapshot(tmp_path / 'w') == before


def test_25_unchanged_or_touched_folder_resumes(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    cfg = folder_cfg(tmp_path)
    stop_after_round(cfg, 1)
    os.utime(tmp_path / 'imgs' / 'train' / 'a' / '000.png', (0, 0))  # content is what counts
    records = run(cfg, resume=True)
    assert [r['round'] for r in records] == [1, 2, 3]


def test_25_import_refuses_changed_files(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    cfg = folder_cfg(tmp_path)
    cfg.oracle = dict(type='FileOracle')
    assert ActiveLearningLoop.from_cfg(cfg).run() == []  # round 0's query is exported
    answers = tmp_path / 'answers.csv'
    answers.write_text('sample_id,label\n' + ''.join(f'{i},0\n' for i in range(24)))
    before = snapshot(tmp_path / 'w')
    bad = tmp_path / 'imgs' / 'train' / 'b' / '002.png'
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad)  # same name, other content
    with pytest.raises(PoolChangedError) as info:
        ActiveLearningLoop.from_cfg(cfg).import_answers(answers)
    assert '1 sample id(s)' in one_line(info.value)
    assert 'id 10: train/b/002.png changed' in str(info.value)
    assert snapshot(tmp_path / 'w') == before


# ----------------------------------------------------------------------------- state files
@pytest.mark.parametrize('damage', ['delete', 'truncate', 'edit'])
def test_26_metrics_jsonl_is_rebuilt_from_the_round_files(tmp_path, damage):
    reference = make_cfg(tmp_path / 'ref', num_rounds=2)
    run(reference)
    cfg = make_cfg(tmp_path / 'w', num_rounds=2)
    stop_after_round(cfg, 1)
    path = tmp_path / 'w' / 'metrics.jsonl'
    original = path.read_text()
    if damage == 'delete':
        path.unlink()
    elif damage == 'truncate':
        path.write_text(original[:len(original) // 2])
    else:
        path.write_text(original.replace('"round": 1', '"round": 7'))
    records = run(cfg, resume=True)
    assert [r['round'] for r in records] == [1, 2, 3]
    assert path.read_text().startswith(original)  # round 1's line, timings and all, is back
    assert metrics_without_timings(tmp_path / 'w') == metrics_without_timings(tmp_path / 'ref')


def test_27_manifest_with_fields_of_the_wrong_type(tmp_path):
    cfg = make_cfg(tmp_path / 'w', num_rounds=2)
    stop_after_round(cfg, 1)
    path = tmp_path / 'w' / 'manifest.json'
    for field, value in (('stages', 'train'), ('round', '1'), ('files', ['x']),
                         ('completed_round', True), ('stages', ['train', 'cook'])):
        data = json.loads(path.read_text())
        good = data[field]
        data[field] = value
        path.write_text(json.dumps(data))
        before = snapshot(tmp_path / 'w')
        with pytest.raises(StateCorruptedError) as info:
            run(cfg, resume=True)
        text = one_line(info.value)
        assert str(path) in text and field in text and 'is corrupted' in text
        assert snapshot(tmp_path / 'w') == before
        data[field] = good
        path.write_text(json.dumps(data))
    assert [r['round'] for r in run(cfg, resume=True)] == [1, 2, 3]


def test_28_config_change_that_cannot_run_changes_nothing(tmp_path):
    cfg = make_cfg(tmp_path / 'w', num_rounds=2)
    stop_after_round(cfg, 1)
    before = snapshot(tmp_path / 'w')
    wider = make_cfg(tmp_path / 'w', num_rounds=2)
    wider.task.model.width = 8
    with pytest.raises(ResumeError) as info:
        run(wider, resume=True, allow_config_change=True)
    text = one_line(info.value)
    assert 'round_001/model.pth does not fit the model' in text and 'size mismatch' in text
    assert snapshot(tmp_path / 'w') == before  # config.json and the manifest's hash agree
    assert [r['round'] for r in run(cfg, resume=True)] == [1, 2, 3]


def test_28_accepted_config_change_is_recorded_with_its_checksum(tmp_path):
    cfg = make_cfg(tmp_path / 'w', num_rounds=2)
    stop_after_round(cfg, 1)
    more = make_cfg(tmp_path / 'w', num_rounds=2)
    more.task.epochs = 2
    run(more, resume=True, allow_config_change=True)
    manifest = json.loads((tmp_path / 'w' / 'manifest.json').read_text())
    assert json.loads((tmp_path / 'w' / 'config.json').read_text())['task']['epochs'] == 2
    assert 'config.json' in manifest['files']
    assert any('task.epochs' in h for h in manifest['history'])
    run(more, resume=True)  # the new config is the run's config now: no refusal


def test_29_edited_config_json_is_named(tmp_path):
    cfg = make_cfg(tmp_path / 'w', num_rounds=2)
    stop_after_round(cfg, 1)
    path = tmp_path / 'w' / 'config.json'
    path.write_text(path.read_text().replace('"epochs": 1', '"epochs": 3'))
    before = snapshot(tmp_path / 'w')
    with pytest.raises(StateCorruptedError) as info:
        run(cfg, resume=True)
    assert f'state file {path} is corrupted' in one_line(info.value)
    assert snapshot(tmp_path / 'w') == before


# ----------------------------------------------------------------------------- processes
def test_30_second_process_on_one_work_dir_is_refused(tmp_path):
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    with open(work_dir / '.lock', 'w') as held:  # a run in progress holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write('4242\n')
        held.flush()
        line = error_line(run_tool(DEMO, '--work-dir', work_dir, *TINY))
        assert 'another process (PID 4242) is running in' in line and str(work_dir) in line
        with pytest.raises(WorkDirError, match='PID 4242'):
            run(make_cfg(work_dir))
    assert not (work_dir / 'manifest.json').exists() and not (work_dir / 'run.log').exists()
    run(make_cfg(work_dir, num_rounds=0))  # free again once the holder is gone


def test_31_work_dir_that_is_a_file_fails_before_run_log(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    line = error_line(run_tool(DEMO, '--work-dir', blocker / 'w', *TINY))
    assert f'work directory {blocker / "w"} is not writable' in line
    assert blocker.read_text() == 'not a folder'


def test_32_resume_of_a_run_killed_before_its_first_state_file(tmp_path):
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    (work_dir / 'run.log').write_text('killed while building the task\n')
    proc = run_tool(DEMO, '--work-dir', work_dir, '--resume', *TINY)
    assert proc.returncode == 0, proc.stderr
    assert 'holds no finished stage: starting the run' in proc.stdout + proc.stderr
    assert json.loads((work_dir / 'manifest.json').read_text())['completed_round'] == 2
    # An empty or missing folder still has nothing to resume.
    line = error_line(run_tool(DEMO, '--work-dir', tmp_path / 'empty', '--resume', *TINY))
    assert 'nothing to resume in' in line


def test_33_launcher_pytorch_without_torchrun(tmp_path):
    env = {k: '' for k in ()}
    clean = {k: v for k, v in os.environ.items()
             if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'train_al.py'), str(DEMO),
                           '--work-dir', str(tmp_path / 'w'), '--launcher', 'pytorch', *TINY],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**clean, **env})
    line = error_line(proc)
    assert '--launcher pytorch needs the environment torchrun sets' in line
    assert 'RANK' in line and 'torchrun --nproc_per_node=N' in line
    assert not (tmp_path / 'w').exists()


# ----------------------------------------------------------------------------- pixel data
def test_34_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    path = tmp_path / 'imgs' / 'train' / 'a' / '000.png'
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024  # 0 .. 64512
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith('I')
    data = DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs'),
                               grayscale=True))
    assert np.array_equal(data.train_x[0, 0].numpy(), (values >> 8).astype(np.uint8))
    rgb = DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs')))
    assert np.array_equal(rgb.train_x[0].numpy(), np.repeat((values >> 8)[None], 3, 0))


def test_35_decompression_bomb_is_named_or_skipped(tmp_path, monkeypatch):
    make_image_folder(tmp_path / 'imgs')
    big = tmp_path / 'imgs' / 'train' / 'b' / '001.png'
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(big)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 500)  # 40x40 > 2 x 500: PIL refuses it
    cfg = dict(type='ImageFolderData', root=str(tmp_path / 'imgs'), grayscale=True)
    with pytest.raises(ConfigError) as info:
        DATASETS.build(cfg)
    text = one_line(info.value)
    assert f'image {big} is too large to decode safely' in text and "on_corrupt='skip'" in text
    skipped = DATASETS.build({**cfg, 'on_corrupt': 'skip'})
    assert len(skipped.train_y) == 23 and 9 not in skipped.train_ids.tolist()


def test_36_truncated_png_body_is_found_at_build(tmp_path):
    make_image_folder(tmp_path / 'imgs', size=32)
    bad = tmp_path / 'imgs' / 'test' / 'c' / '004.png'
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) - 40])  # header intact, pixel data cut
    with pytest.raises(ConfigError) as info:
        DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs')))
    assert f'corrupt or truncated image {bad}' in one_line(info.value)


def test_37_empty_class_folder_is_refused(tmp_path):
    make_image_folder(tmp_path / 'imgs')
    (tmp_path / 'imgs' / 'train' / 'd').mkdir()
    with pytest.raises(ConfigError) as info:
        DATASETS.build(dict(type='ImageFolderData', root=str(tmp_path / 'imgs')))
    text = one_line(info.value)
    assert f'class folder {tmp_path / "imgs" / "train" / "d"} holds no images' in text


def test_a_full_disk_or_a_file_in_the_way_at_file_creation_is_one_line(tmp_path, monkeypatch):
    """Case 45: the temporary file and the folder are part of the write (no traceback)."""
    import errno
    import tempfile

    from saal_tasks.core.io import atomic_write_json

    target = tmp_path / 'state.json'
    target.write_text('{"old": 1}')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(tempfile, 'mkstemp', full)
    with pytest.raises(WorkDirError, match='No space left on device') as info:
        atomic_write_json(target, {'new': 2})
    assert str(target) in one_line(info.value)
    assert target.read_text() == '{"old": 1}'
    monkeypatch.undo()

    (tmp_path / 'blocker').write_text('a file where a folder should be')
    with pytest.raises(WorkDirError, match='Not a directory|File exists') as info:
        atomic_write_json(tmp_path / 'blocker' / 'sub' / 'x.json', {})
    assert 'blocker' in one_line(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['blocker', 'state.json']
