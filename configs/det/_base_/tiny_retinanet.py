# The tiny RetinaNet of the detection demos (retinanet_tiny_voc_demo.py,
# retinanet_tiny_coco_demo.py): mmdet's retinanet_r50_fpn.py shrunk for a 2-core CPU
# (ResNet-18 x0.25, a 3-level FPN of 64 channels, one tower conv per branch).
# A variable, not a task: a config takes it with task = dict(model={{_base_._tiny_retinanet}}).
_base_ = ['./tiny_fpn_parts.py']

_tiny_retinanet = dict(
    _delete_=True,
    type='RetinaNet',
    data_preprocessor={{_base_._tiny_preprocessor}},
    backbone={{_base_._tiny_backbone}},
    neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=64, start_level=0,
              add_extra_convs='on_input', num_outs=3),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=3,  # the demo classes: bottle, car, person
        in_channels=64, stacked_convs=1, feat_channels=64,
        # Anchors of 16-100 px at strides 8-32, for the demo's objects at 128 px.
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                      min_pos_iou=0, ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=50))
