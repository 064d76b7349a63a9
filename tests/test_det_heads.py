"""The head-adapter contract, checked on every registered adapter with a tiny detector.

For each detector family: pseudo-boxes are the detector's own ``predict`` output above the
threshold; per-box losses, weighted as the adapter says, add up to mmdet's own classification
loss of the image alone; an image's units do not depend on its batch; SAAL scoring leaves the
parameters bit-identical and scores images without objects; the baselines run or refuse in
one line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')

from mmengine.config import Config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from saal_tasks.registry import SCORERS, TASKS  # noqa: E402
from saal_tasks.tasks.detection.demo import DemoSplit, write_voc_demo  # noqa: E402
from saal_tasks.tasks.detection.heads import HEAD_ADAPTERS  # noqa: E402

from conftest import bit_identical, snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: One tiny config per registered adapter.
CONFIGS = {
    'SSDAdapter': ROOT / 'configs' / 'det' / 'ssd_tiny_voc_demo.py',
    'SigmoidAnchorAdapter': ROOT / 'configs' / 'det' / 'retinanet_tiny_voc_demo.py',
    'TwoStageAdapter': ROOT / 'configs' / 'det' / 'faster_rcnn_tiny_voc_demo.py',
    'FCOSAdapter': ROOT / 'configs' / 'det' / 'fcos_tiny_voc_demo.py',
    'ATSSAdapter': ROOT / 'configs' / 'det' / 'atss_tiny_voc_demo.py',
    'GFLAdapter': ROOT / 'configs' / 'det' / 'gfl_tiny_voc_demo.py',
}
SPLITS = (DemoSplit('VOC2007', 'trainval', 6), DemoSplit('VOC2007', 'test', 3, first_number=101),
          DemoSplit('VOC2012', 'trainval', 3, id_prefix='2008_'))

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('voc_heads') / 'VOCdevkit'
    write_voc_demo(root, splits=SPLITS, image_size=(96, 128), seed=5)
    return root


def build(voc_root: Path, adapter: str, **task_overrides):
    cfg = Config.fromfile(str(CONFIGS[adapter]))
    cfg.task.data_root = str(voc_root) + '/'
    test_cfg = cfg.task.model.test_cfg.get('rcnn', cfg.task.model.test_cfg)  # two-stage
    test_cfg.max_per_img = 8
    # Untrained detectors score low: keep every post-NMS detection as a pseudo-box.
    test_cfg.score_thr = 0.0
    cfg.task.pseudo_score_thr = 0.0
    for key, value in task_overrides.items():
        cfg.task[key] = value
    return TASKS.build(cfg.task)


def detector(task, name: str):
    """The family's tiny detector at its seed-0 initialisation, in eval mode."""
    model = task.build_model(seed=0).eval()
    if name == 'FCOSAdapter':
        # Untrained, FCOS predicts distances near 0: point-sized boxes that contain no point
        # of any level, so no box would have a positive. A bias of 2 strides makes them
        # object-sized, as a trained FCOS predicts.
        with torch.no_grad():
            model.bbox_head.conv_reg.bias.fill_(2.0)
    return model


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def family(request, voc_root):
    task = build(voc_root, request.param)
    return request.param, task, detector(task, request.param)


def batch(task, ids):
    return next(task.pool_batches(np.asarray(ids), len(ids)))[1]


def saal_scorer():
    return SCORERS.build(dict(type='SharpnessScorer',
                              perturbation=dict(type='SAMPerturbation', rho=0.05),
                              engine=dict(type='ReferenceEngine'),
                              objective_reduction='sum', score_reduction='sum'))


def test_every_registered_adapter_has_a_contract_config():
    assert set(HEAD_ADAPTERS.module_dict) == set(CONFIGS)


def test_the_adapter_is_chosen_from_the_model_config(family):
    name, task, _ = family
    assert type(task.adapter).__name__ == name


def test_detections_are_the_detector_own_predict_output(family):
    name, task, model = family
    inputs = batch(task, [1, 2, 12008000001])
    dets = task.detections(model, inputs)
    data = model.data_preprocessor(inputs, False)
    with torch.no_grad():
        preds = model.predict(data['inputs'], data['data_samples'], rescale=False)
    for det, pred in zip(dets, preds):
        ref = pred.pred_instances
        assert len(det) == len(ref) == 8
        assert torch.equal(det.bboxes, ref.bboxes) and torch.equal(det.labels, ref.labels)
        assert torch.equal(det.scores, ref.scores)
        # The class distribution kept with a detection gives exactly its score (times the
        # centre-ness factor, for heads with one).
        factor = det.score_factors if 'score_factors' in det else 1.0
        assert torch.equal(det.probs[torch.arange(len(det)), det.labels] * factor, det.scores)
        assert ('score_factors' in det) == (name in ('FCOSAdapter', 'ATSSAdapter'))


def test_weighted_box_losses_add_up_to_mmdet_loss_of_the_image_alone(family):
    _, task, model = family
    for sid in (1, 3, 12008000002):
        inputs = batch(task, [sid])
        targets = task.pseudo_label(model, inputs)
        out = task.adapter.forward(model, inputs, with_boxes=False)
        parts = task.adapter.box_losses(model, out, 0, targets[0])
        data = model.data_preprocessor(inputs, False)
        data['data_samples'][0].gt_instances = InstanceData(bboxes=targets[0].bboxes,
                                                            labels=targets[0].labels)
        with torch.no_grad():
            mmdet_loss = _mmdet_loss_cls(model, data)
        assert len(targets[0]) == 8 and (parts.num_pos > 0).any()
        assert torch.allclose(parts.image_loss, mmdet_loss, rtol=1e-5)
        assert torch.allclose((parts.weights * parts.per_box).sum(), mmdet_loss, rtol=1e-5)
        # Per-box losses are the units SAAL sums: loss_per_unit returns exactly them.
        units = task.loss_per_unit(model, inputs, task.pseudo_label(model, inputs))[0]
        assert torch.allclose(units, parts.per_box, rtol=1e-6, atol=1e-7)


def _mmdet_loss_cls(model, data):
    """mmdet's classification loss of a batch of one image with its gt_instances.

    Single-stage: ``model.loss``'s ``loss_cls``. Two-stage: the RoI head's ``loss_cls`` with
    no RPN proposals (the RoIs are the ground-truth boxes, which mmdet adds as proposals),
    the definition the two-stage adapter splits (see heads/two_stage.py).
    """
    if not hasattr(model, 'roi_head'):
        loss = model.loss(data['inputs'], data['data_samples'])['loss_cls']
        return loss if torch.is_tensor(loss) else sum(loss)  # one term, or one per level
    feats = model.extract_feat(data['inputs'])
    none = [InstanceData(bboxes=feats[0].new_zeros(0, 4)) for _ in data['data_samples']]
    return model.roi_head.loss(feats, none, data['data_samples'])['loss_cls']


def test_an_image_units_do_not_depend_on_its_batch(family):
    _, task, model = family
    ids = [1, 5, 12008000003]
    inputs = batch(task, ids)
    together = task.loss_per_unit(model, inputs, task.pseudo_label(model, inputs))
    for row, sid in enumerate(ids):
        alone_inputs = batch(task, [sid])
        alone = task.loss_per_unit(model, alone_inputs,
                                   task.pseudo_label(model, alone_inputs))[0]
        assert torch.allclose(together[row, :alone.numel()], alone, rtol=1e-5, atol=1e-7)


def test_scoring_keeps_parameters_and_scores_images_without_objects(family, voc_root):
    name, task, model = family
    before = snapshot(model)
    result = saal_scorer().score(task, model, np.array([2, 4, 12008000001]),
                                 np.random.default_rng(0))
    assert bit_identical(model, before)
    assert (result.scores > 0).all() and len(set(result.scores)) == 3
    # Nothing above the threshold: no pseudo-box, an exact zero score, still scored.
    strict = build(voc_root, name, pseudo_score_thr=1.0)
    empty = saal_scorer().score(strict, model, np.array([2, 4]), np.random.default_rng(0))
    assert empty.scores.tolist() == [0.0, 0.0]
    assert bit_identical(model, before)


@pytest.mark.parametrize('name', ['SigmoidAnchorAdapter', 'FCOSAdapter', 'ATSSAdapter',
                                  'GFLAdapter'])
def test_focal_families_assign_priors_once_per_image(name, voc_root, monkeypatch):
    """The prior assignment depends on the boxes and the priors only (SSD assigns inside its
    hard-negative mining, RoI heads do not assign): SAAL's clean and
    perturbed passes of an image share it (one assignment per image, two loss passes), and
    a slice of the boxes gets its own, equal to a fresh computation."""
    task = build(voc_root, name)
    model = detector(task, name)
    adapter = task.adapter
    calls = []
    real = adapter.prior_assignment
    monkeypatch.setattr(adapter, 'prior_assignment',
                        lambda *args: calls.append(1) or real(*args))
    saal_scorer().score(task, model, np.array([1, 2, 3]), np.random.default_rng(0))
    assert len(calls) == 3
    inputs = batch(task, [4])
    boxes = task.pseudo_label(model, inputs)[0]
    out = adapter.forward(model, inputs, with_boxes=False)
    whole = adapter.box_losses(model, out, 0, boxes)
    first = adapter.box_losses(model, out, 0, boxes[:3])
    fresh = adapter.box_losses(model, out, 0, InstanceData(bboxes=boxes.bboxes[:3].clone(),
                                                           labels=boxes.labels[:3].clone()))
    assert len(calls) == 3 + 3  # the new boxes', then the slice's own, then the copy's
    adapter.box_losses(model, out, 0, boxes)
    assert len(calls) == 6  # the boxes kept theirs
    assert torch.equal(first.per_box, fresh.per_box) and first.per_box.numel() == 3
    assert whole.per_box.numel() == len(boxes)


def test_box_entropy_is_bounded_and_badge_embeds_every_image(family):
    _, task, model = family
    inputs = batch(task, [1, 2])
    classes = len(task.class_names())
    for boxes in task.pseudo_boxes(model, inputs):
        ent = task.box_entropies(boxes)
        assert ent.shape == (len(boxes),) and (ent >= 0).all()
        # Softmax over C + 1 classes, or C independent binary entropies.
        assert (ent <= max(np.log(classes + 1), classes * np.log(2)) + 1e-6).all()
    emb = task.gradient_embedding(model, inputs)
    assert emb.shape[0] == 2 and (emb.abs().sum(dim=1) > 0).all()
    result = SCORERS.build(dict(type='BoxEntropyScorer')).score(
        task, model, np.array([1, 2]), np.random.default_rng(0))
    assert (result.scores > 0).all()


def test_two_stage_badge_is_the_gradient_of_the_box_losses(voc_root):
    """Faster R-CNN's BADGE embedding of an image is the gradient, with respect to the RoI
    head's classifier weights, of the summed cross-entropy of its pseudo-boxes (each box
    classified from its own RoI feature, as in detection)."""
    task = build(voc_root, 'TwoStageAdapter')
    model = task.build_model(seed=0).eval()
    inputs = batch(task, [1, 2])
    emb = task.gradient_embedding(model, inputs)
    fc_cls = model.roi_head.bbox_head.fc_cls
    for row, boxes in enumerate(task.pseudo_boxes(model, inputs)):
        assert len(boxes) > 0
        logits = fc_cls(boxes.hidden)
        assert torch.allclose(logits.softmax(-1), boxes.probs, atol=1e-6)
        grad, = torch.autograd.grad(
            torch.nn.functional.cross_entropy(logits, boxes.labels, reduction='sum'),
            fc_cls.weight)
        assert torch.allclose(emb[row], grad.flatten(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('key, value, message', [
    ('type', 'CascadeRoIHead', "roi_head.type is 'CascadeRoIHead'"),
    ('bbox_head.loss_cls', dict(type='FocalLoss', use_sigmoid=True),
     "roi_head.bbox_head.loss_cls is 'FocalLoss' with use_sigmoid=True"),
])
def test_two_stage_options_it_cannot_split_are_refused(key, value, message):
    from saal_tasks.core.errors import ConfigError
    from saal_tasks.tasks.detection.heads import build_head_adapter
    model = Config.fromfile(str(CONFIGS['TwoStageAdapter'])).task.model.to_dict()
    node = model['roi_head']
    *path, last = key.split('.')
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(ConfigError, match=message):
        build_head_adapter(model)


@pytest.mark.parametrize('adapter', ['SigmoidAnchorAdapter', 'FCOSAdapter', 'ATSSAdapter'])
def test_focal_adapters_refuse_a_loss_they_cannot_split(adapter):
    from saal_tasks.core.errors import ConfigError
    from saal_tasks.tasks.detection.heads import build_head_adapter
    model = Config.fromfile(str(CONFIGS[adapter])).task.model.to_dict()
    assert type(build_head_adapter(model)).__name__ == adapter
    model['bbox_head']['loss_cls'] = dict(type='CrossEntropyLoss', use_sigmoid=True)
    with pytest.raises(ConfigError, match=f"bbox_head.loss_cls is 'CrossEntropyLoss' with "
                                          f"use_sigmoid=True: {adapter} splits a sigmoid"):
        build_head_adapter(model)


def test_a_head_without_an_adapter_is_refused_naming_the_adapters():
    """VarifocalNet's head has no adapter: the refusal names every adapter that exists."""
    from saal_tasks.core.errors import ConfigError
    from saal_tasks.tasks.detection.heads import build_head_adapter
    model = Config.fromfile(str(CONFIGS['ATSSAdapter'])).task.model.to_dict()
    model['bbox_head']['type'] = 'VFNetHead'
    with pytest.raises(ConfigError, match=r"no head adapter handles 'ATSS' with head "
                                          r"'VFNetHead'.*FCOSAdapter \(FCOSHead\).*"
                                          r"GFLAdapter \(GFLHead\)"):
        build_head_adapter(model)


def test_gfl_refuses_a_loss_it_cannot_split():
    from saal_tasks.core.errors import ConfigError
    from saal_tasks.tasks.detection.heads import build_head_adapter
    model = Config.fromfile(str(CONFIGS['GFLAdapter'])).task.model.to_dict()
    model['bbox_head']['loss_cls'] = dict(type='FocalLoss', use_sigmoid=True)
    with pytest.raises(ConfigError, match="bbox_head.loss_cls is 'FocalLoss': GFLAdapter "
                                          "splits GFL's sigmoid QualityFocalLoss"):
        build_head_adapter(model)


def test_batched_exact_scoring_equals_the_per_image_reference(family):
    """FastExactEngine scores a chunk of images per pass with each image's own ε: its scores
    equal ReferenceEngine's per image (float32, 1e-5 relative). Faster R-CNN's RoI head sees
    RoIs, not images, in its rows, so the engine's check sends it to the reference path and
    says why; the scores are the reference's."""
    name, task, model = family
    ids = np.array([1, 2, 3, 4, 12008000001, 12008000002, 12008000003])
    before = snapshot(model)

    def scorer(engine):
        return SCORERS.build(dict(type='SharpnessScorer',
                                  perturbation=dict(type='SAMPerturbation', rho=0.05),
                                  engine=engine, objective_reduction='sum',
                                  score_reduction='sum'))

    reference = scorer(dict(type='ReferenceEngine')).score(task, model, ids,
                                                           np.random.default_rng(0))
    fast = scorer(dict(type='FastExactEngine', chunk_size=3))
    batched = fast.score(task, model, ids, np.random.default_rng(0))
    assert bit_identical(model, before)
    np.testing.assert_allclose(batched.scores, reference.scores, rtol=1e-5)
    if name == 'TwoStageAdapter':
        assert 'roi_head.bbox_head' in fast.engine.fallback_reason
    else:
        assert fast.engine.fallback_reason is None
