"""The distribution ships every subpackage and the registry cards."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "zoo_core").rglob("__init__.py")}
    assert on_disk | {"zoo_core.registry"} == listed


def test_registry_folder_is_importable_as_package_data():
    names = {entry.name for entry in resources.files("zoo_core.registry").iterdir()}
    assert names >= {p.name for p in (ROOT / "registry").iterdir() if p.suffix in {".yaml", ".md"}}
