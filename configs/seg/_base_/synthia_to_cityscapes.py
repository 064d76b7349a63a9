# SYNTHIA (RAND-CITYSCAPES) -> Cityscapes, 16 classes, the paper's setting (RIPU's protocol):
# DeepLab-v2 (ResNet-101, ImageNet weights from a local file), SGD lr 2.5e-4 with poly decay,
# batch 2 source + 2 target, 40k iterations; 5 selections at iterations 10k, 12k, ..., 18k,
# each revealing 3x3 regions until 2.2 % of every target image is labeled in total.
# Data: convert labels once with tools/convert_seg_labels.py (see docs/segmentation.md).
_base_ = ['../../_base_/default_runtime.py']
custom_imports = dict(imports=['saal_tasks.tasks.segmentation.task',
                               'saal_tasks.tasks.segmentation.scorers'],
                      allow_failed_imports=False)

synthia_root = 'data/synthia/RAND_CITYSCAPES'
cityscapes_root = 'data/cityscapes'
task = dict(
    type='SegmentationTask',
    source=dict(kind='synthia', data_root=synthia_root),
    target=dict(kind='cityscapes', data_root=cityscapes_root, split='train'),
    val=dict(kind='cityscapes', data_root=cityscapes_root, split='val'),
    # torchvision's ImageNet ResNet-101 state dict (resnet101-*.pth) saved at this path.
    # Batch norms frozen at the ImageNet statistics, as RIPU's SYNTHIA configs (FREEZE_BN).
    model=dict(arch='deeplab_v2', backbone_weights='checkpoints/resnet101_imagenet.pth',
               freeze_bn=True),
    # RIPU resizes SYNTHIA's 1280x760 images to 1280x720 (SOURCE_INPUT_SIZE_TRAIN) and
    # Cityscapes' to 1280x640; it neither flips nor crops (INPUT_SCALES_TRAIN = (1, 1)).
    source_size=(720, 1280),
    target_size=(640, 1280),
    # Scoring and selection at Cityscapes' label resolution, as RIPU: the logits are upsampled
    # to 1024x2048 first. unit_size=None selects at the 640x1280 input instead (faster).
    unit_size=(1024, 2048),
    flip=False,
    batch_size=2,
    target_batch_size=2,
    lr=2.5e-4,
    head_lr_mult=10.0,
    momentum=0.9,
    weight_decay=5e-4,
    poly_power=0.9,
    # RIPU's two extra terms with RIPU's definitions and weights (docs/segmentation.md):
    # local consistency on the source label boundaries, negative learning on target pixels.
    local_consistency_weight=0.1,
    negative_learning_weight=1.0,
    negative_learning_threshold=0.05,
    eval_batch_size=2,
    log_interval=50)
# RIPU's selection rules: a round places ceil(H*W*ratio/5/9) 3x3 regions per image, each
# centre's 5x5 suppression window blocks later centres in every later round too, and equal
# scores go to the leftmost column, then the top row (RIPU's torch.max over rows, then columns).
selector = dict(type='RegionSelector', budget_ratio=0.022, num_selections=5,
                region_radius=1, suppress_radius=2, budget_rule='regions',
                persistent_suppression=True, tie_break='column_major')
al = dict(
    num_rounds=5,
    budget=None,  # per image: the selector's budget
    initial_size=0,  # the source is the labeled data at the start
    initial_set=dict(type='RandomInitialSet'),
    # RIPU's poly schedule decays over MAX_ITER = 62500 iterations; training stops at 40000.
    schedule=dict(type='InRunSchedule', round_iters=[10000, 12000, 14000, 16000, 18000, 40000],
                  lr_horizon=62500))
# The learning curve against the labeled pixel percentage (chosen for partial annotation).
hooks = [dict(type='LearningCurveHook', metric=['mIoU16', 'mIoU13']),
         dict(type='RunReportHook'),
         dict(type='ScalarsHook')]
