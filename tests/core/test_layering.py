"""The core never imports Qt, pyqtgraph or qdarkstyle; training never imports the GUI."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "cxr_studio"
FORBIDDEN_CORE = ("PySide6", "PyQt5", "PyQt6", "pyqtgraph", "qdarkstyle", "qtpy", "cxr_studio.gui")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package path
                rel = path.relative_to(PKG.parent).with_suffix("").parts[:-node.level]
                names.append(".".join(rel + ((node.module,) if node.module else ())))
            elif node.module:
                names.append(node.module)
    return names


def _offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for py in sorted((PKG / folder).rglob("*.py")):
        for name in _imports(py):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{py.relative_to(PKG.parent)} imports {name}")
    return bad


def test_core_has_no_qt_imports():
    assert (PKG / "core").is_dir()
    assert _offenders("core", FORBIDDEN_CORE) == []


def test_training_does_not_import_gui():
    if not (PKG / "training").is_dir():
        pytest.skip("no training package")
    assert _offenders("training", ("cxr_studio.gui", "PySide6", "pyqtgraph")) == []


def test_checker_catches_a_qt_import(tmp_path, monkeypatch):
    fake = tmp_path / "cxr_studio" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from PySide6 import QtCore\n")
    monkeypatch.setattr(__import__(__name__), "PKG", tmp_path / "cxr_studio")
    assert _offenders("core", FORBIDDEN_CORE) == ["cxr_studio/core/bad.py imports PySide6"]
