"""The package's shape: what ARCHITECTURE.md promises about the tree holds, and stays so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "maskrt"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 80


def test_the_shipped_model_is_found_where_the_package_keeps_it() -> None:
    from maskrt.graph.model import SHIPPED_WEIGHTS, has_shipped_weights

    assert has_shipped_weights(), f"no weights at {SHIPPED_WEIGHTS}"
    assert SHIPPED_WEIGHTS.parent == PACKAGE / "weights"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_short_and_plain(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name} has {length} lines"
        if isinstance(node, ast.ImportFrom):
            assert all(alias.name != "*" for alias in node.names), f"{path}:{node.lineno} star import"
        if isinstance(node, ast.ExceptHandler):
            assert node.type is not None, f"{path}:{node.lineno} bare except"


def test_the_layers_are_subpackages() -> None:
    for layer in ("graph", "backends", "backends/tensorrt", "cam", "stream", "stream/sources",
                  "train", "cli", "tools", "serving"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "devices.py", "engine.py", "image.py",
                    "labels.py"], flat
