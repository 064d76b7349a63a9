# RetinaNet on the detection demo (`make demo-det` writes the data): the tiny RetinaNet of
# _base_/tiny_retinanet.py, 128 px input. The data, schedule and AL protocol are those of
# ssd_tiny_voc_demo.py; box-sum SAAL splits RetinaNet's own focal loss over the pseudo-boxes
# (SigmoidAnchorAdapter, chosen from bbox_head.type).
_base_ = ['./ssd_tiny_voc_demo.py', './_base_/tiny_retinanet.py']

task = dict(model={{_base_._tiny_retinanet}})

# Dense heads score in chunks: FastExactEngine, 32 images per pass, each with its own ε
# (about half the time of per-image scoring on CPU; docs/detection.md).
scorer = dict(engine=dict(type='FastExactEngine', chunk_size=32))
