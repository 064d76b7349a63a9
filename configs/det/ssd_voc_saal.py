# Box-sum SAAL for SSD300 on PASCAL VOC07+12, the paper's protocol (section 4.3, Figure 10):
#   python tools/train_al.py configs/det/ssd_voc_saal.py
# An image's score is the sum over its pseudo-boxes of the classification loss at theta + eps,
# eps from that image's own classification loss (exact per image: ReferenceEngine).
_base_ = ['./_base_/paper_protocol.py']

scorer = dict(
    type='SharpnessScorer',
    perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
    engine=dict(type='ReferenceEngine'),
    mode='max',
    objective_reduction='sum',
    score_reduction='sum',
    log_interval=500)
selector = dict(type='TopKSelector')
