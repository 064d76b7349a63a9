# RI-SAAL with DeepLab-v3+ taken from mmseg's own config (_base_/mmseg_deeplabv3plus.py:
# ResNetV1c-101 with mmseg's deep stem, DepthwiseSeparableASPPHead) instead of our builder
# (ri_saal_synthia_v3plus.py keeps RIPU's 7x7 stem, so that torchvision's ImageNet ResNet-101
# fills it). Everything else is ri_saal_synthia_v3plus.py's. mmseg's ImageNet weights for
# this backbone (open-mmlab's resnet101_v1c) are read from the file named by
# task.model.backbone.init_cfg.checkpoint (checkpoints/resnet101_v1c.pth).
_base_ = ['ri_saal_synthia_v3plus.py', '_base_/mmseg_deeplabv3plus.py']

task = dict(model=dict(
    _delete_=True,
    type='EncoderDecoder',
    data_preprocessor=None,  # the task normalises its images itself (ImageNet mean and std)
    backbone={{_base_.model.backbone}},
    decode_head={{_base_.model.decode_head}},
    train_cfg=dict(),
    test_cfg=dict(mode='whole')))
