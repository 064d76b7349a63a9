# Random baseline for SSD300 on PASCAL VOC07+12 (paper Figure 10), same protocol as SAAL.
_base_ = ['./_base_/paper_protocol.py']

scorer = dict(type='RandomScorer')
selector = dict(type='TopKSelector')
