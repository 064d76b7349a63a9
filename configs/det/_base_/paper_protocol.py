# The paper's detection protocol (section 4.3): SSD300 (VGG16) on VOC07+12 trainval, VOC07
# test mAP; 1,000 random initial images, then 9 rounds of 1,000 queries over the whole
# unlabeled pool; a new detector per round trained for 300 epochs with batch size 32.
_base_ = ['./ssd300_voc0712_al.py']

task = dict(
    # No network at run time: the ImageNet VGG16 weights mmdet names 'open-mmlab://vgg16_caffe'
    # must be a local file (see docs/detection.md); model.backbone.init_cfg=None trains from
    # scratch instead.
    model=dict(backbone=dict(init_cfg=dict(
        type='Pretrained', checkpoint='data/pretrained/vgg16_caffe-292e1171.pth'))),
    train_dataloader=dict(batch_size=32),
    train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=300, val_interval=300),
    # mmdet's VOC schedule (warm-up, then x0.1 at 2/3 and 5/6 of training), over 300 epochs.
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', begin=0, end=300, by_epoch=True, milestones=[200, 250],
             gamma=0.1),
    ])
al = dict(
    num_rounds=9,
    budget=1000,
    subset_size=None,
    initial_size=1000,
    initial_set=dict(type='RandomInitialSet'),
    schedule=dict(type='ScratchSchedule'))
