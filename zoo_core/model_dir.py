"""A trained model on disk: ``model.safetensors`` + ``config.json``, written atomically, loaded strictly.

Public: plugins, the trainer, ``zoo run``, ``zoo convert`` and the registry cards all use this
one format and the one :class:`ModelSpec` that describes an architecture.

``config.json`` holds ``{"format": "zoo-model/1", "model": <ModelSpec>,
"zoo_version": ..., "plugins": {distribution: version}, ...extra}``; the weights are the
model's ``state_dict`` in safetensors (nothing is unpickled).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from .catalog import Catalog
from .components.segmentor import Segmentor
from .errors import ConfigError, DataError, describe_validation_error
from .fileio import atomic_path, atomic_write_bytes  # noqa: F401  (re-exported for model files)

FORMAT = "zoo-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RESERVED_KEYS = ("format", "model", "zoo_version", "plugins")

PathLike = Union[str, "os.PathLike[str]"]


class ComponentSpec(BaseModel):
    """A catalog component: ``type`` is its (optionally ``distribution:``-qualified) name."""

    model_config = ConfigDict(extra="forbid")

    type: str
    args: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """An architecture: a backbone and a cascade of heads (the last one predicts).

    The same type is a pipeline's ``model:``, the ``model`` of ``config.json``, a registry
    card's ``model.config`` and the model file ``zoo convert`` reads.
    """

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(124, ge=1, le=255)  # 124: VSPW
    backbone: ComponentSpec
    heads: list[ComponentSpec] = Field(min_length=1)

    @classmethod
    def parse(cls, data: Any, where: str = "model") -> "ModelSpec":
        """Validate ``data``; a :class:`ConfigError` names each bad field as ``where.field``."""
        if isinstance(data, ModelSpec):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: invalid model config\n{describe_validation_error(exc, where, cls)}") from None

    def config(self) -> dict[str, Any]:
        """The plain mapping stored in ``config.json``."""
        return self.model_dump(mode="json")


def build_segmentor(config: Union[ModelSpec, dict[str, Any]], catalog: Optional[Catalog] = None) -> Segmentor:
    """Build a :class:`Segmentor` from a :class:`ModelSpec` (or its mapping).

    ``{"num_classes": 124, "backbone": {"type": "timm", "args": {...}}, "heads": [{"type":
    "fcn", "args": {...}}, {"type": "ocr", "args": {...}}]}``: each head is given the
    backbone's ``in_channels`` and ``in_strides`` and ``num_classes``.
    """
    spec = ModelSpec.parse(config)
    if catalog is None:
        from .plugins import get_catalog

        catalog = get_catalog()
    backbone = catalog.build("backbone", spec.backbone.type, spec.backbone.args)
    heads = [catalog.build("head", head.type, head.args, in_channels=list(backbone.channels),
                           in_strides=list(backbone.strides), num_classes=spec.num_classes)
             for head in spec.heads]
    return Segmentor(backbone, heads)


def save_model_dir(model: nn.Module, model_config: dict, out_dir: PathLike, extra: Optional[dict] = None) -> None:
    """Save ``model`` (built from ``model_config``) as ``out_dir/model.safetensors`` + ``out_dir/config.json``.

    ``extra`` (class names, training facts) is merged into config.json at top level. The
    weights are written first, so a present config.json means a complete directory.
    """
    from safetensors.torch import save_model

    from .plugins import core_version

    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ConfigError(f"extra keys {', '.join(clash)} are reserved in {CONFIG_NAME}; rename them")
    config = {"format": FORMAT, "model": model_config, "zoo_version": core_version(),
              "plugins": _plugins_used(model_config), **extra}
    try:
        payload = json.dumps(config, indent=2, sort_keys=False).encode() + b"\n"
    except TypeError as exc:
        raise ConfigError(f"the model config or extra for {CONFIG_NAME} is not JSON-serialisable: {exc}") from None
    out_dir = Path(out_dir)
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        # save_model drops aliases of shared tensors and makes every tensor contiguous.
        save_model(model, str(tmp))
    atomic_write_bytes(out_dir / CONFIG_NAME, payload)


def _plugins_used(model_config: dict) -> dict[str, str]:
    """``{distribution: version}`` of the backbone and heads named in ``model_config``."""
    from .plugins import get_catalog

    catalog = get_catalog()
    specs = [("backbone", model_config["backbone"]["type"])]
    specs += [("head", head["type"]) for head in model_config["heads"]]
    used = {}
    for kind, name in specs:
        entry = catalog.get(kind, name)
        used[entry.distribution] = entry.version
    return dict(sorted(used.items()))


def read_model_config(path: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory, checked for its format."""
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise DataError(f"{config_path} not found: {path} is not a saved model directory "
                        f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME}); check the path or pull the model again")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{config_path} is not valid JSON ({exc}); the download or save was interrupted: "
                        "pull or train the model again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise DataError(f"{config_path} has format {found!r}, expected {FORMAT!r}; "
                        "it was not written by this version of the zoo")
    if not isinstance(config.get("model"), dict):
        raise DataError(f"{config_path} has no 'model' section describing the architecture")
    return config


def load_model_dir(path: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[Segmentor, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly.

    Returns ``(segmentor in eval mode, config)``. Missing or unexpected weight names,
    a truncated or corrupt weights file, and components whose plugin is not installed are
    reported as errors that name the file and say what to do.
    """
    path = Path(path)
    config = read_model_config(path)
    weights_path = path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise DataError(f"{weights_path} not found; the model directory is incomplete: pull or train it again")
    try:
        model = build_segmentor(config["model"])
    except ConfigError as exc:
        plugins = ", ".join(f"{d} {v}" for d, v in config.get("plugins", {}).items()) or "none recorded"
        raise ConfigError(f"{path / CONFIG_NAME}: cannot rebuild the model: {exc} "
                          f"(it was saved with: {plugins}; install those distributions)") from None
    load_weights(model, weights_path, f"the architecture in {CONFIG_NAME}")
    return model.to(device).eval(), config


def load_weights(model: nn.Module, weights_path: Path, architecture: str) -> None:
    """Load a safetensors file into ``model`` strictly; errors name the file and the missing/unexpected keys."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(weights_path), strict=False)
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{weights_path} is truncated or corrupt ({exc}); download it again "
                        "(zoo pull) or re-train the model") from None
    except RuntimeError as exc:  # same names, other shapes
        raise DataError(f"{weights_path} does not fit {architecture}: {exc}") from None
    if missing or unexpected:
        raise DataError(f"{weights_path} does not match {architecture}: "
                        f"{_names('missing', missing)}{'; ' if missing and unexpected else ''}"
                        f"{_names('unexpected', unexpected)}; the weights belong to another model config")


def _names(label: str, names: list[str], shown: int = 10) -> str:
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} {label} key(s): {', '.join(sorted(names)[:shown])}{more}"
