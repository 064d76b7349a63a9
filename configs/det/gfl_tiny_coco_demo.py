# The COCO-format detection demo (ssd_tiny_coco_demo.py: data/coco_demo, CocoMetric, images
# without objects in the pool) with the tiny GFL of _base_/tiny_gfl.py.
_base_ = ['./ssd_tiny_coco_demo.py', './_base_/tiny_gfl.py']

task = dict(model={{_base_._tiny_gfl}})

# Dense heads score in chunks: FastExactEngine, 32 images per pass, each with its own ε
# (about half the time of per-image scoring on CPU; docs/detection.md).
scorer = dict(engine=dict(type='FastExactEngine', chunk_size=32))
