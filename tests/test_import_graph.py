"""The import graph of ``rst``: no circles, counting the imports inside functions too.

A circle (a imports b imports ... imports a) makes the import order matter and hides which module
depends on which; a lazy import inside a function still is a dependency, so it counts.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.with_suffix("").relative_to(ROOT).parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "rst") -> dict[str, set[str]]:
    """``{module: {rst modules it imports}}`` from every ``import`` / ``from ... import`` in its source."""
    files = {module_name(f): f for f in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, f in files.items():
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = ([target] if node.module else []) + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle_through_a_lazy_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "rst.evaluation.r2s" in graph["rst.evaluation.compare"]            # compare imports r2s only inside functions
    assert "rst.evaluation.per_image" in graph["rst.evaluation.autoattack"]


def test_rst_has_no_import_circle():
    assert cycles(import_graph()) == []


# The layers of rst, lowest first, as rst/__init__.py's docstring lists them.
LAYERS = ["runtime", "data", "network", "evaluation", "search", "zoo", "cli", "bench"]


def layer(module: str) -> int | None:
    """The index of ``module``'s subpackage in :data:`LAYERS`; None for the package's own top files."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs where a lower layer imports a higher one."""
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if layer(a) is not None and layer(b) is not None and layer(b) > layer(a))


def test_the_layer_checker_finds_an_upward_import():
    assert upward_imports({"rst.network.masks": {"rst.search.loop", "rst.runtime.atomic"}}) == [
        ("rst.network.masks", "rst.search.loop")]


def test_every_module_lives_in_a_layer_and_imports_only_downward():
    graph = import_graph()
    top = sorted(m for m in graph if layer(m) is None)
    assert top == ["rst", "rst.__main__", "rst.flat_names"]
    assert upward_imports(graph) == []


def test_the_package_docstring_lists_the_layers_in_order():
    import rst
    listed = [line.split()[0] for line in rst.__doc__.splitlines() if line.strip().startswith("rst.")]
    assert listed == [f"rst.{name}" for name in LAYERS]


def test_the_flat_names_of_earlier_releases_are_the_moved_modules():
    import importlib

    import rst
    from rst.flat_names import MOVED
    for old, new in MOVED.items():
        assert importlib.import_module(f"rst.{old}") is importlib.import_module(f"rst.{new}")
    from rst.inner import register_inner_attack
    assert register_inner_attack is rst.search.inner.register_inner_attack
    assert rst.search.run_search is rst.search.loop.run_search
    assert rst.masks is rst.network.masks
    import pytest
    with pytest.raises(AttributeError):
        rst.no_such_module


def test_importing_a_flat_name_leaves_the_module_its_own_spec():
    import importlib

    import rst.network.mask_checks as checks
    importlib.import_module("rst.mask_checks")
    assert checks.__spec__.name == "rst.network.mask_checks" and checks.__spec__.parent == checks.__package__
