"""Building components from config dicts, with errors that list what is available."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from mmengine.registry import Registry

from .errors import ConfigError


def build_component(registry: Registry, cfg: Mapping[str, Any], field: str) -> Any:
    """``registry.build(cfg)``, but an unknown ``type`` names the registered alternatives.

    Args:
        registry: Registry to build from.
        cfg: Component config with a ``type`` key.
        field: Config key the component came from (for the message), e.g. ``'scorer'``.

    Raises:
        ConfigError: ``cfg`` has no ``type`` or names an unregistered one.
    """
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ConfigError(f'{field} must be a dict with a "type" key, got {cfg!r}')
    name = cfg['type']
    if isinstance(name, str) and registry.get(name) is None:
        known = ', '.join(sorted(registry.module_dict)) or '(none)'
        raise ConfigError(f'{field}.type={name!r} is not a registered {registry.name}; '
                          f'registered: {known}')
    return registry.build(cfg)


def check_kwargs(func: Callable, kwargs: Mapping[str, Any], field: str) -> None:
    """Refuse keys that ``func`` does not take, naming the valid ones (typos in configs).

    Raises:
        ConfigError: An unknown key is present.
    """
    params = inspect.signature(func).parameters
    valid = [n for n, p in params.items()
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != 'self']
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(f'{field}.{unknown[0]} is not an option; valid {field} options: '
                          f"{', '.join(valid)}")
