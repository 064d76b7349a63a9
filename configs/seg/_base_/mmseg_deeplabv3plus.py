# mmseg's own DeepLab-v3+ (configs/_base_/models/deeplabv3plus_r50-d8.py, read through the
# `mmseg::` scope), set to the paper's setting: ResNetV1c-101, SYNTHIA's 16 classes, plain
# batch norms frozen at their ImageNet statistics (RIPU's FREEZE_BN; SyncBN needs a process
# group), the cross-entropy averaged over labeled pixels only (as torch's and RIPU's), and no
# auxiliary FCN head (RI-SAAL trains and scores the decode head's logits). The top-level
# `model` here is what the configs copy into task.model, not a key the task reads.
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py']

model = dict(
    # mmseg's file names an open-mmlab:// URL here; nothing is downloaded at run time: the
    # ImageNet weights come from a local file (open-mmlab's resnet101_v1c, saved there).
    pretrained=None,
    backbone=dict(depth=101, norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet101_v1c.pth')),
    decode_head=dict(num_classes=16, norm_cfg=dict(type='BN', requires_grad=False),
                     loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=None)
