"""The layers: `services/` may use `shared/`, never the other way round.

Read from the source with `ast`, so an import anywhere in a module counts (one inside a
function too), and so do `importlib.import_module` calls and `python -m` command lines
that name a module by a literal (or a literal prefix such as `f"services.{name}"`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What shared/ must not reach: the runnable things built on top of it.
ABOVE_SHARED = ("services",)


def literal_prefix(node: ast.expr) -> str:
    """The text a string expression starts with for sure ("" when none is literal)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        prefix = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            prefix += part.value
        return prefix
    return ""


def _is_dynamic_import(func: ast.expr) -> bool:
    return ((isinstance(func, ast.Name) and func.id == "__import__")
            or (isinstance(func, ast.Attribute) and func.attr == "import_module"))


def _relative_base(package: str, level: int) -> str:
    """The package `from .` (level 1), `from ..` (level 2)… names inside `package`."""
    parts = package.split(".")
    return ".".join(parts[: len(parts) - level + 1])


def used_modules(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, module name) for every module the source imports, loads or runs with `-m`;
    relative imports are resolved against `package`, the one the module is in."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _relative_base(package, node.level) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            yield node.lineno, module
            for alias in node.names:  # `from pkg import module` names a module too
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            yield node.lineno, literal_prefix(node.args[0])
        elif isinstance(node, ast.List | ast.Tuple):
            words = [literal_prefix(element) for element in node.elts]
            for flag, module in pairwise(words):
                if flag == "-m":
                    yield node.lineno, module


def reaches(module: str, packages: tuple[str, ...]) -> bool:
    """True when `module` is one of `packages` or inside one."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def package_of(path: Path) -> str:
    """The dotted package a source file is in (`a/b/c.py` and `a/b/__init__.py`: `a.b`)."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def violations(top: str, forbidden: tuple[str, ...]) -> list[str]:
    """`path:line: module` for every use of a forbidden package under `top`."""
    found = []
    for path in sorted((ROOT / top).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for line, module in used_modules(source, package_of(path)):
            if reaches(module, forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    return found


def test_shared_uses_nothing_above_it() -> None:
    assert violations("shared", ABOVE_SHARED) == []


def test_the_scan_sees_the_imports_that_exist() -> None:
    """The same scan over services/ finds their (allowed) use of shared/: it reads files."""
    assert any(v.startswith("services/ingest/app.py:") for v in violations("services", ("shared",)))


@pytest.mark.parametrize("source", [
    "import services.grader",
    "from services.ingest.app import create_app",
    "from services import grader",
    "def run():\n    from services.notifier import relay\n",
    "import importlib\nimportlib.import_module(f'services.{name}.__main__')",
    "__import__('services.grader')",
    "argv = [sys.executable, '-m', f'services.{service}']",
])
def test_the_scan_catches_each_way_of_using_services(source: str) -> None:
    used = [module for _, module in used_modules(source, "shared.db")]
    assert any(reaches(m, ABOVE_SHARED) for m in used), used


@pytest.mark.parametrize("source", [
    "import servicesx",
    "from shared.settings import CommonSettings",
    "from . import engine",
    "from ..services import names",  # relative: shared.services, not services
    "argv = ['-m', 'pytest', 'services/grader']",
    "importlib.import_module(name)",
])
def test_the_scan_lets_other_modules_be(source: str) -> None:
    used = [module for _, module in used_modules(source, "shared.db")]
    assert not any(reaches(m, ABOVE_SHARED) for m in used), used
