# mmdet's own SSD300 on PASCAL VOC07+12 as an active-learning task. Everything below comes
# from mmdet's config files (model, datasets and pipelines, optimizer, schedule, hooks), read
# through the `mmdet::` scope; the task receives them under `task`. The top-level keys that
# mmdet's files define (model, train_dataloader, ...) are where `task` was copied from: change
# `task.<key>` (e.g. --cfg-options task.train_cfg.max_epochs=2), not the top-level key.
_base_ = ['mmdet::pascal_voc/ssd300_voc0712.py', '../../_base_/default_runtime.py']
custom_imports = dict(
    imports=['saal_tasks.tasks.detection.task', 'saal_tasks.tasks.detection.scorers'],
    allow_failed_imports=False)

task = dict(
    type='DetectionTask',
    model={{_base_.model}},
    train_dataloader={{_base_.train_dataloader}},
    test_dataloader={{_base_.test_dataloader}},
    test_evaluator={{_base_.test_evaluator}},
    optim_wrapper={{_base_.optim_wrapper}},
    param_scheduler={{_base_.param_scheduler}},
    train_cfg={{_base_.train_cfg}},
    default_hooks={{_base_.default_hooks}},
    custom_hooks={{_base_.custom_hooks}},
    # Pseudo-boxes: post-NMS detections scoring at least this; images with none score 0.
    pseudo_score_thr=0.5,
    empty_policy='zero')
hooks = [dict(type='LearningCurveHook', metric='mAP'), dict(type='RunReportHook'),
         dict(type='ScalarsHook')]
