"""Size limits for non-test code: a module stays under 400 lines, a function under 80."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("app", "cds", "listeners", "models", "reports", "synthetic", "conformance", "bench", "scripts")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _is_test_file(path: Path) -> bool:
    return path.name.startswith("test_") or path.name.endswith("_test.py") or path.name == "conftest.py"


def _modules() -> list[Path]:
    files = [p for d in CODE_DIRS for p in sorted((REPO / d).rglob("*.py")) if not _is_test_file(p)]
    return [p for p in files if "__pycache__" not in p.parts]


def _listing(found: dict[str, int]) -> str:
    return "\n".join(f"  {n:5d}  {where}" for where, n in sorted(found.items()))


def test_there_is_code_to_measure():
    assert len(_modules()) > 50


def test_no_module_over_limit():
    too_long = {}
    for path in _modules():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            too_long[str(path.relative_to(REPO))] = n
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n{_listing(too_long)}"


def test_no_function_over_limit():
    too_long = {}
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = n
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n{_listing(too_long)}"
