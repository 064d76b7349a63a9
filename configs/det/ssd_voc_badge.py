# BADGE baseline for SSD300 on PASCAL VOC07+12 (paper Figure 10): k-means++ seeding (first
# pick: the largest norm) on each image's gradient embedding, the sum over its pseudo-boxes of
# (p - onehot(label)) x feature (DetectionTask.gradient_embedding). The features of SSD's six
# levels are projected to 128 dimensions by a fixed random matrix, so an embedding has
# 21 x 128 numbers (the exact per-level blocks would have 21 x 2,816).
_base_ = ['./_base_/paper_protocol.py']

task = dict(badge_feature_dim=128, badge_projection_seed=0)
scorer = dict(type='GradientNormScorer', batch_size=16)
selector = dict(type='BADGESelector', batch_size=16)
