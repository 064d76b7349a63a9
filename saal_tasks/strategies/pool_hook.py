"""The hook that gives pool-aware scorers and selectors their view of the loop."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..hooks.base import ALHook
from ..registry import AL_HOOKS
from .context import LoopPoolView, PoolAware

if TYPE_CHECKING:  # pragma: no cover
    from ..core.loop import ActiveLearningLoop


@AL_HOOKS.register_module()
class PoolViewHook(ALHook):
    """Binds a :class:`LoopPoolView` to the loop's scorer and selector when they need one."""

    def before_run(self, loop: 'ActiveLearningLoop') -> None:
        view = LoopPoolView(loop)
        for component in (loop.scorer, loop.selector):
            if isinstance(component, PoolAware):
                component.bind(view)
