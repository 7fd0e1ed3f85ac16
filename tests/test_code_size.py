"""Size limits that keep rst readable: no function over MAX_FUNCTION lines, no module over MAX_MODULE.

A function's length counts from its ``def`` (or first decorator) to its last line, docstring included;
a module's is its line count. Long code hides its steps: split it into named pieces.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION = 50
MAX_MODULE = 400


def long_functions(source: str, limit: int = MAX_FUNCTION) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function in ``source`` longer than ``limit`` lines."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                    if child.end_lineno - start + 1 > limit:
                        found.append((name, child.end_lineno - start + 1))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def sources():
    return sorted((ROOT / "rst").rglob("*.py"))


def test_the_checker_measures_from_the_decorator_to_the_last_line():
    body = "\n".join(f"    x{i} = {i}" for i in range(49))
    assert long_functions(f"def f():\n{body}\n") == []                       # 50 lines
    assert long_functions(f"@d\ndef f():\n{body}\n") == [("f", 51)]
    assert long_functions(f"class C:\n    def m(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n        y = 0\n") \
        == [("C.m", 51)]


def test_no_function_in_rst_is_longer_than_the_limit():
    over = [f"{p.relative_to(ROOT)}::{name} ({n} lines)" for p in sources()
            for name, n in long_functions(p.read_text())]
    assert over == []


def test_no_module_in_rst_is_longer_than_the_limit():
    over = [f"{p.relative_to(ROOT)} ({n} lines)" for p in sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE]
    assert over == []
