"""Named training schedules from the reports: ``train: {recipe: swin-part1, ...}``.

A recipe is a YAML mapping of ``train`` keys. Keys the pipeline sets itself win, so a
recipe is a starting point (``--set train.max_iters=100`` shortens it, for example).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from ..errors import ConfigError


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    if name not in recipe_names():
        raise ConfigError(f"train.recipe: unknown recipe {name!r}; the recipes are: {', '.join(recipe_names())}")
    return yaml.safe_load(resources.files(__name__).joinpath(f"{name}.yaml").read_text()) or {}


def expand_recipe(train: dict[str, Any]) -> dict[str, Any]:
    """The ``train`` mapping with its recipe's keys filled in under the ones it sets."""
    name = train.get("recipe")
    if name is None:
        return train
    if not isinstance(name, str):
        raise ConfigError(
            f"train.recipe must be a recipe name, got {name!r}; the recipes are: {', '.join(recipe_names())}"
        )
    return {**load_recipe(name), **train}
