"""The frozen teacher of a distillation loss: loaded once, checked against the student, run without gradients.

A loss whose class says ``needs_teacher = True`` names its teacher in its ``teacher``
attribute (a registry card or a model directory, resolved as ``models[].weights`` is). The
teacher is loaded before the student is built, in eval mode with every parameter frozen; it
holds no state that training changes, so exact resume and DDP stay exact (each process runs
it on its own micro-batch). Its last head's output, the teacher's prediction, is what every
head of the student is distilled towards (``LossContext.teacher``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..components.segmentor import Segmentor
from ..errors import ConfigError, DataError
from ..interfaces import HeadOutput
from ..model_dir import CONFIG_NAME, WEIGHTS_NAME, load_model_dir, read_model_config


@dataclass
class Teacher:
    """A frozen model and its provenance record (``ref``, ``path``, card, ``sha256`` of each file)."""

    model: Segmentor
    record: dict[str, Any]
    label: str  # how error messages name it

    def __call__(self, images: torch.Tensor) -> HeadOutput:
        """The teacher's last head on ``images``, without a graph (under the caller's autocast)."""
        with torch.no_grad():
            return self.model(images)[-1]


def load_teacher(
    loss_fn: Any, loss_label: str, class_names: tuple[str, ...], num_classes: int, device: torch.device
) -> Teacher | None:
    """The teacher of ``loss_fn`` on ``device``, or None for a loss that needs none.

    Refused before any weight is made: a teacher that is missing, or whose classes (number and
    names) are not the student's.
    """
    if not getattr(loss_fn, "needs_teacher", False):
        return None
    ref = getattr(loss_fn, "teacher", None)
    label = f"the teacher {ref!r} of {loss_label}"
    if not isinstance(ref, (str, Path)) or not str(ref):
        raise ConfigError(
            f"{loss_label} sets needs_teacher but its `teacher` attribute is {ref!r}: give it the card name or "
            "model directory of the teacher"
        )
    from ..hub.client import file_sha256, resolve_weights

    try:
        resolved = resolve_weights(str(ref))
        config = read_model_config(resolved.path)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"{label}: {exc}") from None
    _check_classes(config, resolved.path, label, class_names, num_classes)
    # Building the teacher draws initial weights: on a forked RNG, so the student's stay a function of the seed.
    with torch.random.fork_rng(devices=[]):
        try:
            model, _ = load_model_dir(resolved.path, device=device)
        except (ConfigError, DataError) as exc:
            raise type(exc)(f"{label}: {exc}") from None
    model.requires_grad_(False)
    record = {
        "ref": str(ref),
        "path": str(resolved.path),
        "card": resolved.name if resolved.repo_id else None,
        "repo_id": resolved.repo_id,
        "revision": resolved.revision,
        "sha256": {name: file_sha256(resolved.path / name) for name in (CONFIG_NAME, WEIGHTS_NAME)},
    }
    return Teacher(model.eval(), record, label)


def _check_classes(
    config: dict[str, Any], path: Path, label: str, class_names: tuple[str, ...], num_classes: int
) -> None:
    model = config["model"]
    theirs = model.get("num_classes") if isinstance(model, dict) else None
    advice = "distil from a model trained on the student's classes"
    if theirs != num_classes:
        raise ConfigError(
            f"{label} ({path / CONFIG_NAME}) predicts {theirs} classes but the model being trained predicts "
            f"{num_classes}; {advice}"
        )
    names = config.get("class_names")
    if isinstance(names, list) and class_names and list(names) != list(class_names):
        index = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != b), None)
        differ = (
            f"class {index} is {names[index]!r} there and {class_names[index]!r} here"
            if index is not None
            else f"it names {len(names)} classes, the training data {len(class_names)}"
        )
        raise ConfigError(
            f"{label} ({path / CONFIG_NAME}) has other classes than the training data: {differ}; {advice}"
        )


def check_same_teacher(teacher: Teacher | None, checkpoint: Path) -> None:
    """``--resume`` continues with the teacher the run started with: the same sha256 of its files."""
    if teacher is None:
        return
    before = read_model_config(checkpoint).get("teacher")
    hashes = before.get("sha256") if isinstance(before, dict) else None
    if hashes is not None and hashes != teacher.record["sha256"]:
        raise ConfigError(
            f"--resume: {teacher.label} is not the model the run started with (the sha256 of its files changed "
            f"since {checkpoint} was written); resume with that teacher, or train into another --out"
        )
