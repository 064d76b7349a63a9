# RIPU on the segmentation demo (compare with ri_saal_tiny_demo.py).
_base_ = ['ri_saal_tiny_demo.py']
scorer = dict(_delete_=True, type='RegionImpurityScorer', k=1, window_average=True,
              pixel_scorer=dict(type='PixelEntropyScorer'))
