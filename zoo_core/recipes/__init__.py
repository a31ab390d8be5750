"""Named training schedules from the reports: ``train: {recipe: swin-part1, ...}``.

A recipe is a YAML mapping of ``train`` keys. Keys the pipeline sets itself win, so a
recipe is a starting point (``--set train.max_iters=100`` shortens it, for example).

=================  ===================  ==============================================================
recipe             from                 schedule
=================  ===================  ==============================================================
``swin-part1``     3rd place 4.1.1      Swin-L + OCR: AdamW, 0 -> 6e-6 over 1,500, linear to 0 at 160k,
                                        decoder 10x (pixel-distribution loss)
``swin-part2``     3rd place 4.1.1      the deepened model + COCO-Stuff: 1e-5 -> 0 over 40k
                                        (confusion-focal loss)
``volo``           3rd place 4.1.2      VOLO-D5 + U-Net + OCR: AdamW (0.95, 0.999), 6e-5, poly;
                                        480 x 720 crops (ce with ``stats:``)
``swin-uper-5th``  5th place 2.1        Swin-L + UperNet: AdamW 6e-5, wd 0.01, warm-up 1,500, poly 1.0
                                        to 0 at 160k; 640 x 640 crops, OHEM 0.7 / 200k
=================  ===================  ==============================================================

Every recipe trains on the reports' 16 images per iteration through ``global_batch: 16``
with ``batch_size: 2``: ``zoo train`` sets ``accum_steps`` to ``global_batch / (batch_size x
processes)`` and logs the global batch. On one GPU that is 2 images x 8 accumulated
micro-batches, with ``--nproc 8`` 2 images x 1 on each of 8 processes, with ``--nproc 4``
2 x 2; the global batches, hence the weights, are the same. A ``batch_size`` and process
count whose product does not divide ``global_batch`` are refused before training starts;
``--set train.global_batch=null`` goes back to ``batch_size x accum_steps x processes``.
A recipe names no file: a loss's statistics or confusion matrix come from the pipeline
(each recipe's comments show the ``loss:`` the report used).
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
