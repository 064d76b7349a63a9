"""Detection labeled by people: COCO export with pre-annotations, COCO import, resume.

A tiny SSD on 10 generated VOC-layout pool images, 1 epoch per round: a run whose answers are
the ground truth written as annotation tools export COCO (renumbered images, other category
ids, hash-prefixed file names, CVAT's zip) must end exactly like the simulated-oracle run.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402

from saal_tasks.core.errors import AnnotationError, ConfigError  # noqa: E402
from saal_tasks.core.oracle import QueryPending  # noqa: E402
from saal_tasks.engine import ActiveLearningLoop  # noqa: E402
from saal_tasks.tasks.detection.label_files import (QUERY_COCO, from_coco_box,  # noqa: E402
                                                    sample_id_of, to_coco_box)
from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo  # noqa: E402
from test_detection import tiny_cfg  # noqa: E402

SPLITS = (DemoSplit('VOC2007', 'trainval', 6), DemoSplit('VOC2007', 'test', 4, first_number=101),
          DemoSplit('VOC2012', 'trainval', 4, id_prefix='2008_'))
#: Category ids as a tool might number them (Label Studio counts from 0), in another order,
#: plus a label the task does not know and nobody used.
TOOL_CATEGORIES = [{'id': 0, 'name': 'person'}, {'id': 7, 'name': 'bottle'},
                   {'id': 3, 'name': 'unused-label'}, {'id': 5, 'name': 'car'}]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=3)
    return root


def make_cfg(voc_root: Path, work_dir: Path, oracle: str = 'FileOracle') -> Config:
    # An SSD trained for 2 steps: threshold 0 keeps its detections as pre-annotations.
    cfg = tiny_cfg(voc_root, pseudo_score_thr=0.0)
    cfg.oracle = dict(type=oracle)
    cfg.hooks = []
    cfg.al = dict(num_rounds=1, budget=3, subset_size=None, initial_size=4,
                  initial_set=dict(type='RandomInitialSet'), schedule=dict(type='ScratchSchedule'))
    cfg.work_dir = str(work_dir)
    return cfg


def coco_answers(task, folder: Path, style: str = 'cvat') -> dict:
    """The ground truth of a query as a tool's COCO export: images renumbered (and, for
    Label Studio, file names prefixed with the upload folder and a hash), categories by name
    with the tool's own ids, pre-annotation scores gone."""
    query = json.loads((folder / QUERY_COCO).read_text())
    ids = [image['id'] for image in query['images']]
    truth = task.ground_truth(np.array(ids))
    cat_id = {c['name']: c['id'] for c in TOOL_CATEGORIES}
    images, annotations = [], []
    for n, image in enumerate(reversed(query['images'])):  # the tool's own order and ids
        name = image['file_name']
        if style == 'label_studio':
            name = f'images/8f2c{n:02d}e1-{name}'
        images.append({'id': 101 + n, 'file_name': name, 'width': image['width'],
                       'height': image['height']})
        for inst in truth[image['id']]:
            annotations.append({'id': len(annotations) + 1, 'image_id': 101 + n,
                                'category_id': cat_id[task.pool.classes[inst['bbox_label']]],
                                'bbox': to_coco_box(inst['bbox']), 'segmentation': [],
                                'area': 1.0, 'iscrowd': inst['ignore_flag'],
                                'attributes': {'occluded': False}})
    return {'images': images, 'categories': TOOL_CATEGORIES, 'annotations': annotations}


def write_answers(coco: dict, path: Path) -> Path:
    if path.suffix == '.zip':  # CVAT's export: annotations/instances_default.json in a zip
        with zipfile.ZipFile(path, 'w') as archive:
            archive.writestr('annotations/instances_default.json', json.dumps(coco))
    else:
        path.write_text(json.dumps(coco))
    return path


def test_box_conversion_and_names():
    assert to_coco_box([10.0, 20.0, 50.0, 80.0]) == [10.0, 20.0, 40.0, 60.0]
    assert from_coco_box([10, 20, 40, 60]) == [10.0, 20.0, 50.0, 80.0]
    assert sample_id_of('/data/upload/3/8f2c01e1-sample_012008000004.jpg') == 12008000004
    assert sample_id_of('sample_000007.jpg') == 7 and sample_id_of('000007.jpg') is None


def test_file_oracle_run_equals_simulated_run(voc_root, tmp_path):
    reference = ActiveLearningLoop.from_cfg(make_cfg(voc_root, tmp_path / 'sim', 'SimulatedOracle'))
    reference.run()

    work = tmp_path / 'human'
    loop = ActiveLearningLoop.from_cfg(make_cfg(voc_root, work))
    loop.run()
    styles = [('label_studio', '.json'), ('cvat', '.zip')]
    for round_idx, (style, suffix) in enumerate(styles):
        assert loop.pending is not None and loop.pending.round_idx == round_idx
        folder = work / 'queries' / f'round_{round_idx:03d}'
        query = json.loads((folder / QUERY_COCO).read_text())
        ids = [image['id'] for image in query['images']]
        assert ids == json.loads((folder / 'query.json').read_text())['sample_ids']
        assert len(ids) == (4 if round_idx == 0 else 3)
        assert query['categories'] == [{'id': k + 1, 'name': name, 'supercategory': ''}
                                       for k, name in enumerate(('bottle', 'car', 'person'))]
        for image in query['images']:
            info = loop.task.pool.data_info(image['id'])
            assert (image['width'], image['height']) == (info['width'], info['height'])
            exported = folder / 'images' / image['file_name']
            assert exported.read_bytes() == Path(info['img_path']).read_bytes()
        if round_idx == 0:  # no model yet: no pre-annotations
            assert query['annotations'] == []
        else:
            check_pre_annotations(loop, query)
        answers = write_answers(coco_answers(loop.task, folder, style),
                                tmp_path / f'answers_{round_idx}{suffix}')
        loop = ActiveLearningLoop.from_cfg(make_cfg(voc_root, work))
        assert loop.import_answers(answers) == (round_idx, len(ids))
        assert (folder / f'answers{suffix}').read_bytes() == answers.read_bytes()
        loop = ActiveLearningLoop.from_cfg(make_cfg(voc_root, work))
        loop.run(resume=True)
    assert loop.pending is None
    assert loop.state == reference.state
    assert [r['mAP'] for r in loop.records] == [r['mAP'] for r in reference.records]
    for round_idx in (0, 1):
        rel = Path('rounds') / f'round_{round_idx:03d}' / 'annotations.json'
        stored = json.loads((work / rel).read_text())
        truth = loop.task.ground_truth(np.array([int(k) for k in stored]))
        assert stored == {str(k): v for k, v in truth.items()}
        assert (work / rel).read_bytes() == (tmp_path / 'sim' / rel).read_bytes()
    model_files = sorted((tmp_path / 'sim' / 'rounds').rglob('model.pth'))
    assert model_files and all(
        (work / p.relative_to(tmp_path / 'sim')).read_bytes() == p.read_bytes()
        for p in model_files)


def check_pre_annotations(loop, query: dict) -> None:
    """The pre-annotations are the round's model's detections, as mmdet's
    ``predict(rescale=True)`` gives them in original-image pixels, with their scores."""
    task, model = loop.task, loop.model
    assert task.latest_model is model
    ids = [image['id'] for image in query['images']]
    by_image = {i: [a for a in query['annotations'] if a['image_id'] == i] for i in ids}
    assert sum(len(v) for v in by_image.values()) > 0
    batch = next(task.pool_batches(np.array(ids), len(ids)))[1]
    with torch.no_grad():
        predictions = model.test_step(batch)
    for sid, pred in zip(ids, predictions):
        expected = pred.pred_instances
        keep = expected.scores >= task.pseudo_score_thr
        got = by_image[sid]
        assert len(got) == int(keep.sum())
        boxes = torch.tensor([from_coco_box(a['bbox']) for a in got],
                             dtype=torch.float64).reshape(-1, 4)
        assert torch.allclose(boxes, expected.bboxes[keep].double(), atol=1e-4)
        assert [a['category_id'] - 1 for a in got] == expected.labels[keep].tolist()
        assert np.allclose([a['score'] for a in got], expected.scores[keep].tolist())
        width, height = task.pool.data_info(sid)['width'], task.pool.data_info(sid)['height']
        assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)).all()


@pytest.fixture(scope='module')
def pending(voc_root, tmp_path_factory):
    """A run waiting for the answers of its initial set, and good answers to it."""
    work = tmp_path_factory.mktemp('pending') / 'run'
    loop = ActiveLearningLoop.from_cfg(make_cfg(voc_root, work))
    loop.run()
    assert loop.pending is not None and loop.pending.round_idx == 0
    return loop, work, coco_answers(loop.task, work / 'queries' / 'round_000')


def _outside(coco):
    image = coco['images'][0]
    ann = next(a for a in coco['annotations'] if a['image_id'] == image['id'])
    ann['bbox'] = [image['width'] - 10.0, 5.0, 20.0, 10.0]


def _unknown_class(coco):
    coco['categories'].append({'id': 9, 'name': 'dog'})
    coco['annotations'][0]['category_id'] = 9


def _missing(coco):
    gone = coco['images'].pop(1)['id']
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != gone]


@pytest.mark.parametrize('edit, message', [
    (lambda c: c['images'].append({'id': 999, 'file_name': 'sample_999999.jpg', 'width': 100,
                                   'height': 100}),
     'answered ids \\[999999\\] that were not queried'),
    (_outside, r'box \[.*\] \[x, y, w, h\] .* leaves the \d+x\d+ image: move it inside'),
    (_unknown_class, "class 'dog' is not one of the task classes"),
    (_missing, 'did not answer queried ids'),
    (lambda c: c['annotations'][0].update(bbox=[5.0, 5.0, 0.0, 10.0]), 'has no area'),
    (lambda c: c['images'][0].update(file_name='IMG_0001.jpg'), 'has no sample_<id>'),
    (lambda c: c['images'].append({**c['images'][0], 'id': 555}), 'more than once'),
    (lambda c: c['annotations'][0].update(image_id=4242), 'not in "images"'),
])
def test_bad_import_is_refused_and_changes_nothing(pending, tmp_path, edit, message):
    loop, work, good = pending
    coco = json.loads(json.dumps(good))
    edit(coco)
    bad = write_answers(coco, tmp_path / 'bad.json')
    before = {p: p.read_bytes() for p in work.rglob('*') if p.is_file()}
    with pytest.raises(AnnotationError, match=message) as info:
        loop.import_answers(bad)
    assert str(bad) in str(info.value) and '\n' not in str(info.value)
    assert {p: p.read_bytes() for p in work.rglob('*') if p.is_file()} == before


def test_export_options_reach_the_task_and_typos_are_refused(pending, tmp_path):
    loop, _, _ = pending
    ids = np.array([1, 2])
    loop.task.latest_model = loop.task.build_model(seed=0)
    root = loop.oracle.root

    def export(round_idx: int) -> Path:
        with pytest.raises(QueryPending):
            loop.oracle.annotate(loop.task, ids, round_idx=round_idx)
        return loop.oracle.query_dir(round_idx)

    try:
        loop.oracle.root = tmp_path / 'queries'
        loop.oracle.export_options = {'pre_annotations': False}
        off = export(91)
        loop.oracle.export_options = {}
        on_dir = export(92)
        loop.oracle.export_options = {'pre_annotation': False}
        with pytest.raises(ConfigError, match='export_options.pre_annotation is not an option.*'
                                              'valid: pre_annotations'):
            export(93)
        assert not loop.oracle.query_dir(93).exists()  # refused before anything is written
    finally:
        loop.oracle.export_options = {}
        loop.oracle.root = root
        loop.task.latest_model = None
    assert json.loads((off / QUERY_COCO).read_text())['annotations'] == []
    # Threshold 0 and an untrained SSD: every image has detections.
    on = json.loads((on_dir / QUERY_COCO).read_text())['annotations']
    assert {a['image_id'] for a in on} == {1, 2} and all(0 <= a['score'] <= 1 for a in on)
