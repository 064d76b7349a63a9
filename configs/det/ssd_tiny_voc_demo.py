# The detection demo for a 2-core CPU: a tiny SSD (ResNet-18 x0.25 backbone, 128 px input,
# 3 feature levels) on generated data in the real VOCdevkit layout (`make demo-det` writes it
# with tools/make_voc_demo.py): VOC2007 trainval + VOC2012 trainval as the pool, like the
# paper, VOC2007 test for mAP. Box-sum SAAL (exact per image), 16 random initial images,
# 2 rounds of 16 queries.
_base_ = ['../_base_/default_runtime.py']
custom_imports = dict(
    imports=['saal_tasks.tasks.detection.task', 'saal_tasks.tasks.detection.scorers'],
    allow_failed_imports=False)

data_root = 'data/voc_demo/VOCdevkit/'
classes = ('bottle', 'car', 'person')
input_size = 128
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]


def voc_set(year, image_set, pipeline, test_mode=False):
    return dict(type='VOCDataset', data_root=data_root, metainfo=dict(classes=classes),
                ann_file=f'{year}/ImageSets/Main/{image_set}.txt',
                data_prefix=dict(sub_data_root=f'{year}/'), test_mode=test_mode,
                filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=32),
                pipeline=pipeline)


task = dict(
    type='DetectionTask',
    model=dict(
        type='SingleStageDetector',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=1),
        # ResNet-18 at a quarter of its width: strides 16 and 32 give 8x8 and 4x4 maps.
        backbone=dict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                      out_indices=(2, 3), norm_eval=False),
        neck=dict(type='SSDNeck', in_channels=(64, 128), out_channels=(64, 128, 64),
                  level_strides=(2, ), level_paddings=(1, ), l2_norm_scale=None),
        bbox_head=dict(
            type='SSDHead',
            in_channels=(64, 128, 64),
            num_classes=len(classes),
            anchor_generator=dict(type='SSDAnchorGenerator', scale_major=False,
                                  strides=[16, 32, 64], ratios=[[2], [2], [2]],
                                  min_sizes=[20, 44, 76], max_sizes=[44, 76, 112]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[0.1, 0.1, 0.2, 0.2])),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0., ignore_iof_thr=-1, gt_max_assign_all=False),
            sampler=dict(type='PseudoSampler'),
            smoothl1_beta=1., allowed_border=-1, pos_weight=-1, neg_pos_ratio=3, debug=False),
        test_cfg=dict(nms_pre=200, nms=dict(type='nms', iou_threshold=0.45), min_bbox_size=0,
                      score_thr=0.02, max_per_img=50)),
    train_dataloader=dict(
        batch_size=8, num_workers=0,
        dataset=dict(type='ConcatDataset', ignore_keys=['dataset_type'],
                     datasets=[voc_set('VOC2007', 'trainval', train_pipeline),
                               voc_set('VOC2012', 'trainval', train_pipeline)])),
    test_dataloader=dict(
        batch_size=8, num_workers=0, drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=voc_set('VOC2007', 'test', test_pipeline, test_mode=True)),
    test_evaluator=dict(type='VOCMetric', metric='mAP', eval_mode='11points'),
    optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=3e-3)),
    train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=30),
    param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20)],
    default_hooks=dict(logger=dict(type='LoggerHook', interval=20)),
    pseudo_score_thr=0.3,
    empty_policy='zero',
    log_level='WARNING')

scorer = dict(
    type='SharpnessScorer',
    perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
    engine=dict(type='ReferenceEngine'),
    mode='max',
    objective_reduction='sum',
    score_reduction='sum',
    log_interval=100)
selector = dict(type='TopKSelector')
al = dict(
    num_rounds=2,
    budget=16,
    subset_size=None,
    initial_size=16,
    initial_set=dict(type='RandomInitialSet'),
    schedule=dict(type='ScratchSchedule'))
hooks = [dict(type='LearningCurveHook', metric='mAP'), dict(type='RunReportHook'),
         dict(type='ScalarsHook')]
