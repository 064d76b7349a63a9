# GFL on the detection demo (`make demo-det` writes the data): the tiny GFL of
# _base_/tiny_gfl.py, 128 px input. The data, schedule and AL protocol are those of
# ssd_tiny_voc_demo.py; box-sum SAAL splits GFL's own Quality Focal Loss over the pseudo-boxes
# (GFLAdapter, chosen from bbox_head.type), each positive anchor's target being the IoU of the
# box it predicts.
_base_ = ['./ssd_tiny_voc_demo.py', './_base_/tiny_gfl.py']

task = dict(model={{_base_._tiny_gfl}})

# Dense heads score in chunks: FastExactEngine, 32 images per pass, each with its own ε
# (about half the time of per-image scoring on CPU; docs/detection.md).
scorer = dict(engine=dict(type='FastExactEngine', chunk_size=32))
