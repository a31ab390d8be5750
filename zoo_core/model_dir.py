"""A trained model on disk: ``model.safetensors`` + ``config.json``, written atomically, loaded strictly.

Public: plugins, the trainer, ``zoo run``, ``zoo convert`` and the registry cards all use this
one format and the one :class:`ModelSpec` that describes an architecture.

``config.json`` holds ``{"format": "zoo-model/1", "model": <ModelSpec>,
"zoo_version": ..., "plugins": {distribution: version}, "provenance": {"zoo-core": version,
"components": [{kind, name, distribution, version, where}, ...]}, ...extra}``; the weights are the
model's ``state_dict`` in safetensors (nothing is unpickled).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .catalog import Catalog, Entry
from .components.segmentor import Segmentor
from .errors import ConfigError, DataError
from .fileio import atomic_path, atomic_write_bytes  # noqa: F401  (re-exported for model files)
from .model_spec import CONFIG_NAME, FORMAT, RESERVED_KEYS, WEIGHTS_NAME, ComponentSpec, ModelSpec

__all__ = [
    "FORMAT",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "RESERVED_KEYS",
    "ComponentSpec",
    "ModelSpec",
    "build_segmentor",
    "find_component",
    "save_model_dir",
    "read_model_config",
    "load_model_dir",
    "load_weights",
    "STORED_DTYPES",
]

PathLike = Union[str, "os.PathLike[str]"]


def build_segmentor(config: ModelSpec | dict[str, Any], catalog: Catalog | None = None) -> Segmentor:
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
    try:
        channels, strides = list(backbone.channels), list(backbone.strides)
    except (AttributeError, TypeError):  # a plugin's backbone that does not follow the Backbone interface
        raise ConfigError(
            f"{catalog.get('backbone', spec.backbone.type).describe()} has no `channels` and `strides` (one per "
            "feature map, given to the heads); its plugin does not follow zoo_core.interfaces.Backbone: "
            "update the plugin or report it to its maintainers"
        ) from None
    heads = [
        catalog.build(
            "head",
            head.type,
            head.args,
            in_channels=channels,
            in_strides=strides,
            num_classes=spec.num_classes,
        )
        for head in spec.heads
    ]
    return Segmentor(backbone, heads, size_divisibility=spec.size_divisibility)


def find_component(kind: str, name: str) -> Entry:
    """The installed component that ``type: name`` (or ``distribution:name``) of a config names.

    Its ``name``, ``distribution``, ``version`` and ``factory``; a :class:`ConfigError` when
    nothing installed has that name, a :class:`PluginError` when two distributions clash over it.
    """
    from .plugins import get_catalog

    return get_catalog().get(kind, name)


def save_model_dir(
    model: nn.Module,
    model_config: ModelSpec | dict,
    out_dir: PathLike,
    extra: dict | None = None,
    components: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Save ``model`` (built from ``model_config``) as ``out_dir/model.safetensors`` + ``out_dir/config.json``.

    ``extra`` (class names, training facts) is merged into config.json at top level.
    ``components`` are ``(path, kind, name)`` of what else shaped the weights (the training
    loss, the remappers), recorded in its provenance beside the backbone and heads. The
    weights are written first, so a present config.json means a complete directory.
    """
    from safetensors.torch import save_model

    if isinstance(model_config, ModelSpec):
        model_config = model_config.config()
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ConfigError(f"extra keys {', '.join(clash)} are reserved in {CONFIG_NAME}; rename them")
    architecture = model_components(model_config)
    record = provenance(architecture + list(components))
    # The distributions needed to rebuild the model (what to install), not every one that trained it.
    plugins = {c["distribution"]: c["version"] for c in record["components"][: len(architecture)]}
    config = {
        "format": FORMAT,
        "model": model_config,
        "zoo_version": record["zoo-core"],
        "plugins": dict(sorted(plugins.items())),
        "provenance": record,
        **extra,
    }
    try:
        payload = json.dumps(config, indent=2, sort_keys=False).encode() + b"\n"
    except TypeError as exc:
        raise ConfigError(f"the model config or extra for {CONFIG_NAME} is not JSON-serialisable: {exc}") from None
    out_dir = Path(out_dir)
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        # save_model drops aliases of shared tensors and makes every tensor contiguous.
        save_model(model, str(tmp))
    atomic_write_bytes(out_dir / CONFIG_NAME, payload)


def model_components(model_config: ModelSpec | dict[str, Any], where: str = "model") -> list[tuple[str, str, str]]:
    """``(path, kind, name)`` of a model config's backbone and heads: ``model.backbone``, ``model.heads[1]``."""
    spec = ModelSpec.parse(model_config, where)
    return [(f"{where}.backbone", "backbone", spec.backbone.type)] + [
        (f"{where}.heads[{i}]", "head", head.type) for i, head in enumerate(spec.heads)
    ]


def provenance(components: list[tuple[str, str, str]], catalog: Catalog | None = None) -> dict[str, Any]:
    """Who provided each ``(path, kind, name)``: ``{"zoo-core": version, "components": [{kind, name,
    distribution, version, where}, ...]}``, recorded in config.json, and in pipeline.json and metrics.json of a run."""
    from .plugins import core_version, get_catalog

    return {"zoo-core": core_version(), "components": (catalog or get_catalog()).provenance(components)}


def describe_model(name: str | None, model_config: ModelSpec | dict[str, Any], catalog: Catalog | None = None) -> str:
    """How messages name a model: ``model 'swin' (backbone 'timm', heads 'fcn', 'ocr' from zoo-core 0.1.0)``."""
    if catalog is None:
        from .plugins import get_catalog

        catalog = get_catalog()
    entries = [catalog.get(kind, part) for _, kind, part in model_components(model_config)]
    groups: list[list[Entry]] = []  # consecutive parts of one distribution share its "from ..."
    for entry in entries:
        if groups and (groups[-1][0].distribution, groups[-1][0].version) == (entry.distribution, entry.version):
            groups[-1].append(entry)
        else:
            groups.append([entry])
    described = []
    for group in groups:
        kinds = []
        for kind in dict.fromkeys(e.kind for e in group):
            names = [repr(e.name) for e in group if e.kind == kind]
            kinds.append(f"{kind}{'s' if len(names) > 1 else ''} {', '.join(names)}")
        described.append(f"{', '.join(kinds)} from {group[0].distribution} {group[0].version}")
    return f"model{f' {name!r}' if name else ''} ({', '.join(described)})"


def read_model_config(path: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory, checked for its format."""
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        raise DataError(
            f"{config_path} not found: {path} is not a saved model directory "
            f"(it needs {CONFIG_NAME} and {WEIGHTS_NAME}); check the path or pull the model again"
        )
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{config_path} is not valid JSON ({exc}); the download or save was interrupted: "
            "pull or train the model again"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise DataError(
            f"{config_path} has format {found!r}, expected {FORMAT!r}; it was not written by this version of the zoo"
        )
    if not isinstance(config.get("model"), dict):
        raise DataError(f"{config_path} has no 'model' section describing the architecture")
    return config


def load_model_dir(path: PathLike, device: str | torch.device = "cpu") -> tuple[Segmentor, dict[str, Any]]:
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
        raise cannot_rebuild(path / CONFIG_NAME, config, exc) from None
    load_weights(model, weights_path, f"the architecture in {CONFIG_NAME}", config=config)
    return model.to(device).eval(), config


def cannot_rebuild(config_path: Path, config: dict[str, Any], problem: ConfigError) -> ConfigError:
    """The error for a ``config.json`` whose components are not installed: it names the distributions to install."""
    plugins = config.get("plugins")
    recorded = ", ".join(f"{d} {v}" for d, v in plugins.items()) if isinstance(plugins, dict) else ""
    return ConfigError(
        f"{config_path}: cannot rebuild the model: {problem} "
        f"(it was saved with: {recorded or 'none recorded'}; install those distributions)"
    )


# The precisions a model directory may store its floating tensors in when its config.json says so
# (`"dtype": "fp16"`, written by `zoo convert --dtype`); loading casts them to the parameters' dtype.
STORED_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_SAFETENSORS_FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def load_weights(
    model: nn.Module, weights_path: Path, architecture: str, *, config: dict[str, Any] | None = None
) -> None:
    """Load a safetensors file into ``model`` strictly; errors name the file and the missing/unexpected keys.

    Every floating parameter must be stored in its own dtype, or in the ``dtype`` that the
    ``config.json`` beside the file declares (then it is cast): no other precision, and no
    bool or integer tensor, goes into a floating parameter silently. Weights that are NaN or
    infinite are refused, naming the tensor. ``config``: that config.json already parsed
    (else it is read here).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    weights_path = Path(weights_path)
    declared = _declared_dtype(weights_path, config)
    try:
        with safe_open(str(weights_path), "pt") as file:  # the header only: dtypes are checked before loading
            stored = {name: file.get_slice(name).get_dtype() for name in file.keys()}
        _check_dtypes(stored, model.state_dict(), declared, weights_path)
        missing, unexpected = load_model(model, str(weights_path), strict=False)
    except (SafetensorError, OSError) as exc:
        raise DataError(
            f"{weights_path} is truncated or corrupt ({exc}); download it again (zoo pull) or re-train the model"
        ) from None
    except RuntimeError as exc:  # same names, other shapes
        raise DataError(f"{weights_path} does not fit {architecture}: {exc}") from None
    if missing or unexpected:
        raise DataError(
            f"{weights_path} does not match {architecture}: "
            f"{_names('missing', missing)}{'; ' if missing and unexpected else ''}"
            f"{_names('unexpected', unexpected)}; the weights belong to another model config"
        )
    loaded = model.state_dict()
    for name in stored:
        tensor = loaded.get(name)
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(
                f"{weights_path}: tensor {name!r} holds NaN or infinite values; these weights cannot "
                "predict: use an earlier checkpoint, or train again (with a lower learning rate)"
            )


def _declared_dtype(weights_path: Path, config: dict[str, Any] | None = None) -> torch.dtype | None:
    """The ``dtype`` that the config.json beside ``weights_path`` (or ``config``, parsed) declares for its tensors."""
    config_path = weights_path.parent / CONFIG_NAME
    if config is None:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # no config.json (reading it is the caller's business)
    declared = config.get("dtype") if isinstance(config, dict) else None
    if declared is None:
        return None
    if not isinstance(declared, str) or declared not in STORED_DTYPES:
        raise DataError(
            f"{config_path}: dtype {declared!r} is not one of {', '.join(STORED_DTYPES)}; "
            "convert the weights again with zoo convert --dtype"
        )
    return STORED_DTYPES[declared]


def _check_dtypes(
    stored: dict[str, str], expected: dict[str, torch.Tensor], declared: torch.dtype | None, weights_path: Path
) -> None:
    """Each floating parameter's stored dtype (safetensors' F32, BF16, BOOL, I8...) must be its own or ``declared``."""
    for name, code in stored.items():
        target = expected.get(name)
        if target is None or not target.is_floating_point():
            continue  # unexpected names are reported by the caller; integer buffers (counters) load as they are
        dtype = _SAFETENSORS_FLOATS.get(code)
        if dtype is not None and dtype in (target.dtype, declared):
            continue
        wanted = str(target.dtype).removeprefix("torch.")
        if dtype is None:
            raise DataError(
                f"{weights_path}: tensor {name!r} is stored as {code}, not as floating-point numbers, "
                f"but the model's parameter is {wanted}; these are not the model's weights "
                "(a quantised or damaged copy?): use the original floating-point weights"
            )
        found = str(dtype).removeprefix("torch.")
        said = next((key for key, value in STORED_DTYPES.items() if value == declared), None)
        declared_text = f"{CONFIG_NAME} declares dtype {said}" if said else f"{CONFIG_NAME} declares no dtype"
        raise DataError(
            f"{weights_path}: tensor {name!r} is stored as {found} but the model's parameter is {wanted} "
            f"and {declared_text}; convert the weights with `zoo convert ... --dtype` (which records the "
            f"dtype in {CONFIG_NAME}), or save them in {wanted}"
        )


def _names(label: str, names: list[str], shown: int = 10) -> str:
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} {label} key(s): {', '.join(sorted(names)[:shown])}{more}"
