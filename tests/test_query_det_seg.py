"""Query mode for detection and segmentation: a trained model and data nobody has labeled.

Detection reads a folder of images or a COCO file of images (``image_info_*.json``), picks
the files the loop's round picked with the same model and candidates, and exports
``query_coco.json`` with the model's boxes as pre-annotations that read back as answers.
Segmentation reads a folder of images and chooses, per image, exactly the regions the loop's
round chose with the same model; label PNGs for the listed files read back as the queried
pixels. Bad ``--data`` is one ``error:`` line.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from saal_tasks.core.oracle import validate_answers  # noqa: E402
from saal_tasks.engine import ActiveLearningLoop  # noqa: E402
from saal_tasks.engine.query import load_model_file, run_query  # noqa: E402
from saal_tasks.registry import SCORERS, SELECTORS, TASKS  # noqa: E402
from saal_tasks.tasks.detection.demo import write_coco_demo  # noqa: E402
from saal_tasks.oracles.file_oracle import restrict_answers  # noqa: E402
from saal_tasks.tasks.detection.task import DetectionTask  # noqa: E402
from saal_tasks.tasks.segmentation.task import SegmentationTask  # noqa: E402

from seg_helpers import tiny_seg_cfg, write_tiny_seg_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO_CONFIG = ROOT / 'configs' / 'det' / 'ssd_tiny_coco_demo.py'
UNLABELED = 'annotations/image_info_unlabeled2017.json'

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _query_tool(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'query.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- detection
@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    """A one-round run of the COCO demo config on generated COCO data, its round-1 model and
    one query of the unlabeled COCO file through the tool."""
    tmp = tmp_path_factory.mktemp('det_query')
    root = tmp / 'coco'
    write_coco_demo(root, splits={'train2017': 12, 'val2017': 2, 'unlabeled2017': 5},
                    image_size=(96, 128), seed=2)
    cfg = Config.fromfile(str(COCO_CONFIG))
    cfg.task.data_root = str(root) + '/'
    cfg.task.train_dataloader.batch_size = 4
    cfg.task.train_cfg.max_epochs = 1
    cfg.task.pseudo_score_thr = 0.0  # a barely trained detector's boxes are below 0.5
    cfg.task.model.test_cfg.max_per_img = 10
    cfg.al = dict(num_rounds=1, budget=3, subset_size=None, initial_size=4,
                  initial_set=dict(type='RandomInitialSet'),
                  schedule=dict(type='ScratchSchedule'))
    cfg.hooks = []
    cfg.work_dir = str(tmp / 'run')
    ActiveLearningLoop.from_cfg(cfg).run()
    config = tmp / 'coco_demo.py'
    cfg.dump(str(config))
    checkpoint = tmp / 'run' / 'rounds' / 'round_001' / 'model.pth'
    out = tmp / 'coco_query'
    proc = _query_tool(config, '--checkpoint', checkpoint, '--data', root / UNLABELED,
                       '--budget', 3, '--out', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cfg, config, checkpoint, root, out, proc.stdout


def test_folder_query_picks_the_files_the_loop_picked(detector, tmp_path):
    cfg, config, checkpoint, root, _, _ = detector
    run = Path(cfg.work_dir) / 'rounds' / 'round_001'
    with np.load(run / 'scores.npz') as data:
        candidates, scores = data['sample_ids'], data['scores']
    loop_picks = json.loads((run / 'selected.json').read_text())['sample_ids']
    task = TASKS.build(cfg.task)
    name = {int(i): Path(task.sample_files(np.array([i]))[int(i)]).name for i in candidates}
    folder = tmp_path / 'candidates'  # the round's candidates, as files a user would have
    folder.mkdir()
    for sid in candidates:
        shutil.copy(root / 'train2017' / name[int(sid)], folder)
    out = tmp_path / 'out'
    proc = _query_tool(config, '--checkpoint', checkpoint, '--data', folder, '--budget', 3,
                       '--out', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(out / 'selected.csv')
    assert [r['source'] for r in rows] == [name[i] for i in loop_picks]
    every = np.load(out / 'scores.npz')['scores']
    np.testing.assert_array_equal(every, scores)                    # bit for bit, in order


def test_coco_file_query_picks_what_the_configured_pool_picks(detector, tmp_path):
    cfg, _, checkpoint, root, out, stdout = detector
    assert 'picked 3 of 5' in stdout
    rows = _rows(out / 'selected.csv')
    # The same file configured as the pool of the training config, queried in-process.
    pool_cfg = cfg.task.copy()
    pool_cfg.train_dataloader.dataset.ann_file = UNLABELED
    pool_cfg.train_dataloader.dataset.data_prefix = dict(img='unlabeled2017/')
    task = TASKS.build(pool_cfg)
    model = load_model_file(task, checkpoint)
    outcome = run_query(task, SCORERS.build(cfg.scorer), SELECTORS.build(cfg.selector), model,
                        3, tmp_path / 'q', seed=int(cfg.get('seed', 0)))
    assert [int(r['sample_id']) for r in rows] == outcome.sample_ids.tolist()
    assert [float(r['score']) for r in rows] == outcome.scores.tolist()  # bit for bit
    assert all((root / 'unlabeled2017' / Path(r['source']).name).is_file() for r in rows)


def test_coco_export_carries_the_model_boxes_and_reads_back_as_answers(detector):
    cfg, _, checkpoint, root, out, _ = detector
    query = json.loads((out / 'images' / 'query_coco.json').read_text())
    picked = [int(r['sample_id']) for r in _rows(out / 'selected.csv')]
    assert [image['id'] for image in query['images']] == picked
    assert [c['name'] for c in query['categories']] == list(cfg.classes)
    for image in query['images']:
        assert (out / 'images' / 'images' / image['file_name']).is_file()
    # The boxes are the model's own predictions (pseudo-boxes, in image pixels, with scores).
    task = TASKS.build(DetectionTask.query_config(cfg.task, str(root / UNLABELED)))
    predicted = task.predict_annotations(load_model_file(task, checkpoint), np.array(picked))
    assert len(query['annotations']) == sum(len(b) for b in predicted.values()) > 0
    first = [a for a in query['annotations'] if a['image_id'] == picked[0]][0]
    x1, y1, x2, y2 = predicted[picked[0]][0]['bbox']
    np.testing.assert_allclose(first['bbox'], [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
    assert first['score'] == pytest.approx(predicted[picked[0]][0]['score'])
    # Corrected or not, the file is an answer file the task reads.
    answers = validate_answers(task, np.array(picked),
                               task.read_answers(out / 'images' / 'query_coco.json'))
    assert sorted(answers) == sorted(picked)
    assert [len(answers[i]) for i in picked] == [len(predicted[i]) for i in picked]
    page = (out / 'report.html').read_text()
    assert page.count('class="thumb') == 3 and 'predicted ' in page


def test_folder_query_scores_each_file_as_the_coco_query(detector, tmp_path):
    cfg, config, checkpoint, root, coco_out, _ = detector
    folder = tmp_path / 'my images'
    for k, image in enumerate(sorted((root / 'unlabeled2017').iterdir())):
        (folder / ('a' if k % 2 else 'b')).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / ('a' if k % 2 else 'b') / image.name)
    (folder / 'notes.txt').write_text('not an image')
    out = tmp_path / 'out'
    proc = _query_tool(config, '--checkpoint', checkpoint, '--data', folder, '--budget', 5,
                       '--out', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _rows(out / 'selected.csv')
    assert sorted(r['source'] for r in rows) == sorted(
        str(p.relative_to(folder)) for p in folder.rglob('*.jpg'))
    coco_scores = {Path(r['source']).name: float(r['score'])
                   for r in _rows(coco_out / 'selected.csv')}
    folder_scores = {Path(r['source']).name: float(r['score']) for r in rows}
    assert {name: folder_scores[name] for name in coco_scores} == coco_scores
    # A second run with the same arguments reuses the folder and picks the same images.
    picked = (out / 'selected.csv').read_bytes()
    again = _query_tool(config, '--checkpoint', checkpoint, '--data', folder, '--budget', 5,
                        '--out', out)
    assert again.returncode == 0 and (out / 'selected.csv').read_bytes() == picked
    # Another file in the folder is another query: the old folder is refused.
    Image.new('RGB', (64, 48), (30, 90, 200)).save(folder / 'b' / 'new.png')
    changed = _query_tool(config, '--checkpoint', checkpoint, '--data', folder, '--budget', 5,
                          '--out', out)
    assert changed.returncode == 2 and 'holds a query of other inputs' in changed.stderr


def test_bad_detection_data_is_one_line(detector, tmp_path):
    _, config, checkpoint, _, _, _ = detector
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'list.txt').write_text('a.jpg\n')
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'x.jpg').write_bytes(b'not a jpeg')
    cases = [(tmp_path / 'none', 'does not exist'),
             (tmp_path / 'list.txt', 'neither a folder nor a COCO .json file'),
             (tmp_path / 'empty', 'no images'),
             (tmp_path / 'broken', 'cannot be read')]
    for data, expected in cases:
        proc = _query_tool(config, '--checkpoint', checkpoint, '--data', data, '--budget', 2,
                           '--out', tmp_path / 'out')
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
        assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------------------- segmentation
@pytest.fixture(scope='module')
def seg_run(tmp_path_factory):
    """The tiny RI-SAAL run (selections at iterations 6 and 9) and its config file."""
    tmp = tmp_path_factory.mktemp('seg_query')
    demo = write_tiny_seg_data(tmp / 'data')
    cfg = tiny_seg_cfg(demo, tmp / 'run')
    ActiveLearningLoop.from_cfg(cfg).run()
    config = tmp / 'tiny_seg.py'
    cfg.dump(str(config))
    return cfg, config, demo, tmp / 'run'


def test_segmentation_folder_query_chooses_the_regions_the_loop_chose(seg_run, tmp_path):
    cfg, config, demo, work_dir = seg_run
    folder = demo / 'cityscapes' / 'leftImg8bit' / 'train'  # the run's target images
    out = tmp_path / 'out'
    proc = _query_tool(config, '--checkpoint', work_dir / 'rounds/round_001/model.pth',
                       '--data', folder, '--out', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loop = json.loads((work_dir / 'rounds/round_001/selected.json').read_text())
    query = json.loads((out / 'selected.json').read_text())
    by_id = dict(zip(query['sample_ids'], query['units']))
    assert sorted(by_id) == sorted(loop['sample_ids'])
    assert all(by_id[i] == u for i, u in zip(loop['sample_ids'], loop['units']))
    assert query['num_units'] == loop['num_units'] > 0
    rows = _rows(out / 'selected.csv')
    scores = [float(r['score']) for r in rows]
    assert scores == sorted(scores, reverse=True)                 # best image first
    assert [int(r['num_units']) for r in rows] == [len(by_id[int(r['sample_id'])])
                                                   for r in rows]
    assert all((folder / r['source']).is_file() for r in rows)
    # Each image and a mask of exactly its chosen pixels, at the target size.
    height, width = cfg.task.target_size
    for r in rows:
        sid = int(r['sample_id'])
        mask = np.asarray(Image.open(out / 'images' / f'sample_{sid:06d}_mask.png'))
        assert mask.shape == (height, width)
        assert np.flatnonzero(mask.reshape(-1)).tolist() == by_id[sid]
    assert (out / 'report.html').read_text().count('class="thumb') == len(rows)
    # Label PNGs named as the listing says, in a zip, read back as the queried pixels only.
    listing = json.loads((out / 'images' / 'query.json').read_text())
    assert listing['sample_ids'] == [int(r['sample_id']) for r in rows]
    answers = tmp_path / 'answers.zip'
    with zipfile.ZipFile(answers, 'w') as archive:
        for entry in listing['files']:
            label = np.full((height, width), entry['sample_id'] % 16, dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(label).save(buffer, format='PNG')
            archive.writestr(f'labels/{entry["answer"]}', buffer.getvalue())
    task = TASKS.build(SegmentationTask.query_config(cfg.task, str(folder)))
    read = validate_answers(task, np.array(listing['sample_ids']), restrict_answers(
        task, task.read_answers(answers), listing['sample_ids'], listing['units']))
    for sid, units in zip(listing['sample_ids'], listing['units']):
        assert read[sid]['units'].tolist() == units
        assert set(read[sid]['labels'].tolist()) == {sid % 16}


def test_segmentation_budget_keeps_the_best_images(seg_run, tmp_path):
    _, config, demo, work_dir = seg_run
    folder = demo / 'cityscapes' / 'leftImg8bit' / 'train'
    args = ('--checkpoint', work_dir / 'rounds/round_001/model.pth', '--data', folder)
    whole = _query_tool(config, *args, '--out', tmp_path / 'all')
    two = _query_tool(config, *args, '--budget', 2, '--out', tmp_path / 'two')
    assert whole.returncode == 0 and two.returncode == 0, two.stderr
    every = _rows(tmp_path / 'all' / 'selected.csv')
    assert _rows(tmp_path / 'two' / 'selected.csv') == every[:2]
    assert 'picked 2 of 6' in two.stdout


@pytest.mark.parametrize('budget', [None, 2])
def test_segmentation_query_streams_chunks_as_one_call(seg_run, tmp_path, budget):
    """A query scores and selects al.unit_chunk images at a time, as a round does: the picks,
    their pixels and every score equal one call over all images, and no map is written."""
    cfg, _, demo, work_dir = seg_run
    folder = demo / 'cityscapes' / 'leftImg8bit' / 'train'
    task = TASKS.build(SegmentationTask.query_config(cfg.task, str(folder)))
    model = load_model_file(task, work_dir / 'rounds/round_001/model.pth')
    outcomes = {chunk: run_query(task, SCORERS.build(cfg.scorer), SELECTORS.build(cfg.selector),
                                 model, budget, tmp_path / f'chunk_{chunk}', unit_chunk=chunk)
                for chunk in (None, 4, 1)}
    whole = outcomes[None]
    for chunk in (4, 1):
        got = outcomes[chunk]
        assert got.sample_ids.tolist() == whole.sample_ids.tolist()
        assert [u.tolist() for u in got.units] == [u.tolist() for u in whole.units]
        assert got.scores.tolist() == whole.scores.tolist()
        assert got.result.scores.tolist() == whole.result.scores.tolist()
        assert (tmp_path / f'chunk_{chunk}' / 'selected.json').read_bytes() == \
            (tmp_path / 'chunk_None' / 'selected.json').read_bytes()
        with np.load(tmp_path / f'chunk_{chunk}' / 'scores.npz') as saved:
            assert not [k for k in saved.files if k.startswith('units_')]
    with np.load(tmp_path / 'chunk_None' / 'scores.npz') as saved:
        assert [k for k in saved.files if k.startswith('units_')]  # one call keeps its maps
    # Rerun on a finished folder: nothing is scored again, the same picks come back.
    again = run_query(task, SCORERS.build(cfg.scorer), SELECTORS.build(cfg.selector), model,
                      budget, tmp_path / 'chunk_4', unit_chunk=4)
    assert again.sample_ids.tolist() == whole.sample_ids.tolist()


def test_bad_segmentation_data_is_one_line(seg_run, tmp_path):
    _, config, _, work_dir = seg_run
    (tmp_path / 'labels.json').write_text('{}')
    for data, expected in [(tmp_path / 'none', 'does not exist: check --data'),
                           (tmp_path / 'labels.json', 'is a file, not a folder of images')]:
        proc = _query_tool(config, '--checkpoint', work_dir / 'rounds/round_001/model.pth',
                           '--data', data, '--out', tmp_path / 'out')
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
