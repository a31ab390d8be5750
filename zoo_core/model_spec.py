"""The model config and the names of a model directory's files: light to import (no torch).

Public through :mod:`zoo_core.model_dir`, which re-exports every name here; the registry
cards and the pipeline schema validate against the same :class:`ModelSpec` without
importing torch (``zoo list --weights`` stays fast).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from .errors import ConfigError, describe_validation_error

FORMAT = "zoo-model/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RESERVED_KEYS = ("format", "model", "zoo_version", "plugins", "provenance")


class ComponentSpec(BaseModel):
    """A catalog component: ``type`` is its (optionally ``distribution:``-qualified) name."""

    model_config = ConfigDict(extra="forbid")

    type: str
    args: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """An architecture: a backbone and a cascade of heads (the last one predicts).

    The same type is a pipeline's ``model:``, the ``model`` of ``config.json``, a registry
    card's ``model.config`` and the model file ``zoo convert`` reads. ``size_divisibility``
    (0: off) pads the images at prediction to multiples of it, as detectron2 does.
    """

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(124, ge=1, le=255)  # 124: VSPW
    backbone: ComponentSpec
    heads: list[ComponentSpec] = Field(min_length=1)
    # detectron2's SIZE_DIVISIBILITY: prediction pads the images to multiples of it (0: off)
    size_divisibility: int = Field(0, ge=0)

    @classmethod
    def parse(cls, data: Any, where: str = "model") -> ModelSpec:
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

    @model_serializer(mode="wrap")
    def _omit_default_divisibility(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Off by default: configs and run fingerprints of models without it stay what they were.
        data = handler(self)
        if self.size_divisibility == 0 and isinstance(data, dict):
            data.pop("size_divisibility", None)
        return data
