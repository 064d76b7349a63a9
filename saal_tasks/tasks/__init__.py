"""Task adapters. Only classification is imported here: the detection and segmentation
adapters import mmdet/mmseg and are imported on their own."""
from .classification import ClassificationTask

__all__ = ['ClassificationTask']
