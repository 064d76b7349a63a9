# RI-SAAL with pixel-based annotation (RIPU's "PA"): 40 single pixels per image over the
# 5 selections (8 a round). As in RIPU, the region impurity is taken over the 65x65 window
# (RADIUS_K = 32) and each picked pixel suppresses its 65x65 neighbourhood for the rest of the
# run.
_base_ = ['ri_saal_synthia.py']
scorer = dict(k=32)
selector = dict(_delete_=True, type='RegionSelector', budget_pixels=40, num_selections=5,
                region_radius=0, suppress_radius=32, budget_rule='regions',
                persistent_suppression=True, tie_break='column_major')
