# The COCO-format detection demo (ssd_tiny_coco_demo.py: data/coco_demo, CocoMetric, images
# without objects in the pool) with the tiny FCOS of _base_/tiny_fcos.py.
_base_ = ['./ssd_tiny_coco_demo.py', './_base_/tiny_fcos.py']

task = dict(model={{_base_._tiny_fcos}})
