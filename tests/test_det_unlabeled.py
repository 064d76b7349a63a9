"""Unlabeled images are the normal case of a detection pool, in VOC and COCO format.

Images without objects stay in the pool and can be scored and queried (training leaves them
out where the dataset's ``filter_empty_gt`` asks for it, as mmdet does); a COCO file with
images and no annotations is a pool; COCO-format data trains, evaluates with mmdet's
``CocoMetric`` and goes through the file oracle's COCO export and import.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402

from saal_tasks.core.errors import AnnotationError  # noqa: E402
from saal_tasks.registry import SCORERS, TASKS  # noqa: E402
from saal_tasks.tasks.detection.demo import DemoSplit, write_coco_demo, write_voc_demo  # noqa

ROOT = Path(__file__).resolve().parents[1]
VOC_CONFIG = ROOT / 'configs' / 'det' / 'ssd_tiny_voc_demo.py'
COCO_CONFIG = ROOT / 'configs' / 'det' / 'ssd_tiny_coco_demo.py'
COCO_SETS = {'train2017': 12, 'val2017': 6, 'unlabeled2017': 4}

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('coco_demo')
    write_coco_demo(root, splits=COCO_SETS, image_size=(96, 128), seed=2)
    return root


def coco_cfg(root: Path, config: Path = COCO_CONFIG, **task_overrides) -> Config:
    cfg = Config.fromfile(str(config))
    cfg.task.data_root = str(root) + '/'
    cfg.task.train_dataloader.batch_size = 4
    cfg.task.train_cfg.max_epochs = 1
    test_cfg = cfg.task.model.test_cfg.get('rcnn', cfg.task.model.test_cfg)  # two-stage
    test_cfg.max_per_img = 10
    test_cfg.score_thr = 0.0  # an untrained RetinaNet scores below 0.05 everywhere
    cfg.task.pseudo_score_thr = 0.0
    for key, value in task_overrides.items():
        cfg.task[key] = value
    return cfg


def test_voc_images_whose_xml_has_no_object_stay_in_the_pool(tmp_path):
    root = tmp_path / 'VOCdevkit'
    write_voc_demo(root, splits=(DemoSplit('VOC2007', 'trainval', 8),
                                 DemoSplit('VOC2007', 'test', 3, first_number=101)),
                   image_size=(96, 128), seed=1)
    emptied = ['000002', '000005', '000007']
    for img_id in emptied:
        xml = root / 'VOC2007' / 'Annotations' / f'{img_id}.xml'
        xml.write_text(re.sub(r'<object>.*?</object>', '', xml.read_text(), flags=re.S))
    cfg = Config.fromfile(str(VOC_CONFIG))
    cfg.task.data_root = str(root) + '/'
    cfg.task.train_dataloader.dataset = cfg.task.train_dataloader.dataset.datasets[0]
    cfg.task.pseudo_score_thr = 0.0
    task = TASKS.build(cfg.task)
    # Before, filter_empty_gt dropped them from the pool (8 -> 5).
    assert task.sample_ids().tolist() == list(range(1, 9))
    assert [task.ground_truth(np.array([int(i)]))[int(i)] for i in emptied] == [[], [], []]
    model = task.build_model(seed=0).eval()
    scores = SCORERS.build(dict(type='SharpnessScorer',
                                perturbation=dict(type='SAMPerturbation', rho=0.05),
                                engine=dict(type='ReferenceEngine'), objective_reduction='sum',
                                score_reduction='sum')).score(
        task, model, np.array([2, 5, 7]), np.random.default_rng(0))
    assert (scores.scores > 0).all()  # the untrained detector sees objects: scored as any
    # Labeled and empty: kept out of training only, as the dataset's filter_empty_gt says.
    task.set_annotations(task.ground_truth(np.arange(1, 9)))
    assert task._trainable(np.arange(1, 9)).tolist() == [1, 3, 4, 6, 8]
    with pytest.raises(AnnotationError, match='none of the 3 labeled images has an object'):
        task._trainable(np.array([2, 5, 7]))


def test_coco_pool_keeps_images_without_annotations(coco_root):
    task = TASKS.build(coco_cfg(coco_root).task)
    assert len(task.sample_ids()) == COCO_SETS['train2017']
    truth = task.ground_truth(task.sample_ids())
    empty = sorted(i for i, boxes in truth.items() if not boxes)
    assert empty == [6, 12]  # every sixth image of the generated set
    data = json.loads((coco_root / 'annotations' / 'instances_train2017.json').read_text())
    first = [a for a in data['annotations'] if a['image_id'] == 1]
    x, y, w, h = first[0]['bbox']
    assert truth[1][0]['bbox'] == [x, y, x + w, y + h]
    assert truth[1][0]['bbox_label'] == first[0]['category_id'] - 1


def test_a_coco_file_without_annotations_is_a_pool(coco_root):
    cfg = coco_cfg(coco_root)
    cfg.task.train_dataloader.dataset.ann_file = 'annotations/image_info_unlabeled2017.json'
    cfg.task.train_dataloader.dataset.data_prefix = dict(img='unlabeled2017/')
    task = TASKS.build(cfg.task)
    ids = task.sample_ids()
    assert len(ids) == COCO_SETS['unlabeled2017']
    assert all(boxes == [] for boxes in task.ground_truth(ids).values())
    model = task.build_model(seed=0).eval()
    result = SCORERS.build(dict(type='BoxEntropyScorer')).score(task, model, ids,
                                                                 np.random.default_rng(0))
    assert len(result.scores) == len(ids) and (result.scores > 0).all()


@pytest.mark.parametrize('detector', ['ssd', 'retinanet', 'faster_rcnn', 'fcos', 'gfl'])
def test_coco_round_trains_evaluates_with_coco_metric_and_round_trips_the_export(
        coco_root, tmp_path, detector):
    """Each detector family's COCO demo config: a round trains, scores with box-sum SAAL,
    evaluates with CocoMetric, and its COCO export is answered and read back."""
    from saal_tasks.engine import ActiveLearningLoop

    cfg = coco_cfg(coco_root, ROOT / 'configs' / 'det' / f'{detector}_tiny_coco_demo.py')
    cfg.al = dict(num_rounds=1, budget=4, subset_size=None, initial_size=4,
                  initial_set=dict(type='RandomInitialSet'), schedule=dict(type='ScratchSchedule'))
    cfg.hooks = []
    cfg.work_dir = str(tmp_path / 'run')
    loop = ActiveLearningLoop.from_cfg(cfg)
    records = loop.run()
    assert [r['num_labeled'] for r in records] == [4, 8]
    assert all(0.0 <= r['bbox_mAP'] <= 1.0 and 'bbox_mAP_50' in r for r in records)
    assert records[0]['num_scored'] == 8 and records[0]['num_selected'] == 4
    # The file oracle's COCO export of a COCO pool, answered and read back.
    ids = loop.task.sample_ids()[:3]
    folder = tmp_path / 'query'
    loop.task.export_query(ids, folder)
    query = json.loads((folder / 'query_coco.json').read_text())
    assert [image['id'] for image in query['images']] == ids.tolist()
    answers = dict(query, annotations=[
        {'id': k + 1, 'image_id': int(sid), 'category_id': 2, 'bbox': [4, 5, 30, 20]}
        for k, sid in enumerate(ids)])
    path = tmp_path / 'answers.json'
    path.write_text(json.dumps(answers))
    read = dict(loop.task.read_answers(path))
    assert sorted(read) == ids.tolist()
    assert read[int(ids[0])] == [{'bbox': [4.0, 5.0, 34.0, 25.0], 'bbox_label': 1,
                                  'ignore_flag': 0}]


def test_a_missing_coco_file_is_one_line_naming_the_generator(tmp_path):
    with pytest.raises(FileNotFoundError, match='make_coco_demo.py'):
        TASKS.build(coco_cfg(tmp_path).task)
