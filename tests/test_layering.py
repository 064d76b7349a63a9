"""The package's layering holds: the core at the bottom, the engine above it, plugins beside the
engine, tasks that never import each other, and no import cycle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'saal_tasks'
PLUGINS = ('scorers', 'selectors', 'oracles', 'hooks', 'diagnostics', 'tasks', 'strategies')
TASKS = ('classification', 'detection', 'segmentation')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.split('.') if is_package else module.split('.')[:-1]
    base = base[:len(base) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or \
        (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def imports(path: Path, top_level_only: bool = False,
            with_type_checking: bool = True) -> set[str]:
    """Modules of ``saal_tasks`` that ``path`` imports (``from x import y`` counts ``x.y``
    too, since ``y`` may be a submodule)."""
    module = module_name(path)
    is_package = path.name == '__init__.py'
    found: set[str] = set()

    def visit(nodes, nested: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                if with_type_checking:
                    visit(node.body, nested)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                found.add(target)
                found.update(f'{target}.{a.name}' for a in node.names)
            if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.ClassDef, ast.Lambda)):
                continue
            visit(list(ast.iter_child_nodes(node)), True)

    visit(ast.parse(path.read_text()).body, False)
    return {m for m in found if m == 'saal_tasks' or m.startswith('saal_tasks.')}


def files(under: str = '') -> list[Path]:
    return sorted((PACKAGE / under).rglob('*.py'))


def layer(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def test_importing_the_core_loads_no_plugin_and_no_engine():
    code = ('import sys, saal_tasks.core; print(sorted(m for m in sys.modules '
            'if m.startswith("saal_tasks.")))')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)
    upward = [m for m in loaded if layer(m) in PLUGINS + ('engine', 'compat')]
    assert upward == [], upward
    assert all(layer(m) in ('core', 'registry') for m in loaded), loaded


def test_no_core_module_imports_a_plugin_the_engine_or_compat():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                            if layer(m) in PLUGINS + ('engine', 'compat'))
           for p in files('core')}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_engine_imports_only_the_core_the_registry_and_itself():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                            if layer(m) not in ('core', 'registry', 'engine'))
           for p in files('engine')}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize('plugin', ['scorers', 'selectors', 'oracles', 'hooks'])
def test_plugins_never_import_the_engine_or_a_task(plugin):
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                            if layer(m) in ('engine', 'tasks'))
           for p in files(plugin)}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize('task', TASKS)
def test_no_task_package_imports_another_or_the_engine(task):
    others = tuple(f'saal_tasks.tasks.{t}' for t in TASKS if t != task)
    bad = {str(p.relative_to(ROOT)): sorted(m for m in imports(p)
                                            if m.startswith(others) or layer(m) == 'engine')
           for p in files(f'tasks/{task}')}
    assert {k: v for k, v in bad.items() if v} == {}


def test_no_import_cycle_among_the_package_modules():
    """Import-time cycles: module-level imports, ``TYPE_CHECKING`` blocks left out (they never
    run)."""
    modules = {module_name(p): p for p in files()}
    graph = {}
    for name, path in modules.items():
        deps = imports(path, top_level_only=True, with_type_checking=False)
        # A package's __init__ is imported before its modules: `import a.b` depends on `a`.
        graph[name] = {d for d in deps if d in modules and d != name}
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # A package __init__ re-exporting its own modules is not a cycle.
            real = [m for m in component
                    if not any(o != m and o.startswith(m + '.') for o in component)]
            if len(real) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == []


def test_errors_are_imported_at_module_level_everywhere():
    """No function-local import of the core's errors (once a way to dodge import cycles)."""
    local = []
    for path in files():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or '').endswith(
                            'core.errors'):
                        local.append(f'{path.relative_to(ROOT)}:{node.lineno}')
    assert local == []
