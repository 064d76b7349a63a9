"""The checked config boundary: the whole run config is checked before anything is built.

:func:`check_config` walks a run config (an mmengine ``Config`` after ``Config.fromfile``
and ``--cfg-options``) and raises :class:`~saal_tasks.core.errors.ConfigError` at the first
mistake, with a one-line message that names the full key path, the valid choices (nearest
match first) and the fix. It builds nothing and writes nothing.

Top-level keys:

* ``task`` (``TASKS``), ``scorer`` (``SCORERS``), ``selector`` (``SELECTORS``), ``oracle``
  (``ORACLES``; absent or None: the loop's ``SimulatedOracle``) and ``hooks`` (a list of
  ``AL_HOOKS`` configs; absent or None: no hooks): components, each
  checked with its children by :func:`~saal_tasks.core.build.check_component` (unknown
  ``type``, unknown or missing options, option types, ``config_children``);
* ``al``: keyword arguments of the loop, checked against its ``__init__``; its component
  options (``schedule``, ``initial_set``, ...) are checked like children;
* ``seed`` (a non-negative int), ``work_dir`` (str or None), ``custom_imports`` and
  ``default_scope``;
* :data:`EXTRA_KEYS`: names that mmengine/mmdet/mmseg base configs bring in, and helper
  variables of our configs and of ``tools/benchmark_al.py``: accepted, not checked;
* any key starting with ``_``: a config-local helper variable (e.g. ``_root = 'data/x'``
  then ``dataset=dict(root=_root)``), accepted, not checked.

Any other top-level key is refused (a typo such as ``sede=5`` would otherwise be ignored).
"""
from __future__ import annotations

import collections.abc as cabc
from typing import Any, Callable, Mapping

from ..core.build import (build_checked, check_component, check_options, closest,
                          nearest_first, signature_of, type_problem)
from ..core.errors import ConfigError

__all__ = ['check_config', 'check_component', 'build_checked', 'type_problem', 'RUN_KEYS',
           'REQUIRED_KEYS', 'EXTRA_KEYS', 'LOOP_TOP_LEVEL_ARGS']

#: Keys of a run config that this module checks.
RUN_KEYS = ('task', 'scorer', 'selector', 'oracle', 'hooks', 'al', 'seed', 'work_dir',
            'custom_imports', 'default_scope')
#: Keys a run config must have.
REQUIRED_KEYS = ('task', 'scorer', 'selector', 'al')
#: Top-level keys accepted without a check.
EXTRA_KEYS = (
    # Helper variables of our configs (configs/, projects/*/configs) and the sweep sections
    # of tools/benchmark_al.py.
    'data_root', 'classes', 'input_size', 'train_pipeline', 'test_pipeline', 'demo_root',
    'synthia_root', 'cityscapes_root', 'optimizers', 'strategies', 'sweep',
    # mmengine/mmdet/mmseg runtime and base-config names (the detection configs inherit
    # mmdet's; the task gets copies of what it uses, under `task`).
    'default_hooks', 'custom_hooks', 'env_cfg', 'vis_backends', 'visualizer', 'log_processor',
    'log_level', 'load_from', 'resume', 'launcher', 'cudnn_benchmark', 'model',
    'data_preprocessor', 'train_dataloader', 'val_dataloader', 'test_dataloader',
    'val_evaluator', 'test_evaluator', 'optim_wrapper', 'param_scheduler', 'auto_scale_lr',
    'train_cfg', 'val_cfg', 'test_cfg', 'dataset_type', 'backend_args', 'metainfo',
    'crop_size', 'img_scale', 'norm_cfg', 'tta_model', 'tta_pipeline',
)
#: Loop ``__init__`` arguments that come from the top level of the config, not from ``al``.
LOOP_TOP_LEVEL_ARGS = ('task', 'scorer', 'selector', 'oracle', 'work_dir', 'seed', 'hooks',
                       'config', 'run_name')
#: Component keys of the top level and their registries (``saal_tasks.registry``).
_COMPONENTS = (('task', 'TASKS'), ('scorer', 'SCORERS'), ('selector', 'SELECTORS'),
               ('oracle', 'ORACLES'))


def _plain(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, 'to_dict'):
        return cfg.to_dict()
    if not isinstance(cfg, cabc.Mapping):
        raise ConfigError(f'a run config must be a dict of keys, got {type(cfg).__name__}')
    return dict(cfg)


def _check_keys(data: Mapping[str, Any]) -> None:
    for key in data:
        if key in RUN_KEYS or key in EXTRA_KEYS or str(key).startswith('_'):
            continue
        close = closest(key, RUN_KEYS + EXTRA_KEYS)
        hint = f' (did you mean {close}?)' if close else ''
        keys = ', '.join(nearest_first(key, RUN_KEYS, keep_order=True))
        raise ConfigError(
            f'{key} is not a config key{hint}; keys: {keys}'
            ', plus the mmengine/mmdet/mmseg runtime and helper names of '
            'saal_tasks.engine.config_check.EXTRA_KEYS; name a helper variable of your own '
            f'with a leading underscore (e.g. _{key})')
    for key in REQUIRED_KEYS:
        if data.get(key) is None:
            raise ConfigError(f'the config has no {key!r}: inherit a base config from '
                              'configs/_base_ or add it')


def _check_scalars(data: Mapping[str, Any]) -> None:
    seed = data.get('seed', 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f'seed must be a non-negative integer, got {seed!r}: e.g. seed=0')
    for key, fix in (('work_dir', "e.g. work_dir='work_dirs/run' (None: work_dirs/<config "
                      "name>)"), ('default_scope', "e.g. default_scope='mmdet'")):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f'{key} must be a str or None, got {value!r} '
                              f'({type(value).__name__}): {fix}')
    imports = data.get('custom_imports')
    if imports is not None and not isinstance(imports, cabc.Mapping):
        raise ConfigError(f'custom_imports must be a dict, got {imports!r}: e.g. '
                          "custom_imports=dict(imports=['my_package.my_module'])")


def _check_al(al: Any, al_params: Callable[..., Any], al_children: Mapping[str, str]) -> None:
    if not isinstance(al, cabc.Mapping):
        raise ConfigError(f'al must be a dict of loop options, got {al!r}: e.g. '
                          'al=dict(num_rounds=10, budget=10, initial_size=20)')
    reserved = sorted(set(LOOP_TOP_LEVEL_ARGS) & set(al))
    if reserved:
        raise ConfigError(f'al.{reserved[0]} belongs at the top level of the config, not '
                          f'inside al: write {reserved[0]}=... at the top level')
    sig = signature_of(al_params, skip=LOOP_TOP_LEVEL_ARGS)
    if sig is None:
        return
    check_options(sig, dict(al), 'al', children=al_children,
                  child_injected=getattr(al_params, 'config_injected', None))


def check_config(cfg: Mapping[str, Any], al_params: Callable[..., Any],
                 al_children: Mapping[str, str]) -> None:
    """Check the whole run config (top-level keys, al options, every component and child).

    Args:
        cfg: The run config (``mmengine.Config`` or a dict).
        al_params: The loop's ``__init__`` (``al`` holds its keyword arguments, except
            :data:`LOOP_TOP_LEVEL_ARGS`).
        al_children: ``al`` options that are component dicts -> registry name in
            :mod:`saal_tasks.registry` (the loop's ``config_children``).

    Raises:
        ConfigError: The first mistake, as one line naming its key path and the fix.
    """
    data = _plain(cfg)
    _check_keys(data)
    _check_scalars(data)
    for key, registry in _COMPONENTS:
        if key == 'oracle' and data.get('oracle') is None:
            continue  # the loop's default: dict(type='SimulatedOracle')
        check_component(registry, data[key], key)
    hooks = data.get('hooks') or []
    if not isinstance(hooks, (list, tuple)):
        raise ConfigError(f'hooks must be a list of hook configs, got {hooks!r}: e.g. '
                          "hooks=[dict(type='LearningCurveHook')] or hooks=[]")
    for i, hook in enumerate(hooks):
        check_component('AL_HOOKS', hook, f'hooks[{i}]')
    _check_al(data['al'], al_params, al_children)
