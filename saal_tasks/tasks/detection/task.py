"""Object detection as an active-learning task: an mmdet detector, one unit per pseudo-box.

What depends on the detector family (its post-processing, the per-box split of its
classification loss, box entropies, BADGE features) is a head adapter (:mod:`.heads`), chosen
from the model config: SSD, RetinaNet, FCOS, ATSS, GFL and Faster R-CNN ship.

The adapter answers :class:`~saal_tasks.core.BaseTask` with mmdet's own machinery:

* **Pool**: the images of ``train_dataloader.dataset`` (wrappers such as
  ``RepeatDataset(ConcatDataset(...))`` are flattened), keyed by absolute ids derived from the
  VOC image ids (:mod:`.data`).
* **Training**: an mmengine ``Runner`` with the config's optimizer, schedule, hooks and train
  pipeline, on :class:`~.data.LabeledSubset` (exactly the labeled images, with the
  oracle's annotations).
* **Evaluation**: the config's ``test_dataloader`` and ``test_evaluator`` (VOC07 mAP with
  mmdet's ``VOCMetric``), as mmengine's test loop runs them.
* **Scoring protocol**: ``pseudo_label`` = the detector's post-processed detections scoring at
  least ``pseudo_score_thr``; ``loss_per_unit`` = each pseudo-box's classification loss
  (:meth:`.heads.HeadAdapter.box_losses`), normalised inside its image, ``[B, K]``
  padded with exact zeros after each image's own ``K_i`` boxes (so sums over boxes are
  unaffected; use ``score_reduction='sum'``).
"""
from __future__ import annotations

import copy
import os.path as osp
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

from ...core.dist import broadcast_buffers, rank_and_world
from ...core.errors import AnnotationError, ConfigError
from ...core.task import BaseTask
from ...compat.mmcv_ops import active_path
from ...registry import TASKS
from ...compat.mmengine_runtime import (isolated_runner_globals, load_checkpoint_weights,
                                        preserved_global_rng, quiet_current_logger,
                                        runner_launch_args, safe_checkpoint_globals)
# .heads makes mmcv.ops importable before anything imports mmdet.
from .heads import LevelProjections, build_head_adapter, select_pseudo_boxes
from .data import ImagePool, LabeledSubset, flatten_dataset_cfg, labeled_loader_cfg, loader_cfg
from .folder_data import query_pool_cfg
from .label_files import export_coco_query, predicted_boxes, read_coco_answers
from .pictures import draw_boxes
from .voc_files import ImageSetReport, check_policies, check_voc_image_set

from mmdet.datasets import VOCDataset, XMLDataset  # noqa: E402
from mmdet.registry import DATASETS, MODELS  # noqa: E402

#: Runner hooks the task switches off: the AL loop owns checkpoints (its schedule), and
#: drawing predictions is not part of a round.
DISABLED_HOOKS = ('checkpoint', 'visualization')
EMPTY_POLICIES = ('zero', 'top1')


def _set_data_root(dataset_cfg: dict, data_root: str) -> None:
    """Replace ``data_root`` in a dataset config and every dataset it wraps (in place)."""
    kind = dataset_cfg.get('type')
    if kind in ('RepeatDataset', 'ClassBalancedDataset'):
        _set_data_root(dataset_cfg['dataset'], data_root)
    elif kind == 'ConcatDataset':
        for sub in dataset_cfg['datasets']:
            _set_data_root(sub, data_root)
    else:
        dataset_cfg['data_root'] = data_root


def keep_empty_images(leaf_cfg: dict) -> bool:
    """Build a pool leaf with every image: turn its ``filter_empty_gt`` off (in place).

    Returns:
        Whether the leaf asked for ``filter_empty_gt`` (then training leaves such images out).
    """
    filter_cfg = leaf_cfg.get('filter_cfg')
    if not filter_cfg or not filter_cfg.get('filter_empty_gt', False):
        return False
    leaf_cfg['filter_cfg'] = {**filter_cfg, 'filter_empty_gt': False}
    return True


def _resolve_ann_files(evaluator_cfg: dict | list, data_root: str) -> dict | list:
    """An evaluator's ``ann_file`` (CocoMetric's ground truth) as a readable path.

    A path that exists as given is kept (mmdet's configs write ``data_root + 'annotations/
    ...'``); otherwise it is read under the test dataset's ``data_root``, like the dataset's
    own ``ann_file``, so ``task.data_root=...`` moves both.

    Raises:
        FileNotFoundError: Neither path exists (one line naming both).
    """
    for metric in evaluator_cfg if isinstance(evaluator_cfg, list) else [evaluator_cfg]:
        ann_file = metric.get('ann_file')
        if not ann_file or osp.isfile(ann_file):
            continue
        under_root = osp.join(data_root, ann_file)
        if not osp.isfile(under_root):
            raise FileNotFoundError(
                f'task.test_evaluator.ann_file: neither {osp.abspath(ann_file)} nor '
                f'{osp.abspath(under_root)} exists: write the test set\'s COCO file there or '
                'set test_evaluator.ann_file to its path')
        metric['ann_file'] = under_root
    return evaluator_cfg


def _check_files(leaf_cfg: dict, field: str) -> None:
    """One clear line when a dataset's image-set or annotation file is missing."""
    if leaf_cfg.get('type') == 'ImageFolderDetDataset':
        return  # the dataset lists its folder and names a missing one itself
    path = osp.join(leaf_cfg.get('data_root') or '', leaf_cfg['ann_file'])
    if not osp.isfile(path) and leaf_cfg.get('type') == 'CocoDataset':
        raise FileNotFoundError(
            f'{field}: {osp.abspath(path)} does not exist. Put the COCO-format file there or '
            'set task.data_root=<folder holding annotations/>; to try COCO-format detection '
            'with generated data, run `python tools/make_coco_demo.py`')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{field}: {osp.abspath(path)} does not exist. Put PASCAL VOC (VOCdevkit with '
            'VOC2007 and VOC2012) there or set task.data_root=<path to VOCdevkit/>; to try '
            'detection without VOC, run `make demo-det` (generated data in the same layout)')


def _build_checked(leaf_cfg: dict, key: str, on_unknown_class: str, on_corrupt: str,
                   pool: bool) -> tuple[Any, ImageSetReport]:
    """Build one leaf dataset, checking a VOC-style dataset's files before mmdet parses them.

    Returns:
        The fully initialised dataset and what the check found (empty for datasets that are
        not XML-based).
    """
    dataset = DATASETS.build({**leaf_cfg, 'lazy_init': True})
    report = ImageSetReport()
    if isinstance(dataset, XMLDataset):
        report = check_voc_image_set(dataset, key, on_unknown_class, on_corrupt, pool)
    dataset.full_init()
    return dataset, report


def _pretrained_checkpoints(cfg: Any) -> list[str]:
    """Every ``checkpoint`` of a ``Pretrained`` ``init_cfg`` inside a model config."""
    found = []
    if isinstance(cfg, dict):
        if cfg.get('type') == 'Pretrained' and cfg.get('checkpoint'):
            found.append(str(cfg['checkpoint']))
        for value in cfg.values():
            found += _pretrained_checkpoints(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            found += _pretrained_checkpoints(value)
    return found


def _check_pretrained(model_cfg: dict) -> None:
    """Pretrained weights must be local files: nothing is downloaded at run time."""
    for path in _pretrained_checkpoints(model_cfg):
        if '://' in path:
            raise ConfigError(
                f'task.model loads pretrained weights from {path}, which needs the network: '
                'download the file on a machine with network and set its local path in '
                'init_cfg.checkpoint (or init_cfg=None to train from scratch)')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'pretrained weights {path} do not exist: copy the file there (see '
                'docs/detection.md) or set task.model.backbone.init_cfg=None to train from '
                'scratch')


def _strip_for_scoring(info: dict) -> dict:
    """A record for pool scoring: the ground truth of unlabeled images is never loaded."""
    info['instances'] = []
    return info


class PseudoBoxes(list):
    """Pseudo-boxes of a batch (one ``InstanceData`` per image), possibly carrying the
    forward pass they were computed from (see :meth:`DetectionTask.pseudo_label`)."""

    forward: '_SharedForward | None' = None


@dataclass
class _SharedForward:
    """Network outputs (with their autograd graph) and what they were computed from."""

    model: nn.Module
    inputs: dict
    versions: tuple[int, ...]
    out: Any


def _param_versions(model: nn.Module) -> tuple[int, ...]:
    """In-place update counters of the parameters: any change of the weights changes them."""
    return tuple(p._version for p in model.parameters())


@TASKS.register_module()
class DetectionTask(BaseTask):
    """Detection with mmdet 3 detectors that have a head adapter: box-sum SAAL units.

    The pool is VOC- or COCO-format data (or, in query mode, a folder of images); the units
    of an image are its pseudo-boxes (see
    :meth:`pseudo_label`).

    The mmdet arguments take the values of mmdet's config keys of the same name (the configs
    in ``configs/det`` pass them from ``mmdet::pascal_voc/ssd300_voc0712.py``).

    Args:
        model: mmdet detector config; a head adapter must handle it (see :mod:`.heads`).
        train_dataloader: mmdet train dataloader config; its ``dataset`` defines the pool
            and the training pipeline (wrappers are flattened; see :mod:`.data`).
        test_dataloader: Evaluation dataloader config (VOC2007 test in the paper).
        test_evaluator: Evaluator config (``VOCMetric``, ``CocoMetric``); ``None`` for a task
            that only scores and queries (query mode): the test set is then not read, only
            its pipeline prepares pool images.
        optim_wrapper: Optimizer wrapper config.
        train_cfg: Training loop config (``EpochBasedTrainLoop``; epochs per round).
        param_scheduler: Learning-rate schedule configs.
        default_hooks: Runner default hooks (``checkpoint`` and ``visualization`` are
            switched off).
        custom_hooks: Runner custom hooks.
        data_root: Replaces ``data_root`` of every dataset when given (a ``VOCdevkit/`` path).
        pseudo_score_thr: Minimum post-NMS detection score of a pseudo-box.
        empty_policy: Images without a pseudo-box: ``'zero'`` (score exactly 0) or
            ``'top1'`` (use the single best detection whatever its score).
        init_checkpoint: Optional local checkpoint (Runner checkpoint or state dict) loaded
            into every freshly built detector, e.g. a detector pretrained elsewhere.
        badge_feature_dim: BADGE embeddings project each level's features to this many
            dimensions with a fixed random matrix; ``None`` keeps the exact per-level blocks
            (``(C + 1) × sum of level channels`` dimensions).
        badge_projection_seed: Seed of that projection.
        share_forward: Reuse the pseudo-labelling forward pass for the clean box losses
            (one network pass less per scored batch; see :meth:`pseudo_label`).
        runner_dir: Folder for the Runner's logs of every training; ``None`` keeps each
            round's under ``rounds/round_NNN/train_logs`` (a temporary folder, deleted after
            the training, outside a run).
        log_level: Level of the Runner's logger (``'WARNING'`` hides per-iteration lines).
        on_unknown_class: An XML object whose class is not among the dataset's classes:
            ``'stop'`` (one line naming the file) or ``'drop'`` (left out, as mmdet does,
            counted in one warning).
        head_adapter: Force a head adapter (``dict(type='SSDAdapter')``); ``None`` picks the
            one that handles ``model`` (:func:`.heads.build_head_adapter`).
        on_corrupt: A pool image whose header is unreadable or whose file is cut short:
            ``'stop'`` (one line naming the file) or ``'skip'`` (left out of the pool, one
            warning). Test images are always checked with ``'stop'``.

    Attributes:
        latest_model: The model this task last trained or evaluated (``None`` before). A
            query exported for people carries its pseudo-boxes as pre-annotations.
    """

    latest_model: nn.Module | None = None

    def __init__(self, model: dict, train_dataloader: dict, test_dataloader: dict,
                 test_evaluator: dict | list | None, optim_wrapper: dict, train_cfg: dict,
                 param_scheduler: dict | list | None = None,
                 default_hooks: dict | None = None, custom_hooks: list | None = None,
                 data_root: str | None = None, pseudo_score_thr: float = 0.5,
                 empty_policy: str = 'zero',
                 init_checkpoint: str | None = None, badge_feature_dim: int | None = None,
                 badge_projection_seed: int = 0, share_forward: bool = True,
                 runner_dir: str | None = None, log_level: str = 'INFO',
                 on_unknown_class: str = 'stop', on_corrupt: str = 'stop',
                 head_adapter: dict | None = None) -> None:
        check_policies(on_unknown_class, on_corrupt)
        if empty_policy not in EMPTY_POLICIES:
            raise ConfigError(f'task.empty_policy must be one of {EMPTY_POLICIES}, got '
                              f'{empty_policy!r}')
        if not 0.0 <= pseudo_score_thr <= 1.0:
            raise ConfigError(f'task.pseudo_score_thr must be in [0, 1], got {pseudo_score_thr}')
        if badge_feature_dim is not None and badge_feature_dim < 1:
            raise ConfigError(f'task.badge_feature_dim must be >= 1, got {badge_feature_dim}')
        self.model_cfg = copy.deepcopy(dict(model))
        self.adapter = build_head_adapter(self.model_cfg, head_adapter)
        self.train_loader_cfg = copy.deepcopy(dict(train_dataloader))
        self.test_loader_cfg = copy.deepcopy(dict(test_dataloader))
        if data_root is not None:
            _set_data_root(self.train_loader_cfg['dataset'], data_root)
            _set_data_root(self.test_loader_cfg['dataset'], data_root)
        self.test_evaluator_cfg = copy.deepcopy(test_evaluator)
        self.optim_wrapper_cfg = copy.deepcopy(dict(optim_wrapper))
        self.train_cfg = copy.deepcopy(dict(train_cfg))
        self.param_scheduler_cfg = copy.deepcopy(param_scheduler)
        self.default_hooks = {k: v for k, v in copy.deepcopy(dict(default_hooks or {})).items()
                              if k not in DISABLED_HOOKS}
        # None removes one of mmengine's own default hooks (the checkpoint hook).
        self.default_hooks['checkpoint'] = None
        self.custom_hooks = copy.deepcopy(list(custom_hooks or []))
        self.pseudo_score_thr = float(pseudo_score_thr)
        self.empty_policy = empty_policy
        self.init_checkpoint = init_checkpoint
        self.badge_feature_dim = badge_feature_dim
        self.badge_projection_seed = badge_projection_seed
        self.share_forward = share_forward
        self.runner_dir = runner_dir
        self._log_dir: Path | None = None
        self.log_level = log_level
        self._annotations: dict[int, list[dict]] = {}
        self._projections = (None if badge_feature_dim is None
                             else LevelProjections(badge_feature_dim, badge_projection_seed))
        self._test_loader = None

        leaves = flatten_dataset_cfg(self.train_loader_cfg['dataset'])
        # The pool is unlabeled images: one without objects stays in it (and can be queried);
        # a leaf's filter_empty_gt applies to training only (see _trainable).
        self._filters_empty = [keep_empty_images(leaf) for leaf in leaves]
        for leaf in leaves:
            _check_files(leaf, 'task.train_dataloader.dataset')
        # Without an evaluator (a task that only queries) the test set is not read: only its
        # pipeline is used, to prepare pool images for scoring.
        test_leaves = ([] if test_evaluator is None
                       else flatten_dataset_cfg(self.test_loader_cfg['dataset']))
        for leaf in test_leaves:
            _check_files(leaf, 'task.test_dataloader.dataset')
        if test_evaluator is not None:
            self.test_evaluator_cfg = _resolve_ann_files(
                self.test_evaluator_cfg, test_leaves[0].get('data_root') or '')
        _check_pretrained(self.model_cfg)
        with DefaultScope.overwrite_default_scope('mmdet'):
            for leaf in test_leaves:
                _build_checked(leaf, 'task.test_dataloader.dataset', on_unknown_class, 'stop',
                               pool=False)
            built = [_build_checked(leaf, 'task.train_dataloader.dataset', on_unknown_class,
                                    on_corrupt, pool=True) for leaf in leaves]
            self.pool = ImagePool([dataset for dataset, _ in built],
                                  skip=[set(report.corrupt) for _, report in built])
            self.test_pipeline = Compose(self.test_loader_cfg['dataset']['pipeline'])
        num_classes = self.adapter.num_classes(self.model_cfg)
        if num_classes != len(self.pool.classes):
            raise ConfigError(f'task.model.bbox_head.num_classes is {num_classes} but the '
                              f'dataset has {len(self.pool.classes)} classes '
                              f'{self.pool.classes}: make them agree')
        print_log(f'detection pool: {len(self.pool.sample_ids())} images from '
                  f'{len(leaves)} dataset(s), classes {self.pool.classes}; mmcv ops: '
                  f'{active_path()}', logger='current')

    # ------------------------------------------------------------------ data
    def sample_ids(self) -> np.ndarray:
        return self.pool.sample_ids()

    def sample_keys(self) -> dict[int, str] | None:
        """Each image's file key where the pool is a folder (ids are positions in it);
        ``None`` for VOC and COCO pools, whose ids are the datasets' own image ids."""
        keys = {int(i): self.pool.data_info(int(i)).get('file_key') for i in self.sample_ids()}
        return keys if all(keys.values()) else None

    def sample_files(self, sample_ids: np.ndarray) -> dict[int, str]:
        """Paths relative to the folder of a folder pool, else the images' own paths."""
        if self.sample_keys():
            return super().sample_files(sample_ids)
        return {int(i): str(self.pool.data_info(int(i))['img_path']) for i in sample_ids}

    def ground_truth(self, sample_ids: np.ndarray) -> dict[int, Any]:
        return {int(i): self.pool.ground_truth(int(i)) for i in sample_ids}

    def validate_annotations(self, annotations: dict[int, Any]) -> None:
        """Each annotation is a list of ``{'bbox': [x1, y1, x2, y2], 'bbox_label': c,
        'ignore_flag': 0|1}`` with 0-based pixel boxes inside the image."""
        num_classes = len(self.pool.classes)
        for sid, instances in annotations.items():
            try:
                info = self.pool.data_info(int(sid))
            except KeyError:
                raise AnnotationError(f'image {sid} is not in the detection pool: annotate '
                                      'only queried images') from None
            if not isinstance(instances, list):
                raise AnnotationError(f'annotation of image {sid} must be a list of boxes, '
                                      f'got {type(instances).__name__}')
            for inst in instances:
                box = inst.get('bbox') if isinstance(inst, dict) else None
                if box is None or len(box) != 4 or not all(np.isfinite(box)):
                    raise AnnotationError(f'image {sid}: {inst!r} needs a "bbox" of 4 finite '
                                          'numbers [x1, y1, x2, y2]')
                x1, y1, x2, y2 = (float(v) for v in box)
                if not (0 <= x1 < x2 <= info['width'] and 0 <= y1 < y2 <= info['height']):
                    raise AnnotationError(
                        f'image {sid}: box {box} is not inside the {info["width"]}x'
                        f'{info["height"]} image with x1 < x2 and y1 < y2: fix the box')
                label = inst.get('bbox_label')
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
                        or not 0 <= int(label) < num_classes:
                    raise AnnotationError(f'image {sid}: bbox_label {label!r} is not a class '
                                          f'index 0..{num_classes - 1} of {self.pool.classes}')
                if int(inst.get('ignore_flag', 0)) not in (0, 1):
                    raise AnnotationError(f'image {sid}: ignore_flag must be 0 or 1')

    def set_annotations(self, annotations: dict[int, Any]) -> None:
        self.validate_annotations(annotations)
        for sid, instances in annotations.items():
            self._annotations[int(sid)] = [
                {'bbox': [float(v) for v in inst['bbox']], 'bbox_label': int(inst['bbox_label']),
                 'ignore_flag': int(inst.get('ignore_flag', 0))} for inst in instances]

    def decode_annotation(self, value: Any) -> list[dict]:
        return list(value)

    # ------------------------------------------------------------------ reports
    def preview(self, sample_ids: np.ndarray,
                annotations: dict[int, Any] | None = None) -> list[np.ndarray]:
        """Each image (RGB ``[H, W, 3]``) with its answered boxes drawn by mmdet's
        ``DetLocalVisualizer`` (class names, the dataset's palette)."""
        return draw_boxes(self.pool, sample_ids, annotations or {})

    def annotation_classes(self, annotation: Any) -> list[int]:
        return [int(box['bbox_label']) for box in annotation]

    def class_names(self) -> list[str]:
        return list(self.pool.classes)

    def export_query(self, sample_ids: np.ndarray, folder: Path,
                     pre_annotations: bool = True,
                     predictions: dict[int, list[dict]] | None = None) -> None:
        """Write the queried images and ``query_coco.json`` (see ``label_files``).

        Args:
            sample_ids: Queried images, shape ``[K]``.
            folder: The query folder.
            pre_annotations: Add pseudo-boxes (with ``score``) as COCO annotations:
                ``predictions`` when given, else :attr:`latest_model`'s; none when no model
                was trained yet.
            predictions: Boxes per image from :meth:`predict_annotations` (query mode).
        """
        ids = np.asarray(sample_ids, dtype=np.int64)
        boxes = None
        if pre_annotations and predictions is not None:
            boxes = predictions
        elif pre_annotations and self.latest_model is not None:
            boxes = predicted_boxes(self, self.latest_model, ids)
        export_coco_query([self.pool.data_info(int(i)) for i in ids], ids, self.pool.classes,
                          Path(folder), boxes)

    # ------------------------------------------------------------------ query mode
    @classmethod
    def query_config(cls, task_cfg: dict, data: str) -> dict:
        """The pool becomes ``data`` (a folder of images or a COCO file; see
        :mod:`.folder_data`) with the first pool dataset's pipeline and classes; no test set
        is read (``test_evaluator=None``)."""
        out = copy.deepcopy(dict(task_cfg))
        leaf = flatten_dataset_cfg(out['train_dataloader']['dataset'])[0]
        out['train_dataloader']['dataset'] = query_pool_cfg(leaf, data)
        out['test_evaluator'] = None
        out['data_root'] = None  # it pointed at the training data
        return out

    def predict_annotations(self, model: nn.Module, sample_ids: np.ndarray,
                            units: list[np.ndarray] | None = None) -> dict[int, list[dict]]:
        """The pseudo-boxes SAAL scored, in image pixels (``label_files.predicted_boxes``)."""
        return predicted_boxes(self, model, np.asarray(sample_ids, dtype=np.int64))

    def read_answers(self, path: Path) -> list[tuple[int, list[dict]]]:
        """Read a COCO file of answers (tools' exports; see ``label_files``)."""
        return read_coco_answers(Path(path), self.pool.classes, self.pool.image_size)

    # ------------------------------------------------------------------ model
    def build_model(self, seed: int) -> nn.Module:
        with DefaultScope.overwrite_default_scope('mmdet'), torch.random.fork_rng(devices=[]), \
                warnings.catch_warnings():
            # mmdet 3.3.0's ATSS and GFL heads read AnchorHead's own deprecated num_anchors
            # while building; the warning names nothing a config can change.
            warnings.filterwarnings('ignore', message='DeprecationWarning: `num_anchors`',
                                    category=UserWarning)
            torch.manual_seed(seed)
            model = MODELS.build(copy.deepcopy(self.model_cfg))
            # A pretrained backbone in init_cfg is read here, by mmengine's torch.load.
            with safe_checkpoint_globals(), quiet_current_logger():
                model.init_weights()
        if self.init_checkpoint:
            missing, unexpected = model.load_state_dict(
                load_checkpoint_weights(self.init_checkpoint), strict=False)
            print_log(f'loaded {self.init_checkpoint} ({len(missing)} missing, '
                      f'{len(unexpected)} unexpected keys)', logger='current')
        self.adapter.prepare(model)
        return model

    def _trainable(self, labeled_ids: np.ndarray) -> np.ndarray:
        """The labeled images training uses: those without objects are left out where their
        dataset's ``filter_cfg`` says ``filter_empty_gt`` (mmdet's training default), as
        mmdet would have left them out; they stay labeled and out of the pool."""
        ids = np.asarray(labeled_ids, dtype=np.int64)
        empty = np.asarray([self._filters_empty[self.pool.locate(int(i))[0]]
                            and not self._annotations[int(i)] for i in ids], dtype=bool)
        if empty.all():
            raise AnnotationError(
                f'none of the {len(ids)} labeled images has an object, and the training '
                "dataset's filter_cfg has filter_empty_gt=True: label more images (raise "
                'al.initial_size) or set filter_empty_gt=False to train on empty images')
        if empty.any():
            print_log(f'  {int(empty.sum())} labeled images without objects are left out of '
                      'training (filter_cfg.filter_empty_gt)', logger='current')
        return ids[~empty]

    def use_log_dir(self, folder: Path | None) -> None:
        self._log_dir = folder

    def train(self, model: nn.Module, labeled_ids: np.ndarray, seed: int) -> nn.Module:
        if len(labeled_ids) == 0:
            raise ValueError('no labeled images to train on: raise al.initial_size')
        kept = self.runner_dir or self._log_dir
        workdir = str(kept) if kept else tempfile.mkdtemp(prefix='saal_det_runner_')
        start = time.perf_counter()
        distributed = rank_and_world()[1] > 1
        try:
            with preserved_global_rng(), isolated_runner_globals():
                # In a torchrun run DefaultSampler gives each rank its part of the labeled
                # set and DDP averages the gradients (runner_launch_args).
                runner = Runner(
                    model=model, work_dir=workdir,
                    # Exactly the labeled images, with the oracle's annotations.
                    train_dataloader=labeled_loader_cfg(
                        self.train_loader_cfg,
                        LabeledSubset(self.pool, self._trainable(labeled_ids),
                                      self._annotations), seed),
                    optim_wrapper=copy.deepcopy(self.optim_wrapper_cfg),
                    param_scheduler=copy.deepcopy(self.param_scheduler_cfg),
                    train_cfg=copy.deepcopy(self.train_cfg),
                    default_hooks=copy.deepcopy(self.default_hooks),
                    custom_hooks=copy.deepcopy(self.custom_hooks),
                    default_scope='mmdet', randomness=dict(seed=seed),
                    env_cfg=dict(cudnn_benchmark=False), log_level=self.log_level,
                    experiment_name='saal_detection', **runner_launch_args(distributed))
                model = runner.train()
                model = getattr(model, 'module', model)  # the DDP wrapper of a torchrun run
                loss = runner.message_hub.get_scalar('train/loss').current()
                iters = runner.iter
        finally:
            if not kept:
                shutil.rmtree(workdir, ignore_errors=True)
        print_log(f'  trained on {len(labeled_ids)} images: {iters} iterations, last loss '
                  f'{loss:.4f} ({time.perf_counter() - start:.1f}s)', logger='current')
        # mmengine's DDP keeps each rank's BatchNorm statistics: score with rank 0's everywhere.
        broadcast_buffers(model)
        model.eval()
        self.latest_model = model
        return model

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.test_evaluator_cfg is None:
            raise ConfigError('task.test_evaluator is None: this detection task only scores '
                              'and queries; configure test_dataloader and test_evaluator to '
                              'evaluate')
        # Each DataLoader iteration draws its base seed from torch's global RNG.
        with DefaultScope.overwrite_default_scope('mmdet'), preserved_global_rng():
            if self._test_loader is None:
                self._test_loader = Runner.build_dataloader(loader_cfg(self.test_loader_cfg),
                                                            seed=0)
            evaluator = Evaluator(copy.deepcopy(self.test_evaluator_cfg))
            meta = dict(self._test_loader.dataset.metainfo)
            if tuple(meta['classes']) != tuple(VOCDataset.METAINFO['classes']):
                # VOCMetric names the rows of its table after VOC's 20 classes whenever the
                # folder is VOC2007/VOC2012; other class lists must keep their own names.
                meta['dataset_type'] = None
            evaluator.dataset_meta = meta
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    for batch in self._test_loader:
                        evaluator.process(data_samples=model.test_step(batch), data_batch=batch)
            finally:
                model.train(was_training)
            metrics = evaluator.evaluate(len(self._test_loader.dataset))
        self.latest_model = model
        # 'pascal_voc/mAP' -> 'mAP': one metric namespace per run.
        return {k.split('/')[-1]: float(v) for k, v in metrics.items()}

    # ------------------------------------------------------------------ scoring protocol
    def pool_batches(self, sample_ids: np.ndarray,
                     batch_size: int) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield ``(ids, batch)``: images through the test pipeline, collated like mmdet's
        dataloaders (``{'inputs': [...], 'data_samples': [...]}``), without annotations."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        with DefaultScope.overwrite_default_scope('mmdet'):
            for start in range(0, len(ids), batch_size):
                chunk = ids[start:start + batch_size]
                items = [self.test_pipeline(_strip_for_scoring(self.pool.data_info(int(i))))
                         for i in chunk]
                yield chunk, pseudo_collate(items)

    def batch_size_of(self, inputs: dict) -> int:
        return len(inputs['inputs'])

    def detections(self, model: nn.Module, inputs: dict) -> list:
        """The detector's post-processed detections of each image
        (:meth:`.heads.HeadAdapter.detect`), in network-input pixels."""
        with torch.no_grad():
            out = self.adapter.forward(model, inputs, with_boxes=True)
            return [self.adapter.detect(model, out, i)
                    for i in range(self.adapter.num_images(out))]

    def pseudo_boxes(self, model: nn.Module, inputs: dict) -> list:
        """Per image, the detections scoring at least ``pseudo_score_thr`` (with the
        ``empty_policy``): ``InstanceData`` with ``bboxes [K, 4]``, ``labels [K]``,
        ``scores [K]`` and ``probs [K, C']`` (the class distribution each came from), plus
        the adapter's own fields (no autograd graph kept)."""
        return [select_pseudo_boxes(d, self.pseudo_score_thr, self.empty_policy)
                for d in self.detections(model, inputs)]

    def box_entropies(self, boxes: Any) -> torch.Tensor:
        """Uncertainty (nats) of each pseudo-box of one image ``[K]``, as its detector family
        defines it (:meth:`.heads.HeadAdapter.box_entropies`)."""
        return self.adapter.box_entropies(boxes)

    def pseudo_label(self, model: nn.Module, inputs: dict) -> 'PseudoBoxes':
        """:meth:`pseudo_boxes`, keeping the forward pass for :meth:`loss_per_unit`.

        SAAL needs the pseudo-labels and then the clean loss at the same weights, from the
        same network outputs. With ``share_forward`` the forward runs once, with autograd on,
        and rides on the returned list; :meth:`loss_per_unit` uses it (once) when called with
        the same model, the same inputs object and unchanged weights (parameter version
        counters), and runs the network itself otherwise (e.g. at θ + ε). This saves one of
        the five network passes of exact per-image scoring.
        """
        if not self.share_forward:
            return PseudoBoxes(self.pseudo_boxes(model, inputs))
        with torch.enable_grad():
            out = self.adapter.forward(model, inputs, with_boxes=True)
        with torch.no_grad():
            boxes = PseudoBoxes(
                select_pseudo_boxes(self.adapter.detect(model, out, i), self.pseudo_score_thr,
                                    self.empty_policy)
                for i in range(self.adapter.num_images(out)))
        boxes.forward = _SharedForward(model, inputs, _param_versions(model), out)
        return boxes

    def loss_per_unit(self, model: nn.Module, inputs: dict, targets: list) -> torch.Tensor:
        """Classification loss of each pseudo-box, ``[B, K_max]``; image ``i``'s row holds its
        ``K_i`` box losses then exact zeros (an image without boxes is all zeros)."""
        shared = getattr(targets, 'forward', None)
        if (shared is not None and torch.is_grad_enabled() and shared.model is model
                and shared.inputs is inputs and shared.versions == _param_versions(model)):
            out = shared.out
            targets.forward = None  # its graph serves one backward pass
        else:
            out = self.adapter.forward(model, inputs, with_boxes=False)
        rows = [self.adapter.box_losses(model, out, i, t).per_box
                for i, t in enumerate(targets)]
        width = max(r.numel() for r in rows)
        return torch.stack([torch.cat([r, r.new_zeros(width - r.numel())]) for r in rows])

    def gradient_embedding(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """BADGE gradient embeddings, ``[B, D]`` (:meth:`.heads.HeadAdapter.badge_embeddings`).

        For a pseudo-box with class distribution ``p`` (its source anchor's), pseudo-label
        ``ŷ`` and feature vector ``h`` (the neck feature at the source anchor's cell),
        ``(p − e_ŷ) ⊗ h`` is the gradient of its cross-entropy with respect to a linear
        classifier on ``h``; an image's embedding is the sum over its pseudo-boxes,
        each level in its own block (or all levels projected to ``badge_feature_dim``
        dimensions by a fixed random matrix). Images without pseudo-boxes embed to zero.
        """
        with torch.no_grad():
            out = self.adapter.forward(model, inputs, with_boxes=True)
            boxes = [select_pseudo_boxes(self.adapter.detect(model, out, i),
                                         self.pseudo_score_thr, self.empty_policy)
                     for i in range(self.adapter.num_images(out))]
            return self.adapter.badge_embeddings(model, out, boxes, self._projections)

    def embed(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """The detection embedding for diversity selectors: :meth:`gradient_embedding`."""
        return self.gradient_embedding(model, inputs)


__all__ = ['DetectionTask', 'PseudoBoxes']
