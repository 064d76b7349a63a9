"""Classification: datasets (torchvision, scikit-learn digits), models, the task adapter."""
from .datasets import ClassificationData
from .models import ResNet18CIFAR, SmallCNN
from .task import ClassificationTask

__all__ = ['ClassificationData', 'ClassificationTask', 'ResNet18CIFAR', 'SmallCNN']
