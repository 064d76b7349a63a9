"""Optimizers of saal_tasks.

Importing this package registers :class:`SAM` in ``saal_tasks.registry.OPTIMIZERS`` (the
registry imports it lazily on first build) and, through ``sam``, makes the torch
optimizers registered by mmengine visible to that registry.
"""
from saal_tasks.optim.sam import SAM

__all__ = ['SAM']
