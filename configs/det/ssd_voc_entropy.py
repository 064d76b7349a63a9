# Entropy baseline for SSD300 on PASCAL VOC07+12 (paper Figure 10): an image's score is the
# sum over its pseudo-boxes of the entropy of each box's class distribution (background
# included), with the same pseudo-boxes as SAAL.
_base_ = ['./_base_/paper_protocol.py']

scorer = dict(type='BoxEntropyScorer', batch_size=16, aggregate='sum')
selector = dict(type='TopKSelector')
