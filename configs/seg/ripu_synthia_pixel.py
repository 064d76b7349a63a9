# RIPU's pixel-based annotation ("PA"), as RIPU runs it: pixel entropy times the region
# impurity over the 65x65 window (RADIUS_K = 32; the entropy is not window-averaged in PA),
# 40 pixels per image over 5 selections, each suppressing its 65x65 neighbourhood for the rest
# of the run.
_base_ = ['ri_saal_synthia_pixel.py']
scorer = dict(_delete_=True, type='RegionImpurityScorer', k=32, window_average=False,
              pixel_scorer=dict(type='PixelEntropyScorer'))
