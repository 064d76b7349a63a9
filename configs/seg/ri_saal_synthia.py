# RI-SAAL (paper Table 4, section 4.4 and appendix A.8): region impurity x pixel-wise SAAL.
# For each target image, epsilon = rho * g / ||g|| with g the gradient of the image's mean
# pixel cross-entropy against its own pseudo-label map (objective_reduction='mean'); each
# pixel then scores its cross-entropy under theta + epsilon (mode 'max'), and the selector
# reveals 3x3 regions at the highest P x S.
_base_ = ['_base_/synthia_to_cityscapes.py']
scorer = dict(
    type='RegionImpurityScorer',
    k=1,
    window_average=False,
    pixel_scorer=dict(
        type='SharpnessScorer',
        perturbation=dict(type='SAMPerturbation', rho=0.05, q=2),
        engine=dict(type='ReferenceEngine'),  # exact, one image at a time
        mode='max',
        objective_reduction='mean',
        score_reduction='mean',
        log_interval=100))
