"""Every public function of the packages carries type hints, so the type checker (mypy, `make test`) checks its
callers: mypy alone cannot tell a public function from a private one, this test does."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _public_functions(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from (item for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))


def _missing_hints(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    missing = [a.arg for a in named if a.annotation is None and a.arg not in ("self", "cls")]
    missing += [f"*{a.arg}" for a in (arguments.vararg, arguments.kwarg) if a is not None and a.annotation is None]
    if function.returns is None and function.name != "__init__":
        missing.append("return")
    return missing


def test_public_functions_have_type_hints():
    unhinted = []
    for path in sorted([*(ROOT / "common").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]):
        for function in _public_functions(ast.parse(path.read_text())):
            if function.name.startswith("_") and function.name != "__init__":
                continue
            missing = _missing_hints(function)
            if missing:
                unhinted.append(f"{path.relative_to(ROOT)}:{function.lineno} {function.name} ({', '.join(missing)})")
    assert not unhinted, "public functions without type hints:\n" + "\n".join(unhinted)


def test_the_check_sees_a_missing_hint():
    tree = ast.parse("def f(x, y: int) -> int: ...\nclass C:\n    def m(self, z: int): ...\n")
    assert [_missing_hints(f) for f in _public_functions(tree)] == [["x"], ["return"]]
