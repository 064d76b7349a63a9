# Random baseline: uniform pixel scores, revealed as 3x3 regions by the same selector.
_base_ = ['_base_/synthia_to_cityscapes.py']
scorer = dict(type='RandomPixelScorer')
