# Parts of the tiny FPN detectors of the demos (tiny_retinanet.py, tiny_faster_rcnn.py):
# mmdet's ImageNet normalisation with the batch padded to 32 (the FPN's largest stride), and
# ResNet-18 at a quarter of its width with strides 8, 16 and 32 (32, 64 and 128 channels).
_tiny_preprocessor = dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                          std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32)
_tiny_backbone = dict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                      out_indices=(1, 2, 3), norm_eval=False)
