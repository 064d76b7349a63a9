"""Loop hooks."""
from .base import ALHook
from .learning_curve import LearningCurveHook

__all__ = ['ALHook', 'LearningCurveHook']
