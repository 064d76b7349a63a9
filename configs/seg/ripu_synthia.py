# RIPU baseline (Xie et al., CVPR 2022): region impurity x mean pixel entropy in the window.
_base_ = ['_base_/synthia_to_cityscapes.py']
scorer = dict(type='RegionImpurityScorer', k=1, window_average=True,
              pixel_scorer=dict(type='PixelEntropyScorer'))
