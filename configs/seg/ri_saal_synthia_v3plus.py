# RI-SAAL with DeepLab-v3+ (ResNet-101) and RIPU's 5 % region budget for this model.
_base_ = ['ri_saal_synthia.py']
task = dict(model=dict(arch='deeplab_v3plus'))  # freeze_bn=True inherited, as RIPU
selector = dict(budget_ratio=0.05)
