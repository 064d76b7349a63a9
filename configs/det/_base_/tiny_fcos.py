# The tiny FCOS of the detection demos (fcos_tiny_voc_demo.py, fcos_tiny_coco_demo.py):
# mmdet's FCOS with its improvements (centre sampling, distances normalised by the stride,
# centre-ness on the box tower, GIoU), shrunk for a 2-core CPU: ResNet-18 x0.25, a 3-level FPN
# of 64 channels, one GroupNorm tower conv per branch.
# A variable, not a task: a config takes it with task = dict(model={{_base_._tiny_fcos}}).
_base_ = ['./tiny_fpn_parts.py']

_tiny_fcos = dict(
    _delete_=True,
    type='FCOS',
    data_preprocessor={{_base_._tiny_preprocessor}},
    backbone={{_base_._tiny_backbone}},
    neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=64, num_outs=3),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=3,  # the demo classes: bottle, car, person
        in_channels=64, stacked_convs=1, feat_channels=64, strides=[8, 16, 32],
        # The objects' largest centre-to-side distance per level, for objects of 16-100 px.
        regress_ranges=((-1, 32), (32, 64), (64, 1e8)),
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        center_sampling=True, center_sample_radius=1.5, norm_on_bbox=True,
        centerness_on_reg=True, conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.5), max_per_img=50))
