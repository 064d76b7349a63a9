"""Classification: datasets (torchvision, scikit-learn digits), models, the task adapter."""
from .data import ClassificationData
from .image_folder import ImageFolderData
from .models import ResNet18CIFAR, SmallCNN
from .task import ClassificationTask

__all__ = ['ClassificationData', 'ClassificationTask', 'ImageFolderData', 'ResNet18CIFAR',
           'SmallCNN']
