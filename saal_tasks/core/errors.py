"""Errors that mean "the input is wrong": the CLI reports each as one line and exits with 2.

Every message names the problem and the fix. Anything not derived from :class:`UserError`
(or a ``FileNotFoundError`` for missing data) is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Base class of the one-line errors caused by configuration, data or state."""


class ConfigError(UserError, ValueError):
    """A config value is invalid (unknown component, option, or out-of-range value)."""


class ResumeError(UserError, RuntimeError):
    """The work directory cannot be started or resumed as asked."""


class StateCorruptedError(ResumeError):
    """A persisted state file is missing, truncated or modified."""


class ScoreError(UserError, ValueError):
    """The scorer produced unusable scores (NaN or infinite)."""


class AnnotationError(UserError, ValueError):
    """The oracle's answers (or an annotation file) do not fit the query or the task."""


class WorkDirError(UserError, OSError):
    """The work directory cannot be written (permissions, not a folder, disk full)."""


class MissingDependencyError(UserError, ImportError):
    """A package the configured task needs is not installed (the message says how to)."""


def naming_file(path: object, err: Exception) -> AnnotationError:
    """``err`` as an :class:`AnnotationError` whose message names ``path`` (once).

    Readers of answers name the file in some messages and not in others; the callers that
    know the file use this so that every import error names it exactly once.
    """
    message = str(err)
    return AnnotationError(message if str(path) in message else f'{path}: {message}')
