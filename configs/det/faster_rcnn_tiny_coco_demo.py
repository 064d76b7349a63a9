# The COCO-format detection demo (ssd_tiny_coco_demo.py: data/coco_demo, CocoMetric, images
# without objects in the pool) with the tiny Faster R-CNN of _base_/tiny_faster_rcnn.py.
_base_ = ['./ssd_tiny_coco_demo.py', './_base_/tiny_faster_rcnn.py']

task = dict(model={{_base_._tiny_faster_rcnn}})
