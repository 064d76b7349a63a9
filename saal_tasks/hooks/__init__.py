"""Loop hooks."""
from ..core.hooks import ALHook
from .diagnostics import SharpnessDiagnosticsHook
from .learning_curve import LearningCurveHook
from .report import RunReportHook
from .scalars import ScalarsHook

__all__ = ['ALHook', 'LearningCurveHook', 'RunReportHook', 'ScalarsHook',
           'SharpnessDiagnosticsHook']
