# RetinaNet on the detection demo (`make demo-det` writes the data): the tiny RetinaNet of
# _base_/tiny_retinanet.py, 128 px input. The data, schedule and AL protocol are those of
# ssd_tiny_voc_demo.py; box-sum SAAL splits RetinaNet's own focal loss over the pseudo-boxes
# (SigmoidAnchorAdapter, chosen from bbox_head.type).
_base_ = ['./ssd_tiny_voc_demo.py', './_base_/tiny_retinanet.py']

task = dict(model={{_base_._tiny_retinanet}})
