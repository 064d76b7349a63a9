# RI-SAAL with pixel-based annotation (RIPU's "PA"): 40 single pixels per image over the
# 5 selections, each pick suppressing its 3x3 neighbourhood.
_base_ = ['ri_saal_synthia.py']
selector = dict(_delete_=True, type='RegionSelector', budget_pixels=40, num_selections=5,
                region_radius=0, suppress_radius=1)
