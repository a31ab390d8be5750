"""The pipeline YAML: its schema, loading with ``--set`` overrides, and validation.

Everything is checked before any work starts. An error names the YAML path
(``models[0].tta.type``), the bad value and the allowed choices, and the CLI prints it
without a traceback.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, ZooError, describe_validation_error
from ..model_spec import ComponentSpec, ModelSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    root: Path
    split: str = "val"
    videos: list[str] | None = None  # a subset of the split, in this order
    max_videos: int | None = Field(None, ge=1)


class PipelineModel(Strict):
    """One model of the prediction stage: its weights and its TTA policy.

    ``weights`` is a model directory (``config.json`` + ``model.safetensors``, as ``zoo train``
    writes) or the name of a registry card, pulled and verified (``zoo list --weights``).
    """

    name: str
    weights: str
    tta: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="identity"))


class OutputSpec(Strict):
    overlays: int = Field(4, ge=0)  # colourised overlays in report/
    png_compress_level: int = Field(1, ge=0, le=9)  # low level: writing must not slow prediction


class EvalSpec(Strict):
    enabled: bool = True
    windows: list[int] = Field(default_factory=lambda: [8, 16])

    @field_validator("windows")
    @classmethod
    def _windows_in_range(cls, value: list[int]) -> list[int]:
        if any(w < 2 or w > 64 for w in value):
            raise ValueError("each window must be between 2 and 64 frames")
        return value


class RuntimeSpec(Strict):
    device: str = "cpu"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: bf16 where the device computes it natively
    threads: int | None = Field(None, ge=1)
    progress: bool = True


class SourceSpec(Strict):
    """One training dataset of the mix (``train.sources``)."""

    type: str = "vspw"  # vspw | coco-stuff | ade20k | cityscapes
    root: Path | None = None  # vspw: the pipeline's data.root when omitted
    split: str = "train"
    ratio: float = Field(1.0, gt=0)  # relative share of the samples drawn from it
    remapper: str | None = None  # a catalog remapper name; default: the type's own
    min_labelled: float = Field(0.0, ge=0, le=1)  # 3rd place 2.2: drop images under 80% labelled after remapping
    table: Literal["strict", "loose"] | None = None  # coco-stuff: the report's 131 classes (default) or 149


class SWASpec(Strict):
    """Stochastic weight averaging (5th place 2.2): after ``max_iters``, ``iters`` more
    iterations in cycles of ``every``; in each cycle the learning rate falls linearly from
    ``lr`` to ``min_lr``, and the weights at the end of every cycle are averaged into the
    final model."""

    iters: int = Field(ge=1)
    every: int = Field(ge=1)
    lr: float = Field(gt=0)
    min_lr: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _whole_cycles(self) -> SWASpec:
        if self.iters % self.every:
            raise ValueError(
                f"swa.iters ({self.iters}) must be a multiple of swa.every ({self.every}): "
                "every cycle ends with a checkpoint that is averaged"
            )
        return self


class TrainSpec(Strict):
    """The training recipe. One iteration is one optimizer step over the global batch:
    ``batch_size`` images per micro-batch x ``accum_steps`` micro-batches x processes."""

    recipe: str | None = None  # a named schedule (zoo_core/recipes); keys given here override it
    split: str = "train"
    sources: list[SourceSpec] | None = None  # None: VSPW's `split` of data.root alone
    init_from: str | None = None  # start from these weights (a model directory or a card name), e.g. a deepened model
    max_iters: int = Field(ge=1)
    batch_size: int = Field(2, ge=1)
    accum_steps: int = Field(1, ge=1)
    global_batch: int | None = Field(None, ge=1)  # images per step: zoo train derives accum_steps for its processes
    lr: float = Field(1e-4, gt=0)
    decoder_lr_mult: float = Field(1.0, gt=0)  # 3rd place: the decoder learns 10x faster than the backbone
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = Field(0, ge=0)
    schedule: Literal["poly", "linear", "constant"] = "poly"
    power: float = Field(1.0, gt=0)
    min_lr: float = Field(0.0, ge=0)
    transforms: list[dict[str, Any]] | None = None  # None: the report's augmentation recipe
    loss: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="ce"))
    grad_clip: float | None = Field(None, gt=0)
    swa: SWASpec | None = None
    checkpoint_every: int = Field(1000, ge=0)  # 0: only at the end and when interrupted
    keep_checkpoints: int = Field(3, ge=0)  # the newest N regular checkpoints are kept; 0 keeps all
    log_every: int = Field(10, ge=1)
    seed: int = 0
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSpec:
        if self.warmup_iters > self.max_iters:
            raise ValueError(f"warmup_iters ({self.warmup_iters}) must not exceed max_iters ({self.max_iters})")
        if self.global_batch is not None and self.global_batch % self.batch_size:
            raise ValueError(
                f"global_batch ({self.global_batch}) must be a multiple of batch_size ({self.batch_size}): "
                "each process runs whole micro-batches"
            )
        return self


class Pipeline(Strict):
    data: DataSpec
    model: ModelSpec | None = None  # the architecture to train
    train: TrainSpec | None = None
    models: list[PipelineModel] = Field(default_factory=list)  # the trained models to run
    ensemble: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type="mean"))
    output: OutputSpec = Field(default_factory=OutputSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    lock: Path | None = None  # a zoo.lock: card weights are pulled at exactly its revisions and hashes

    def fingerprint(self) -> str:
        """What determines the results: a rerun into the same directory must match it to resume."""
        data = self.model_dump(mode="json", exclude={"runtime": {"progress", "threads"}, "output": {"overlays"}})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_pipeline(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Pipeline:
    """Read, override, validate (structure, then component names against the catalog)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the pipeline as UTF-8"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the pipeline must be a mapping of sections (data, model, train, models, ...)")
    raw = apply_overrides(raw, overrides)
    if isinstance(raw.get("train"), dict):
        from ..recipes import expand_recipe

        raw["train"] = expand_recipe(raw["train"])
    pipeline = validate(raw, str(path))
    check_components(pipeline, str(path))
    return pipeline


def apply_overrides(raw: dict, overrides: tuple[str, ...] | list[str]) -> dict:
    """``key.path=value`` with the value parsed as YAML; list items by index (``models.0.name``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        node: Any = raw
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"--set {key}: {'.'.join(parts[:depth])} has {len(node)} items; {part!r} is not an index"
                    )
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is not a mapping")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


def validate(raw: dict, source: str) -> Pipeline:
    try:
        return Pipeline.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid pipeline\n" + describe_validation_error(exc, model=Pipeline)) from None


def component_specs(pipeline: Pipeline) -> list[tuple[str, str, ComponentSpec]]:
    """Every (YAML path, kind, spec) the pipeline names."""
    specs: list[tuple[str, str, ComponentSpec]] = []
    if pipeline.model:
        specs.append(("model.backbone", "backbone", pipeline.model.backbone))
        specs += [(f"model.heads[{i}]", "head", h) for i, h in enumerate(pipeline.model.heads)]
    if pipeline.train:
        specs.append(("train.loss", "loss", pipeline.train.loss))
    specs += [(f"models[{i}].tta", "tta", m.tta) for i, m in enumerate(pipeline.models)]
    if pipeline.models:
        specs.append(("ensemble", "ensembler", pipeline.ensemble))
    return specs


def check_components(pipeline: Pipeline, source: str) -> None:
    from ..plugins import get_catalog

    catalog = get_catalog()
    for where, kind, spec in component_specs(pipeline):
        try:
            catalog.get(kind, spec.type)
        except ZooError as exc:
            raise type(exc)(f"{source}: {where}.type: {exc}") from None
    names = [m.name for m in pipeline.models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(
            f"{source}: models: the names {', '.join(duplicated)} are used twice; give each model its own name"
        )
