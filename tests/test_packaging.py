"""The distribution ships every subpackage and the registry cards."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_and_data_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {p.parent for p in (ROOT / "zoo_core").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    on_disk = {".".join(folder.relative_to(ROOT).parts) for folder in folders}
    assert on_disk | {"zoo_core.registry"} == listed


def test_data_files_are_importable_as_package_data():
    tables = {entry.name for entry in resources.files("zoo_core.components.remap_tables").iterdir()}
    assert {"coco_stuff.tsv", "ade20k.tsv", "cityscapes.tsv"} <= tables
    recipes = {entry.name for entry in resources.files("zoo_core.recipes").iterdir()}
    assert {"swin-part1.yaml", "swin-part2.yaml", "volo.yaml"} <= recipes


def test_registry_folder_is_importable_as_package_data():
    names = {entry.name for entry in resources.files("zoo_core.registry").iterdir()}
    assert names >= {p.name for p in (ROOT / "registry").iterdir() if p.suffix in {".yaml", ".md"}}
