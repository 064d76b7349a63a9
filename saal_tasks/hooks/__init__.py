"""Loop hooks."""
from ..core.hooks import ALHook
from .diagnostics import SharpnessDiagnosticsHook
from .learning_curve import LearningCurveHook

__all__ = ['ALHook', 'LearningCurveHook', 'SharpnessDiagnosticsHook']
