"""Detection task: SSD on generated VOC-layout data, box-sum SAAL, baselines, mmcv ops.

Everything runs on a tiny SSD (ResNet-18 x0.25, 128 px, 3 levels, 3 classes) and a generated
VOCdevkit of 22 images, so the file stays fast on two CPU cores.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from saal_tasks.core.errors import AnnotationError  # noqa: E402
from saal_tasks.registry import SCORERS, TASKS  # noqa: E402
from saal_tasks.tasks.detection.heads import anchor_cells, ssd_box_losses  # noqa: E402
from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo  # noqa: E402
from saal_tasks.tasks.detection.data import LabeledSubset, encode_sample_id  # noqa: E402
from saal_tasks.tasks.detection.data import labeled_loader_cfg  # noqa: E402

from conftest import bit_identical, snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / 'configs' / 'det' / 'ssd_tiny_voc_demo.py'
SPLITS = (DemoSplit('VOC2007', 'trainval', 10), DemoSplit('VOC2007', 'test', 6, first_number=101),
          DemoSplit('VOC2012', 'trainval', 6, id_prefix='2008_'))


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('voc') / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=3)
    return root


def tiny_cfg(voc_root: Path, **task_overrides) -> Config:
    """The demo config on the test data: 1 epoch of batch 4, at most 10 boxes per image."""
    cfg = Config.fromfile(str(TINY_CONFIG))
    cfg.task.data_root = str(voc_root) + '/'
    cfg.task.train_dataloader.batch_size = 4
    cfg.task.train_cfg.max_epochs = 1
    cfg.task.model.test_cfg.max_per_img = 10
    for key, value in task_overrides.items():
        cfg.task[key] = value
    return cfg


def make_task(voc_root: Path, **task_overrides):
    return TASKS.build(tiny_cfg(voc_root, **task_overrides).task)


@pytest.fixture(scope='module')
def task(voc_root):
    # Threshold 0: every post-NMS detection (up to 10) of an untrained SSD is a pseudo-box.
    return make_task(voc_root, pseudo_score_thr=0.0)


@pytest.fixture(scope='module')
def model(task):
    return task.build_model(seed=0).eval()


def first_batch(task, ids):
    return next(task.pool_batches(np.asarray(ids), len(ids)))[1]


# ---------------------------------------------------------------------------- data and pool
def test_pool_keys_images_by_voc_id_across_both_years(task):
    ids = task.sample_ids()
    assert len(ids) == 16 and len(np.unique(ids)) == 16
    assert ids[:10].tolist() == list(range(1, 11))  # VOC2007 '000001'.. -> 1..
    assert ids[10:].tolist() == [12008000000 + n for n in range(1, 7)]  # VOC2012 '2008_00000n'
    assert encode_sample_id(1, '2008_000008') == 12008000008


@pytest.mark.parametrize('bad', ['abc', '2008_00000x', '12345678901'])
def test_non_voc_image_ids_are_refused(bad):
    with pytest.raises(ValueError, match='cannot key the pool'):
        encode_sample_id(0, bad)


def test_generated_xml_is_read_by_mmdet_with_voc_coordinates(task, voc_root):
    # mmdet subtracts 1 from VOC's 1-based pixel coordinates; the pool must agree with the file.
    xml = ET.parse(voc_root / 'VOC2012' / 'Annotations' / '2008_000003.xml').getroot()
    written = [[float(o.find('bndbox').find(k).text) - 1 for k in ('xmin', 'ymin', 'xmax', 'ymax')]
               for o in xml.findall('object')]
    names = [o.find('name').text for o in xml.findall('object')]
    truth = task.ground_truth(np.array([12008000003]))[12008000003]
    assert [t['bbox'] for t in truth] == written
    assert [task.pool.classes[t['bbox_label']] for t in truth] == names


def test_labeled_subset_returns_exactly_the_labeled_ids_with_oracle_boxes(task):
    ids = np.array([3, 7, 12008000002, 12008000005])
    annotations = task.ground_truth(ids)
    annotations[7] = [{'bbox': [10.0, 12.0, 50.0, 60.0], 'bbox_label': 2, 'ignore_flag': 0}]
    subset = LabeledSubset(task.pool, ids, annotations)
    assert len(subset) == 4
    seen = {}
    for i in range(len(subset)):
        sample = subset[i]['data_samples']
        img_id = sample.img_id
        sid = encode_sample_id(0 if '_' not in img_id else 1, img_id)
        seen[sid] = sample.gt_instances
    assert sorted(seen) == sorted(ids.tolist())
    assert len(seen[7]) == 1 and seen[7].labels.tolist() == [2]
    assert len(seen[3]) == len(annotations[3])
    with pytest.raises(ValueError, match='no annotation'):
        LabeledSubset(task.pool, np.array([3, 4]), {3: annotations[3]})


def test_bad_annotations_are_refused_with_the_fix(task):
    good = {'bbox': [1.0, 1.0, 20.0, 20.0], 'bbox_label': 0, 'ignore_flag': 0}
    task.validate_annotations({1: [good]})
    with pytest.raises(AnnotationError, match='not a class index'):
        task.validate_annotations({1: [{**good, 'bbox_label': 3}]})
    with pytest.raises(AnnotationError, match='not inside'):
        task.validate_annotations({1: [{**good, 'bbox': [1.0, 1.0, 500.0, 20.0]}]})
    with pytest.raises(AnnotationError, match='list of boxes'):
        task.validate_annotations({1: good})
    with pytest.raises(AnnotationError, match='not in the detection pool'):
        task.validate_annotations({999: [good]})


# ---------------------------------------------------------------------------- SSD units
def test_detections_match_mmdet_predict_and_keep_their_source_anchor(task, model):
    inputs = first_batch(task, [1, 2, 12008000001])
    dets = task.detections(model, inputs)
    data = model.data_preprocessor(inputs, False)
    with torch.no_grad():
        preds = model.predict(data['inputs'], data['data_samples'], rescale=False)
    for det, pred in zip(dets, preds):
        ref = pred.pred_instances
        assert len(det) == len(ref) > 0
        assert torch.equal(det.bboxes, ref.bboxes) and torch.equal(det.labels, ref.labels)
        assert torch.equal(det.scores, ref.scores)
        # The source anchor's softmax gives exactly the detection's score.
        assert torch.equal(det.probs[torch.arange(len(det)), det.labels], det.scores)
        assert torch.allclose(det.probs.sum(1), torch.ones(len(det)))


def test_anchor_cells_point_at_the_conv_output_of_each_anchor(task, model):
    inputs = first_batch(task, [4])
    with torch.no_grad():
        out = task.adapter.forward(model, inputs, with_boxes=True)
        anchors = torch.tensor([0, 5, out.level_starts[1] + 7, out.level_starts[2] + 3])
        channels = model.bbox_head.cls_out_channels
        for a, (level, y, x) in zip(anchors.tolist(), anchor_cells(out, anchors)):
            slot = (a - out.level_starts[level]) % out.num_base_priors[level]
            raw = model.bbox_head.cls_convs[level](out.feats[level])[0, :, y, x]
            assert torch.equal(raw[slot * channels:(slot + 1) * channels], out.cls_logits[0, a])


def test_box_losses_add_up_to_mmdet_ssd_loss_of_the_image_alone(task, model):
    inputs = first_batch(task, [5])
    targets = task.pseudo_label(model, inputs)
    data = model.data_preprocessor(inputs, False)
    out = task.adapter.forward(model, inputs, with_boxes=False)
    parts = ssd_box_losses(model.bbox_head, out.cls_logits[0], out.priors,
                           targets[0].bboxes, targets[0].labels)
    samples = data['data_samples']
    samples[0].gt_instances = InstanceData(bboxes=targets[0].bboxes, labels=targets[0].labels)
    with torch.no_grad():
        mmdet_loss = sum(model.loss(data['inputs'], samples)['loss_cls'])
    assert len(targets[0]) == 10 and (parts.num_pos > 0).all()
    assert torch.allclose(parts.image_loss, mmdet_loss, rtol=1e-6)
    weighted = (parts.num_pos * parts.per_box).sum() / parts.num_pos.sum()
    assert torch.allclose(weighted, mmdet_loss, rtol=1e-5)
    assert torch.allclose((parts.weights * parts.per_box).sum(), mmdet_loss, rtol=1e-5)


def test_box_losses_do_not_depend_on_the_batch_unlike_mmdet_ssd_loss(task, model):
    ids = [1, 6, 12008000004]
    inputs = first_batch(task, ids)
    targets = task.pseudo_label(model, inputs)
    together = task.loss_per_unit(model, inputs, targets)
    assert together.shape == (3, max(len(t) for t in targets))
    for row, sid in enumerate(ids):
        alone_inputs = first_batch(task, [sid])
        alone_targets = task.pseudo_label(model, alone_inputs)
        alone = task.loss_per_unit(model, alone_inputs, alone_targets)[0]
        k = len(alone_targets[0])
        assert torch.allclose(together[row, :k], alone, rtol=1e-5, atol=1e-7)
        assert (together[row, k:] == 0).all()  # padding is exact zeros
    # mmdet's own SSD loss divides by the positives of the whole batch: the same image gets a
    # different loss next to other images (the reason for the per-image normalisation).
    data = model.data_preprocessor(inputs, False)
    for sample, t in zip(data['data_samples'], targets):
        sample.gt_instances = InstanceData(bboxes=t.bboxes, labels=t.labels)
    with torch.no_grad():
        batched = model.loss(data['inputs'], data['data_samples'])['loss_cls'][0]
    alone_data = model.data_preprocessor(first_batch(task, ids[:1]), False)
    alone_data['data_samples'][0].gt_instances = data['data_samples'][0].gt_instances
    with torch.no_grad():
        single = model.loss(alone_data['inputs'], alone_data['data_samples'])['loss_cls'][0]
    assert not torch.allclose(batched, single, rtol=1e-3)


def test_shared_forward_is_reused_once_and_only_at_the_same_weights(voc_root, task, model):
    inputs = first_batch(task, [2, 12008000002])
    targets = task.pseudo_label(model, inputs)
    assert targets.forward is not None
    shared = task.loss_per_unit(model, inputs, targets)
    assert targets.forward is None  # used once: its graph serves one backward pass
    separate = make_task(voc_root, pseudo_score_thr=0.0, share_forward=False)
    recomputed = separate.loss_per_unit(model, inputs, separate.pseudo_label(model, inputs))
    assert torch.allclose(shared, recomputed, rtol=1e-6, atol=1e-7)
    # Weights changed after pseudo-labelling (as at theta + eps): the stale pass is not used.
    targets = task.pseudo_label(model, inputs)
    weight = model.bbox_head.cls_convs[0][0].weight
    original = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.5)
    try:
        moved = task.loss_per_unit(model, inputs, targets)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert not torch.allclose(moved, shared, rtol=1e-3)


# ---------------------------------------------------------------------------- box-sum SAAL
def saal_scorer(engine=None):
    return SCORERS.build(dict(type='SharpnessScorer', perturbation=dict(type='SAMPerturbation',
                                                                        rho=0.05),
                              engine=engine or dict(type='ReferenceEngine'),
                              objective_reduction='sum', score_reduction='sum'))


def test_saal_score_is_the_sum_of_perturbed_box_losses_with_the_image_own_epsilon(task, model):
    sid = 12008000006
    result = saal_scorer().score(task, model, np.array([sid]), np.random.default_rng(0))
    # By hand: eps = rho * g / ||g|| from this image's summed box losses, then the sum of the
    # box losses at theta + eps.
    inputs = first_batch(task, [sid])
    targets = task.pseudo_label(model, inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    clean = task.loss_per_unit(model, inputs, targets)[0]
    grads = torch.autograd.grad(clean.sum(), params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    originals = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g * (0.05 / (norm + 1e-12)))
        perturbed = task.loss_per_unit(model, inputs, targets)[0]
        for p, o in zip(params, originals):
            p.copy_(o)
    assert result.scores[0] == pytest.approx(float(perturbed.sum()), rel=1e-5)
    assert result.extras['clean_loss'][0] == pytest.approx(float(clean.detach().sum()), rel=1e-5)
    assert result.scores[0] > result.extras['clean_loss'][0]


def test_saal_scores_do_not_depend_on_batch_composition(task, model):
    rng = np.random.default_rng(0)
    first = saal_scorer().score(task, model, np.array([2, 9, 12008000003]), rng)
    second = saal_scorer().score(task, model, np.array([12008000003, 4, 2]), rng)
    a = dict(zip(first.sample_ids.tolist(), first.scores))
    b = dict(zip(second.sample_ids.tolist(), second.scores))
    assert a[2] == b[2] and a[12008000003] == b[12008000003]
    assert len(set(first.scores)) == 3 and (first.scores > 0).all()


def test_parameters_are_bit_identical_after_scoring(task, model):
    before = snapshot(model)
    saal_scorer().score(task, model, task.sample_ids()[:4], np.random.default_rng(0))
    saal_scorer(dict(type='BatchwiseEngine', group_size=2)).score(
        task, model, task.sample_ids()[4:8], np.random.default_rng(0))
    assert bit_identical(model, before)


def test_zero_policy_gives_images_without_pseudo_boxes_a_zero_score(voc_root, model):
    strict = make_task(voc_root, pseudo_score_thr=1.0, empty_policy='zero')
    ids = np.array([1, 2, 3])
    inputs = first_batch(strict, ids)
    targets = strict.pseudo_label(model, inputs)
    assert [len(t) for t in targets] == [0, 0, 0]
    units = strict.loss_per_unit(model, inputs, targets)
    assert units.shape == (3, 0)
    before = snapshot(model)
    result = saal_scorer().score(strict, model, ids, np.random.default_rng(0))
    assert result.scores.tolist() == [0.0, 0.0, 0.0]
    assert bit_identical(model, before)


def test_top1_policy_scores_the_best_detection_of_an_empty_image(voc_root, model):
    top1 = make_task(voc_root, pseudo_score_thr=1.0, empty_policy='top1')
    ids = np.array([1, 2, 3])
    inputs = first_batch(top1, ids)
    targets = top1.pseudo_label(model, inputs)
    best = top1.detections(model, inputs)
    assert [len(t) for t in targets] == [1, 1, 1]
    for t, d in zip(targets, best):
        assert torch.equal(t.bboxes, d.bboxes[:1]) and t.scores[0] == d.scores.max()
    result = saal_scorer().score(top1, model, ids, np.random.default_rng(0))
    assert (result.scores > 0).all()


def test_bad_task_options_are_refused(voc_root):
    with pytest.raises(ValueError, match='empty_policy'):
        make_task(voc_root, empty_policy='skip')
    # A detector without an adapter: one line naming the adapters that exist and the docs.
    with pytest.raises(ValueError, match=r"head 'YOLOV3Head'.*SSDAdapter \(SSDHead\).*"
                                         r'SigmoidAnchorAdapter.*Adding a detector'):
        cfg = tiny_cfg(voc_root)
        cfg.task.model.bbox_head.type = 'YOLOV3Head'
        TASKS.build(cfg.task)
    # An adapter's family with options it cannot split: refused by the adapter, in one line.
    with pytest.raises(ValueError, match='loss_cls.*FocalLoss'):
        cfg = tiny_cfg(voc_root)
        cfg.task.model.bbox_head.type = 'RetinaHead'
        TASKS.build(cfg.task)
    with pytest.raises(ValueError, match='num_classes is 20'):
        cfg = tiny_cfg(voc_root)
        cfg.task.model.bbox_head.num_classes = 20
        TASKS.build(cfg.task)


# ---------------------------------------------------------------------------- baselines
def test_entropy_scores_sum_box_entropies(task, model):
    from scipy.stats import entropy

    ids = np.array([3, 12008000001])
    result = SCORERS.build(dict(type='BoxEntropyScorer', batch_size=1)).score(
        task, model, ids, np.random.default_rng(0))
    targets = task.pseudo_label(model, first_batch(task, ids))
    expected = [sum(entropy(p.double().numpy()) for p in t.probs) for t in targets]
    assert np.allclose(result.scores, expected, rtol=1e-6)
    assert result.extras['num_boxes'].tolist() == [10, 10]
    assert (result.scores <= 10 * np.log(4) + 1e-9).all()


def test_badge_embedding_is_the_box_gradient_of_a_linear_classifier(voc_root, model):
    one_box = make_task(voc_root, pseudo_score_thr=1.0, empty_policy='top1')
    inputs = first_batch(one_box, [8])
    emb = one_box.gradient_embedding(model, inputs)[0]
    assert torch.equal(one_box.embed(model, inputs)[0], emb)
    box = one_box.pseudo_label(model, inputs)[0]
    with torch.no_grad():
        out = one_box.adapter.forward(model, inputs, with_boxes=True)
    (level, y, x), = anchor_cells(out, box.anchors)
    h = out.feats[level][0, :, y, x]
    # d CE(W h, y) / d W for a linear classifier W: (softmax - onehot) outer h.
    w = torch.zeros(4, h.numel(), requires_grad=True)
    loss = torch.nn.functional.cross_entropy((w @ h)[None] + torch.log(box.probs), box.labels)
    (grad_w, ) = torch.autograd.grad(loss, w)
    channels = [f.shape[1] for f in out.feats]
    start = 4 * sum(channels[:level])
    assert emb.shape == (4 * sum(channels), )
    assert torch.allclose(emb[start:start + 4 * channels[level]], grad_w.flatten(), atol=1e-6)
    assert emb[:start].abs().sum() == 0 and emb[start + 4 * channels[level]:].abs().sum() == 0
    empty = make_task(voc_root, pseudo_score_thr=1.0, empty_policy='zero')
    assert empty.gradient_embedding(model, inputs).abs().sum() == 0
    projected = make_task(voc_root, pseudo_score_thr=0.0, badge_feature_dim=16)
    assert projected.gradient_embedding(model, inputs).shape == (1, 4 * 16)


def test_badge_baseline_runs_on_the_detection_task(task, model):
    from saal_tasks.core.selection import SelectionContext
    from saal_tasks.registry import SELECTORS

    ids = task.sample_ids()
    candidates = ids[4:12]
    result = SCORERS.build(dict(type='GradientNormScorer', batch_size=4)).score(
        task, model, candidates, np.random.default_rng(0))
    norms = task.gradient_embedding(model, first_batch(task, candidates)).norm(dim=1)
    assert np.allclose(result.scores, norms.double().numpy(), rtol=1e-5)
    selector = SELECTORS.build(dict(type='BADGESelector', batch_size=4))
    picked = selector.select(SelectionContext(
        candidate_ids=candidates, scores=result.scores, labeled_ids=ids[:4], budget=3,
        rng=np.random.default_rng(0), task=task, model=model)).sample_ids
    assert len(set(picked.tolist())) == 3 and set(picked.tolist()) <= set(candidates.tolist())
    # BADGE starts at the largest norm.
    assert picked[0] == candidates[int(np.argmax(result.scores))]


# ---------------------------------------------------------------------------- mmcv ops
def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float, offset: int):
    """Greedy NMS written out (the definition both implementations must follow)."""
    order = scores.argsort(descending=True).tolist()
    area = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            w = (torch.minimum(boxes[i, 2], boxes[j, 2]) - torch.maximum(boxes[i, 0], boxes[j, 0])
                 + offset).clamp(min=0)
            h = (torch.minimum(boxes[i, 3], boxes[j, 3]) - torch.maximum(boxes[i, 1], boxes[j, 1])
                 + offset).clamp(min=0)
            inter = w * h
            if inter / (area[i] + area[j] - inter) <= thr:
                rest.append(j)
        order = rest
    return keep


@pytest.mark.parametrize('offset', [0, 1])
def test_torchvision_nms_matches_the_nms_definition_and_mmcv(offset):
    from saal_tasks.compat.mmcv_ops import torchvision_nms

    gen = torch.Generator().manual_seed(offset)
    xy = torch.rand(60, 2, generator=gen) * 40
    boxes = torch.cat([xy, xy + 4 + torch.rand(60, 2, generator=gen) * 20], dim=1)
    scores = torch.rand(60, generator=gen)
    kept = torchvision_nms(boxes, scores, 0.45, offset).tolist()
    assert kept == reference_nms(boxes, scores, 0.45, offset)
    ext = sys.modules.get('mmcv._ext')
    if ext is not None and not type(ext).__name__ == '_FallbackExt':
        assert ext.nms(boxes, scores, iou_threshold=0.45, offset=offset).tolist() == kept


def test_fallback_ops_report_unsupported_ops_in_one_line():
    from saal_tasks.compat.mmcv_ops import _FallbackExt

    with pytest.raises(RuntimeError, match="'roi_align_forward' needs mmcv's compiled ops"):
        _FallbackExt().roi_align_forward()


@pytest.mark.slow
def test_forced_torchvision_fallback_gives_the_same_detections(task, model, tmp_path):
    """SSD inference with SAAL_MMCV_OPS=torchvision in a fresh process equals this one's."""
    torch.save(model.state_dict(), tmp_path / 'model.pth')
    script = f'''
import json, sys, numpy as np, torch
sys.path.insert(0, {str(ROOT)!r})
from saal_tasks.compat.mmcv_ops import ensure_mmcv_ops, active_path
ensure_mmcv_ops()
from mmengine.config import Config
from saal_tasks.registry import TASKS
cfg = Config.fromfile({str(TINY_CONFIG)!r})
cfg.task.data_root = {str(task.pool.leaves[0].data_root)!r}
cfg.task.model.test_cfg.max_per_img = 10
task = TASKS.build(cfg.task)
model = task.build_model(0).eval()
model.load_state_dict(torch.load({str(tmp_path / 'model.pth')!r}, weights_only=True))
_, inputs = next(task.pool_batches(np.array([1, 2, 12008000001]), 3))
dets = task.detections(model, inputs)
print(json.dumps(dict(path=active_path(), boxes=[d.bboxes.tolist() for d in dets],
                      labels=[d.labels.tolist() for d in dets])))
'''
    env = {**os.environ, 'SAAL_MMCV_OPS': 'torchvision', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['path'] == 'torchvision-fallback'
    dets = task.detections(model, first_batch(task, [1, 2, 12008000001]))
    assert out['labels'] == [d.labels.tolist() for d in dets]
    assert np.allclose(np.array(out['boxes'], dtype=object).tolist(),
                       [d.bboxes.tolist() for d in dets])


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.slow
def test_runner_checkpoints_load_with_safe_loading_still_on(task, tmp_path):
    from mmengine.runner import Runner

    from saal_tasks.compat.mmengine_runtime import (isolated_runner_globals,
                                                    load_checkpoint_weights,
                                                    preserved_global_rng)

    ids = task.sample_ids()[:4]
    task.set_annotations(task.ground_truth(ids))
    model = task.build_model(seed=1)
    with preserved_global_rng(), isolated_runner_globals():
        runner = Runner(model=model, work_dir=str(tmp_path),
                        train_dataloader=labeled_loader_cfg(
                            task.train_loader_cfg,
                            LabeledSubset(task.pool, ids, task._annotations), 0),
                        optim_wrapper=task.optim_wrapper_cfg, train_cfg=task.train_cfg,
                        default_scope='mmdet', randomness=dict(seed=0), log_level='WARNING',
                        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)))
        runner.train()
    path = tmp_path / 'epoch_1.pth'
    # What mmengine's own load does on torch >= 2.6: refused.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    weights = load_checkpoint_weights(str(path))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    fresh = make_task(Path(task.pool.leaves[0].data_root), init_checkpoint=str(path))
    loaded = fresh.build_model(seed=5)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_one_active_learning_round_end_to_end_with_map(voc_root, tmp_path):
    from saal_tasks.engine import ActiveLearningLoop

    cfg = tiny_cfg(voc_root, pseudo_score_thr=0.0)
    cfg.al = dict(num_rounds=1, budget=4, subset_size=None, initial_size=4,
                  initial_set=dict(type='RandomInitialSet'), schedule=dict(type='ScratchSchedule'))
    cfg.work_dir = str(tmp_path / 'run')
    logger = MMLogger.get_instance('test_detection_e2e')
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    records = ActiveLearningLoop.from_cfg(cfg).run()
    assert [r['num_labeled'] for r in records] == [4, 8]
    for record in records:
        assert 0.0 <= record['mAP'] <= 1.0
    assert records[0]['num_scored'] == 12 and records[0]['num_selected'] == 4
    rounds = tmp_path / 'run' / 'rounds'
    initial = set(json.loads((rounds / 'round_000' / 'annotations.json').read_text()))
    selected = json.loads((rounds / 'round_001' / 'selected.json').read_text())['sample_ids']
    assert len(selected) == 4 and not initial & {str(s) for s in selected}
    scores = np.load(rounds / 'round_001' / 'scores.npz')
    assert len(scores['scores']) == 12 and (scores['scores'] > 0).all()
    # Each round's Runner log is kept with the round (before, in a deleted temporary folder).
    for r in (1, 2):
        folder = rounds / f'round_{r:03d}' / 'train_logs'
        assert len(list(folder.rglob('*.log'))) == 1          # the Runner's log
        assert len(list(folder.glob('*.py'))) == 1            # and the config it ran
    # The Runner left no global state behind: RNG streams, current logger, default scope.
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert MMLogger.get_current_instance() is logger
    assert DefaultScope.get_current_instance() is None


@pytest.mark.slow
def test_paper_config_without_voc_stops_with_one_line(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import train_al
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    monkeypatch.chdir(tmp_path)
    code = train_al.main([str(ROOT / 'configs' / 'det' / 'ssd_voc_saal.py'),
                          '--work-dir', str(tmp_path / 'run')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(tmp_path / 'data' / 'VOCdevkit' / 'VOC2007' / 'ImageSets' / 'Main' /
               'trainval.txt') in err[0]
    assert 'make demo-det' in err[0]


def test_paper_configs_hold_the_paper_protocol():
    for name, scorer in [('saal', 'SharpnessScorer'), ('random', 'RandomScorer'),
                         ('entropy', 'BoxEntropyScorer'),
                         ('badge', 'GradientNormScorer')]:
        cfg = Config.fromfile(str(ROOT / 'configs' / 'det' / f'ssd_voc_{name}.py'))
        assert cfg.scorer.type == scorer
        assert (cfg.al.initial_size, cfg.al.num_rounds, cfg.al.budget) == (1000, 9, 1000)
        assert cfg.al.initial_set.type == 'RandomInitialSet' and cfg.al.subset_size is None
        assert cfg.task.train_cfg.max_epochs == 300
        assert cfg.task.train_dataloader.batch_size == 32
        assert cfg.task.model.backbone.type == 'SSDVGG'
        assert cfg.task.model.bbox_head.num_classes == 20
        leaves = cfg.task.train_dataloader.dataset.dataset.datasets
        assert [d.ann_file for d in leaves] == ['VOC2007/ImageSets/Main/trainval.txt',
                                                'VOC2012/ImageSets/Main/trainval.txt']
        assert cfg.task.test_dataloader.dataset.ann_file == 'VOC2007/ImageSets/Main/test.txt'
        assert cfg.task.test_evaluator.type == 'VOCMetric'
        assert cfg.task.test_evaluator.eval_mode == '11points'
        assert '://' not in cfg.task.model.backbone.init_cfg.checkpoint
    assert cfg.selector.type == 'BADGESelector'
    assert not any(h.type == 'PoolViewHook' for h in cfg.get('hooks', []))
