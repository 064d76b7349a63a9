# The tiny GFL of the detection demos (gfl_tiny_voc_demo.py): mmdet's gfl_r50_fpn_1x_coco.py
# shrunk for a 2-core CPU: ResNet-18 x0.25, a 3-level FPN of 64 channels, one GroupNorm tower
# conv per branch, one square anchor per cell, 8 distance bins per side.
# A variable, not a task: a config takes it with task = dict(model={{_base_._tiny_gfl}}).
_base_ = ['./tiny_fpn_parts.py']

_tiny_gfl = dict(
    _delete_=True,
    type='GFL',
    data_preprocessor={{_base_._tiny_preprocessor}},
    backbone={{_base_._tiny_backbone}},
    neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=64, num_outs=3),
    bbox_head=dict(
        type='GFLHead',
        num_classes=3,  # the demo classes: bottle, car, person
        in_channels=64, stacked_convs=1, feat_channels=64,
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        # Anchors of 24, 48 and 96 px at strides 8-32, for the demo's objects at 128 px.
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=3,
                              scales_per_octave=1, strides=[8, 16, 32]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=8,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=50))
