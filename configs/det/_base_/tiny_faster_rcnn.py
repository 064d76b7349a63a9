# The tiny Faster R-CNN of the detection demos (faster_rcnn_tiny_voc_demo.py,
# faster_rcnn_tiny_coco_demo.py): mmdet's faster-rcnn_r50_fpn.py shrunk for a 2-core CPU
# (ResNet-18 x0.25, a 3-level FPN of 64 channels, a 2-fc RoI head of 128, fewer proposals).
# A variable, not a task: a config takes it with task = dict(model={{_base_._tiny_faster_rcnn}}).
_base_ = ['./tiny_fpn_parts.py']

_tiny_faster_rcnn = dict(
    _delete_=True,
    type='FasterRCNN',
    data_preprocessor={{_base_._tiny_preprocessor}},
    backbone={{_base_._tiny_backbone}},
    neck=dict(type='FPN', in_channels=[32, 64, 128], out_channels=64, num_outs=3),
    rpn_head=dict(
        type='RPNHead', in_channels=64, feat_channels=64,
        # Anchors of 24-96 px at strides 8-32, for the demo's objects at 128 px.
        anchor_generator=dict(type='AnchorGenerator', scales=[3], ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                # torchvision's RoIAlign: no compiled mmcv op needed
                                # (mmcv-lite machines), same sampling as mmcv's.
                                roi_layer=dict(type='RoIAlign', output_size=7,
                                               sampling_ratio=0, use_torchvision=True),
                                out_channels=64, featmap_strides=[8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=64, fc_out_channels=128,
            roi_feat_size=7,
            num_classes=3,  # the demo classes: bottle, car, person
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                          min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=128, pos_fraction=0.5, neg_pos_ub=-1,
                         add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=400, max_per_img=200,
                          nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                          min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25, neg_pos_ub=-1,
                         add_gt_as_proposals=True),
            pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=50)))
