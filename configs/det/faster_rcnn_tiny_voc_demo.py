# Faster R-CNN on the detection demo (`make demo-det` writes the data): the tiny Faster
# R-CNN of _base_/tiny_faster_rcnn.py, 128 px input. The data, schedule and AL protocol are
# those of ssd_tiny_voc_demo.py; box-sum SAAL sums the RoI head's cross-entropy of each
# pseudo-box taken as a RoI (TwoStageAdapter, chosen from roi_head.bbox_head.type).
_base_ = ['./ssd_tiny_voc_demo.py', './_base_/tiny_faster_rcnn.py']

task = dict(model={{_base_._tiny_faster_rcnn}})
