# The COCO-format detection demo (ssd_tiny_coco_demo.py: data/coco_demo, CocoMetric, images
# without objects in the pool) with the tiny GFL of _base_/tiny_gfl.py.
_base_ = ['./ssd_tiny_coco_demo.py', './_base_/tiny_gfl.py']

task = dict(model={{_base_._tiny_gfl}})
