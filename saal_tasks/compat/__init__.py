"""Compatibility code for the OpenMMLab stack: the mmcv ops fallback, mmengine runtime shims."""
