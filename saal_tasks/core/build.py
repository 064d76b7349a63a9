"""Building components from config dicts, checked first, with one-line errors.

A component config is a dict with ``type`` (a registered name or a class) and the keyword
arguments of that class. :func:`check_component` checks it against the class before
anything is built: the ``type`` is registered, every key is an ``__init__`` option, the
required options are there, the values fit the annotations, and every child component is
checked the same way. :func:`build_checked` checks, builds, and turns a ``ValueError`` of the
constructor into a :class:`ConfigError` that names the key path. Every message is one line
with the full key path, the valid choices (nearest match first) and the fix.

A component class declares its children, the parameters it builds from component dicts::

    config_children: ClassVar[Mapping[str, str]] = {'engine': 'ENGINES'}
    config_injected: ClassVar[Mapping[str, tuple[str, ...]]] = {'model': ('num_classes',)}

``config_children`` maps an ``__init__`` parameter to the name of its registry in
:mod:`saal_tasks.registry` (the value may be ``None``, one component dict or a list of
them); ``config_injected`` names, per child, the options the class fills in itself when it
builds the child, which the child's config therefore need not give.

Type checks cover ``int`` (not bool, str or float), ``float`` (int accepted), ``bool``,
``str``, ``None``, unions, ``Literal``, lists/tuples/sequences (a list or a tuple), dicts
and mappings, and paths (a str). Other annotations (``Any``, classes, tensors) are not
checked, and neither are values a config file cannot hold (objects passed from Python).
"""
from __future__ import annotations

import collections.abc as cabc
import difflib
import functools
import importlib
import inspect
import os
import pathlib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from mmengine.registry import Registry

from .. import registry as registries
from .errors import ConfigError, UserError

__all__ = ['build_component', 'build_checked', 'check_component', 'check_options',
           'closest', 'nearest_first', 'registered_names', 'resolve_registry',
           'signature_of', 'type_problem', 'ComponentSignature']

#: Keys of a component dict that are not options of its class.
META_KEYS = ('type', '_scope_', '_delete_')
_EMPTY = inspect.Parameter.empty
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict, cabc.Mapping)


# ----------------------------------------------------------------------------- helpers
def nearest_first(name: str, names: Iterable[str], keep_order: bool = False) -> list[str]:
    """``names`` with the close matches of ``name`` first (difflib, case-insensitive).

    The rest keep their order when ``keep_order`` and are sorted otherwise.
    """
    names = list(dict.fromkeys(names))
    lower: dict[str, str] = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    close = [lower[m] for m in difflib.get_close_matches(str(name).lower(), list(lower),
                                                         n=3, cutoff=0.6)]
    rest = [n for n in names if n not in close]
    return close + (rest if keep_order else sorted(rest))


def closest(name: str, names: Iterable[str]) -> str | None:
    """The nearest of ``names`` to ``name`` if it is close enough to suggest, else ``None``."""
    lower: dict[str, str] = {}
    for n in names:
        lower.setdefault(n.lower(), n)
    match = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.7)
    return lower[match[0]] if match else None


def resolve_registry(registry: Registry | str) -> Registry:
    """A registry, or the registry of that name in :mod:`saal_tasks.registry`."""
    if isinstance(registry, Registry):
        return registry
    found = getattr(registries, registry, None)
    if not isinstance(found, Registry):
        raise LookupError(f'saal_tasks.registry has no registry {registry!r} (named by a '
                          'config_children declaration)')
    return found


def _chain(registry: Registry) -> list[Registry]:
    out, reg = [], registry
    while reg is not None:
        out.append(reg)
        reg = reg.parent
    return out


def registered_names(registry: Registry) -> list[str]:
    """Names registered in ``registry`` and its parents (after the lazy imports), sorted."""
    names: dict[str, None] = {}
    for reg in _chain(registry):
        reg.import_from_location()
        names.update(dict.fromkeys(reg.module_dict))
    return sorted(names)


def _registered_classes(registry: Registry) -> list[Any]:
    out: dict[int, Any] = {}
    for reg in _chain(registry):
        reg.import_from_location()
        for obj in reg.module_dict.values():
            out.setdefault(id(obj), obj)
    return list(out.values())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _not_a_component(registry: Registry, path: str, value: Any) -> ConfigError:
    names = ', '.join(registered_names(registry)) or '(none)'
    return ConfigError(f'{path} must be a dict with a "type" key (a registered '
                       f'{registry.name}: {names}), got {_short(value)}')


def component_class(registry: Registry, name: Any, label: str) -> Any:
    """The class (or function) that ``type=name`` builds; ``label`` names the key."""
    if isinstance(name, str):
        found = registry.get(name)
        if found is not None:
            return found
        names = registered_names(registry)
        close = closest(name, names)
        hint = f' did you mean {close!r}?' if close else ''
        fix = '' if close else ('; pick one, or register your class and import it with '
                                'custom_imports')
        listed = ', '.join(nearest_first(name, names)) or '(none)'
        raise ConfigError(f'{label}={name!r} is not a registered {registry.name};{hint} '
                          f'registered: {listed}{fix}')
    if callable(name):
        return name
    raise ConfigError(f'{label} must be the name of a registered {registry.name} or a class, '
                      f'got {_short(name)}')


# ----------------------------------------------------------------------------- signatures
@dataclass(frozen=True)
class ComponentSignature:
    """What a config may pass to a class or function."""

    owner: str
    params: Mapping[str, inspect.Parameter]
    var_kw: bool
    hints: Mapping[str, Any]


def _hints(func: Any, params: Mapping[str, inspect.Parameter]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - one unresolvable name: resolve the others one by one
        pass
    namespace = getattr(func, '__globals__', None)
    if namespace is None:
        module = importlib.import_module(getattr(func, '__module__', None) or 'builtins')
        namespace = vars(module)
    out = {}
    for name, param in params.items():
        ann = param.annotation
        if ann is _EMPTY:
            continue
        if isinstance(ann, str):
            try:
                ann = eval(ann, dict(namespace), {})  # noqa: S307 - the module's own annotation
            except Exception:  # noqa: BLE001 - not checkable: skip it
                continue
        out[name] = ann
    return out


@functools.lru_cache(maxsize=1024)
def _signature_cached(obj: Any, skip: tuple[str, ...]) -> ComponentSignature | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params, var_kw = {}, False
    for name, param in sig.parameters.items():
        if param.kind is param.VAR_KEYWORD:
            var_kw = True
        elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) \
                and name not in skip and name != 'self':
            params[name] = param
    func = obj.__init__ if inspect.isclass(obj) else obj
    hints = _hints(func, params) if inspect.isfunction(func) or inspect.ismethod(func) else {}
    owner = str(getattr(obj, '__qualname__', None) or getattr(obj, '__name__', repr(obj)))
    if not inspect.isclass(obj):
        owner = owner.split('.')[0]
    return ComponentSignature(owner, params, var_kw, {k: v for k, v in hints.items()
                                                      if k in params})


def signature_of(obj: Any, skip: Sequence[str] = ()) -> ComponentSignature | None:
    """The keyword options of a class's ``__init__`` (or a function); ``None`` if unknown."""
    try:
        return _signature_cached(obj, tuple(skip))
    except TypeError:  # unhashable callable
        return _signature_cached.__wrapped__(obj, tuple(skip))


# ----------------------------------------------------------------------------- types
def _is_plain(value: Any) -> bool:
    return isinstance(value, _PLAIN)


_SEQUENCES = (list, tuple, cabc.Sequence, cabc.MutableSequence, typing.Sequence,
              typing.MutableSequence, typing.List, typing.Tuple)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping, typing.Dict, typing.Mapping,
             typing.MutableMapping)


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits ``hint``; ``None`` when that cannot be told."""
    if not _is_plain(value):
        return None
    if hint is None or hint is type(None):
        return value is None
    if hint is Any or hint is object:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (hasattr(types, 'UnionType') and origin is types.UnionType):
        results = [_matches(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    base = origin or hint
    if base is os.PathLike or (inspect.isclass(base) and issubclass(base, pathlib.PurePath)):
        return isinstance(value, str)
    if base in _MAPPINGS:
        return isinstance(value, cabc.Mapping)
    if base in _SEQUENCES or base is cabc.Iterable:
        if not isinstance(value, (list, tuple)):
            return None if base is cabc.Iterable else False
        if base in (tuple, typing.Tuple) and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False
            items: Iterable[tuple[Any, Any]] = zip(value, args)
        elif args:
            items = ((v, args[0]) for v in value)
        else:
            return True
        return not any(_matches(v, a) is False for v, a in items)
    return None


def _describe(hint: Any) -> str:
    if hint is None or hint is type(None):
        return 'None'
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or (hasattr(types, 'UnionType') and origin is types.UnionType):
        return ' or '.join(_describe(a) for a in args)
    if origin is typing.Literal:
        return 'one of ' + ', '.join(repr(a) for a in args)
    base = origin or hint
    if base is os.PathLike or (inspect.isclass(base) and issubclass(base, pathlib.PurePath)):
        return 'a path (str)'
    if base in _MAPPINGS:
        return 'a dict'
    if base in _SEQUENCES or base is cabc.Iterable:
        if base in (tuple, typing.Tuple) and args and args[-1] is not Ellipsis:
            return f'a list of {len(args)} ({", ".join(_describe(a) for a in args)})'
        return f'a list of {_describe(args[0])}' if args else 'a list'
    return getattr(hint, '__name__', str(hint))


def type_problem(value: Any, hint: Any, key: str, default: Any = _EMPTY) -> str | None:
    """The one-line complaint if ``value`` does not fit ``hint`` (``key`` = its path)."""
    if _matches(value, hint) is not False:
        return None
    expected = _describe(hint)
    if default is not _EMPTY and default is not None and _matches(default, hint):
        fix = f'e.g. {key}={default!r} (the default)'
    else:
        fix = f'give a value of type {expected}'
    return f'{key} must be {expected}, got {_short(value)} ({type(value).__name__}): {fix}'


# ----------------------------------------------------------------------------- checks
def _child_classes(children: Mapping[str, Any], kwargs: Mapping[str, Any],
                   name: str) -> list[Any]:
    """Classes the child ``name`` may build: the configured type, else its whole registry."""
    registry = resolve_registry(children[name])
    value = kwargs.get(name)
    if isinstance(value, Mapping) and 'type' in value:
        value = value['type']
    if isinstance(value, str):
        found = registry.get(value)
        if found is not None:
            return [found]
    elif callable(value):
        return [value]
    return _registered_classes(registry)


def _takes(obj: Any, key: str) -> bool:
    sig = signature_of(obj)
    return sig is not None and key in sig.params


def _unknown_option(sig: ComponentSignature, key: str, path: str, kwargs: Mapping[str, Any],
                    children: Mapping[str, Any], registry: Registry | None,
                    cls: Any) -> ConfigError:
    options = list(sig.params)
    hint = None
    for child in children:
        if any(_takes(c, key) for c in _child_classes(children, kwargs, child)):
            hint = f'{path}.{child}.{key}'
            break
    if hint is None:
        hint = closest(key, options)
    text = f'{path}.{key} is not an option of {sig.owner}'
    listed = ', '.join(nearest_first(key, options, keep_order=True))
    if hint:
        text += f' (did you mean {hint}?); options: {listed}'
    elif listed:
        text += f'; remove it or use one of its options: {listed}'
    else:
        text += f'; remove it ({sig.owner} takes no options)'
    if registry is not None:
        others = sorted({getattr(c, '__name__', repr(c)) for c in _registered_classes(registry)
                         if c is not cls and _takes(c, key)})
        if others:
            text += (f'; {key} is an option of {", ".join(others)}: if you replaced an '
                     'inherited component with another type, add _delete_=True to its dict')
    return ConfigError(text)


def _check_child(registry: Registry | str, value: Any, key: str, hint: Any,
                 injected: Sequence[str]) -> None:
    registry = resolve_registry(registry)
    if value is None or not _is_plain(value):
        return  # None: the class's default; an object or class passed from Python
    if isinstance(value, cabc.Mapping):
        if 'type' not in value:
            raise _not_a_component(registry, key, value)
        check_component(registry, value, key, injected=injected)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not isinstance(item, cabc.Mapping) or 'type' not in item:
                raise _not_a_component(registry, f'{key}[{i}]', item)
            check_component(registry, item, f'{key}[{i}]', injected=injected)
    elif isinstance(value, str) and hint is not None and _matches(value, hint):
        component_class(registry, value, key)  # the class accepts a bare type name
    else:
        raise _not_a_component(registry, key, value)


def check_options(sig: ComponentSignature, kwargs: Mapping[str, Any], path: str, *,
                  children: Mapping[str, Any] | None = None,
                  injected: Sequence[str] = (),
                  child_injected: Mapping[str, Sequence[str]] | None = None,
                  registry: Registry | None = None, cls: Any = None) -> None:
    """Check keyword options against a signature: names, required ones, types, children.

    Args:
        sig: From :func:`signature_of`.
        kwargs: The options (without ``type``).
        path: Key path of the options, e.g. ``'scorer.engine'`` or ``'al'``.
        children: Parameter -> registry (name) of the child components.
        injected: Options the caller fills in (not required from the config).
        child_injected: Per child parameter, the options this class fills in.
        registry: Registry ``cls`` came from (for the ``_delete_`` hint; ``None``: no hint).
        cls: The class itself.

    Raises:
        ConfigError: The first problem, as one line.
    """
    children = dict(children or {})
    child_injected = dict(child_injected or {})
    if not sig.var_kw:
        for key in kwargs:
            if key not in sig.params:
                raise _unknown_option(sig, key, path, kwargs, children, registry, cls)
    missing = [n for n, p in sig.params.items()
               if p.default is _EMPTY and n not in kwargs and n not in injected]
    if missing:
        raise ConfigError(f'{path}.{missing[0]} is required by {sig.owner} and missing: add '
                          f'{path}.{missing[0]}=...')
    for key, value in kwargs.items():
        param = sig.params.get(key)
        if param is None:
            continue
        hint = sig.hints.get(key)
        if key in children:
            _check_child(children[key], value, f'{path}.{key}', hint,
                         tuple(child_injected.get(key, ())))
            continue
        if hint is not None:
            problem = type_problem(value, hint, f'{path}.{key}', param.default)
            if problem:
                raise ConfigError(problem)


def check_component(registry: Registry | str, cfg: Any, path: str,
                    injected: Sequence[str] = ()) -> None:
    """Check one component config and its children, recursively; build nothing.

    Args:
        registry: The registry (or its name in :mod:`saal_tasks.registry`).
        cfg: The component dict (``type`` and options).
        path: Its key path in the run config, e.g. ``'scorer.engine'``.
        injected: Options the parent fills in when it builds this component.

    Raises:
        ConfigError: The first problem, as one line naming the key path.
    """
    registry = resolve_registry(registry)
    if not isinstance(cfg, cabc.Mapping) or 'type' not in cfg:
        raise _not_a_component(registry, path, cfg)
    cls = component_class(registry, cfg['type'], f'{path}.type')
    sig = signature_of(cls)
    if sig is None:
        return
    kwargs = {k: v for k, v in cfg.items() if k not in META_KEYS}
    check_options(sig, kwargs, path, children=getattr(cls, 'config_children', None),
                  injected=injected, child_injected=getattr(cls, 'config_injected', None),
                  registry=None if cfg.get('_delete_') else registry, cls=cls)


# ----------------------------------------------------------------------------- building
_LEADING_NAME = re.compile(r'[A-Za-z_]\w*')


def _with_path(message: str, path: str, cfg: Mapping[str, Any], cls: Any) -> str:
    message = ' '.join(message.split())
    if re.match(re.escape(path) + r'($|[.\[=: ])', message):
        return message
    match = _LEADING_NAME.match(message)
    sig = signature_of(cls)
    if match and sig is not None and re.match(r'$|[\s=:(,]', message[match.end():]):
        word = match.group()
        if word in sig.params:
            return f'{path}.{message}'
        children = getattr(cls, 'config_children', None) or {}
        kwargs = {k: v for k, v in cfg.items() if k not in META_KEYS}
        for child in children:
            value = kwargs.get(child)
            if isinstance(value, cabc.Mapping) and 'type' in value:
                if all(_takes(c, word) for c in _child_classes(children, kwargs, child)):
                    return f'{path}.{child}.{message}'
    return f'{path}: {message}'


def build_checked(registry: Registry | str, cfg: Mapping[str, Any], path: str) -> Any:
    """Check ``cfg`` (:func:`check_component`), then ``registry.build`` it.

    A ``ConfigError`` or ``ValueError`` raised while building becomes a ``ConfigError``
    prefixed with the key path (``path.`` when the message starts with an option's name,
    ``path: `` otherwise); other user errors (missing data files, ...) pass unchanged.
    """
    registry = resolve_registry(registry)
    check_component(registry, cfg, path)
    cls = component_class(registry, cfg['type'], f'{path}.type')
    try:
        return registry.build(cfg if isinstance(cfg, dict) else dict(cfg))
    except ConfigError as err:
        raise ConfigError(_with_path(str(err), path, cfg, cls)) from err
    except UserError:
        raise
    except ValueError as err:
        raise ConfigError(_with_path(str(err), path, cfg, cls)) from err


def build_component(registry: Registry, cfg: Mapping[str, Any], field: str) -> Any:
    """``registry.build(cfg)``, checked first (:func:`build_checked`).

    Args:
        registry: Registry to build from.
        cfg: Component config with a ``type`` key.
        field: Config key the component came from (for the message), e.g. ``'scorer'``.

    Raises:
        ConfigError: ``cfg`` does not fit its class, or the class refused a value.
    """
    return build_checked(registry, cfg, field)
