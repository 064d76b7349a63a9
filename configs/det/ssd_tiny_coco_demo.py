# The detection demo in COCO format: the tiny SSD of ssd_tiny_voc_demo.py on generated data in
# COCO's layout (`python tools/make_coco_demo.py` writes data/coco_demo): train2017 as the pool
# (one image in six holds no object; such images stay in the pool and can be queried), val2017
# for COCO mAP with mmdet's CocoMetric. The same data with RetinaNet and Faster R-CNN:
# retinanet_tiny_coco_demo.py, faster_rcnn_tiny_coco_demo.py.
_base_ = ['./ssd_tiny_voc_demo.py']

data_root = 'data/coco_demo/'
classes = ('bottle', 'car', 'person')


def coco_set(name, pipeline, test_mode=False):
    return dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                ann_file=f'annotations/instances_{name}.json', data_prefix=dict(img=f'{name}/'),
                test_mode=test_mode,
                filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=32),
                pipeline=pipeline)


task = dict(
    train_dataloader=dict(
        dataset=dict(_delete_=True, **coco_set('train2017', {{_base_.train_pipeline}}))),
    test_dataloader=dict(
        dataset=dict(_delete_=True,
                     **coco_set('val2017', {{_base_.test_pipeline}}, test_mode=True))),
    # A relative ann_file is read under the test dataset's data_root.
    test_evaluator=dict(_delete_=True, type='CocoMetric',
                        ann_file='annotations/instances_val2017.json', metric='bbox'))
hooks = [dict(type='LearningCurveHook', metric='bbox_mAP'), dict(type='RunReportHook'),
         dict(type='ScalarsHook')]
