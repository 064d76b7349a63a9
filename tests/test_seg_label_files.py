"""Segmentation labeled by people: region masks out, a zip of label PNGs in, resume.

The tiny RI-SAAL run of tests/test_seg_loop.py (two selections inside one training run) with
``oracle = FileOracle``: it stops at each selection with the images and the masks of the
pixels to label; answers made from the ground truth (a zip of label PNGs, garbage outside the
queried pixels) are imported, and the resumed run ends exactly like the simulated run.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from saal_tasks.engine import ActiveLearningLoop
from saal_tasks.core.errors import AnnotationError

pytest.importorskip('mmseg')
from seg_helpers import SIZE, tiny_seg_cfg, write_tiny_seg_data  # noqa: E402



@pytest.fixture(scope='module')
def demo_root(tmp_path_factory) -> Path:
    return write_tiny_seg_data(tmp_path_factory.mktemp('seg_demo'))


def _cfg(demo_root: Path, work_dir: Path, oracle: str = 'FileOracle') -> Config:
    cfg = tiny_seg_cfg(demo_root, work_dir)
    cfg.oracle = dict(type=oracle)
    return cfg


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format='PNG')
    return buffer.getvalue()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path))


def answer_zip(task, folder: Path, out: Path, edit=None) -> Path:
    """The ground truth of a query as label PNGs in a zip, with every pixel that was not
    asked for set to garbage (17): only the queried pixels may be read."""
    query = json.loads((folder / 'query.json').read_text())
    with zipfile.ZipFile(out, 'w') as archive:
        for k, (entry, units) in enumerate(zip(query['files'], query['units'])):
            sid = entry['sample_id']
            label = np.full(SIZE[0] * SIZE[1], 17, dtype=np.uint8)
            label[units] = task.ground_truth(np.array([sid]))[sid].reshape(-1)[units]
            files = {entry['answer']: label.reshape(SIZE)}
            if edit is not None:
                files = edit(files, units, k)
            for name, array in files.items():
                data = array if isinstance(array, bytes) else _png(array)
                archive.writestr(f'labels/{name}', data)
    return out


def _outputs(work_dir: Path) -> dict[str, bytes]:
    """The run's results: every round file and the metrics without timings (the Runner's
    timestamped training logs are logs, not results)."""
    out = {str(p.relative_to(work_dir)): p.read_bytes()
           for p in sorted((work_dir / 'rounds').rglob('*'))
           if p.is_file() and 'train_logs' not in p.parts}
    records = [json.loads(line) for line in (work_dir / 'metrics.jsonl').read_text().splitlines()
               if line]
    out['metrics'] = json.dumps([{k: v for k, v in r.items() if not k.endswith('_s')}
                                 for r in records], sort_keys=True).encode()
    return out


@pytest.fixture(scope='module')
def pending(demo_root, tmp_path_factory):
    """A file-oracle run stopped at its first selection (round 1)."""
    work = tmp_path_factory.mktemp('seg_pending') / 'run'
    loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, work))
    loop.run()
    return loop, work


def test_query_holds_images_masks_and_units(pending):
    loop, work = pending
    # No initial set (the source is labeled): the first query is the first selection.
    assert loop.pending is not None and loop.pending.round_idx == 1
    assert not (work / 'queries' / 'round_000').exists()
    folder = work / 'queries' / 'round_001'
    query = json.loads((folder / 'query.json').read_text())
    selected = json.loads((work / 'rounds/round_001/selected.json').read_text())
    assert query['sample_ids'] == selected['sample_ids'] and query['units'] == selected['units']
    assert query['size'] == list(SIZE) and len(query['files']) == len(query['sample_ids']) > 0
    round_idx, ids, units = loop.pending_query()
    assert round_idx == 1 and ids.tolist() == selected['sample_ids']
    assert [u.tolist() for u in units] == selected['units']
    for entry, units in zip(query['files'], query['units']):
        sid = entry['sample_id']
        image = _read_png(folder / entry['image'])
        assert np.array_equal(image, loop.task.target.get(sid)[0])
        mask = _read_png(folder / entry['mask'])
        assert mask.shape == SIZE and mask.dtype == np.uint8
        assert sorted(np.flatnonzero(mask.reshape(-1) == 255).tolist()) == sorted(units)
        assert set(np.unique(mask).tolist()) == {0, 255}
        assert entry['num_pixels'] == len(units) and entry['source'].endswith('.png')


def test_file_oracle_run_equals_simulated_run(demo_root, pending, tmp_path):
    reference = tmp_path / 'sim'
    ActiveLearningLoop.from_cfg(_cfg(demo_root, reference, 'SimulatedOracle')).run()
    work = tmp_path / 'human'
    shutil.copytree(pending[1], work)  # the pending run, continued in a copy
    for round_idx in (1, 2):
        loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, work))
        answers = answer_zip(loop.task, work / 'queries' / f'round_{round_idx:03d}',
                             tmp_path / f'answers_{round_idx}.zip')
        count = len(json.loads(
            (work / 'rounds' / f'round_{round_idx:03d}' / 'selected.json').read_text())['units'])
        assert loop.import_answers(answers) == (round_idx, count)
        loop = ActiveLearningLoop.from_cfg(_cfg(demo_root, work))
        loop.run(resume=True)
        assert (loop.pending is None) == (round_idx == 2)
    assert loop.pending is None and [r['round'] for r in loop.records] == [1, 2, 3]
    assert _outputs(work) == _outputs(reference)


def _resized(files, units, k):
    return {name: np.zeros((SIZE[0], SIZE[1] + 1), np.uint8) for name in files}


def _class_17_at_a_queried_pixel(files, units, k):
    out = {}
    for name, label in files.items():
        label = label.copy().reshape(-1)
        label[units[0]] = 17
        out[name] = label.reshape(SIZE)
    return out


def _colour(files, units, k):
    return {name: np.stack([label] * 3, axis=-1) for name, label in files.items()}


@pytest.mark.parametrize('edit, message', [
    (_resized, r'is 65x32 but the query is 64x32 \(width x height\)'),
    (_class_17_at_a_queried_pixel, r'labels must be train ids 0..15 or 255, got \[17\]'),
    (lambda files, units, k: {} if k == 1 else files, 'did not answer queried ids'),
    (lambda files, units, k: {**files, 'sample_000099_label.png': files[next(iter(files))]}
     if k == 0 else files,
     'answered ids \\[99\\] that were not queried'),
    (_colour, 'has mode RGB: save one 8-bit channel'),
    (lambda files, units, k: {n.replace('sample_', 'img_'): v for n, v in files.items()},
     'the name has no sample_<id>'),
])
def test_bad_import_is_refused_and_changes_nothing(pending, tmp_path, edit, message):
    loop, work = pending
    bad = answer_zip(loop.task, work / 'queries' / 'round_001', tmp_path / 'bad.zip', edit)
    before = {p: p.read_bytes() for p in work.rglob('*') if p.is_file()}
    with pytest.raises(AnnotationError, match=message) as info:
        loop.import_answers(bad)
    assert str(bad) in str(info.value) and '\n' not in str(info.value)
    assert {p: p.read_bytes() for p in work.rglob('*') if p.is_file()} == before


def test_answers_that_are_not_a_zip_of_pngs_are_refused(pending, tmp_path):
    loop, _ = pending
    text = tmp_path / 'answers.json'
    text.write_text('{}')
    with pytest.raises(AnnotationError, match='must be one .zip of sample_<id>_label.png'):
        loop.import_answers(text)
    empty = tmp_path / 'empty.zip'
    with zipfile.ZipFile(empty, 'w') as archive:
        archive.writestr('notes.txt', 'nothing')
    with pytest.raises(AnnotationError, match='holds no \\*_label.png file'):
        loop.import_answers(empty)
