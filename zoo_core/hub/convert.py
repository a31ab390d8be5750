"""``zoo convert``: a third-party checkpoint -> a model directory (config.json + model.safetensors).

This is the only place the zoo reads a pickled checkpoint, and it does so with
``torch.load(weights_only=True)``: tensors and plain containers, never arbitrary objects
(unpickling those can run any code). Weight names are adapted with ``--strip-prefix`` and
``--map``; the model is built from the config and loaded strictly.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import ConfigError, DataError
from ..model_dir import CONFIG_NAME, FORMAT, RESERVED_KEYS, STORED_DTYPES, ModelSpec, _names, save_model_dir

AUTO_KEYS = ("state_dict", "model", "module")
NOT_KEPT = ("converted_from", "dtype")  # what a config.json given as --config says about its own weights


@dataclass(frozen=True)
class Converted:
    out_dir: Path
    key: str | None  # where the weights were in the checkpoint (None: the top level)
    tensors: int


def parse_renames(items: Iterable[str]) -> list[tuple[str, str]]:
    """``["old.=new.", ...]`` -> ``[("old.", "new."), ...]``."""
    renames = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise ConfigError(f"--map {item!r}: expected OLD=NEW, e.g. --map decode_head.=heads.1.")
        renames.append((old, new))
    return renames


def convert_checkpoint(
    checkpoint: Path,
    config_path: Path,
    out_dir: Path,
    key: str | None = None,
    strip_prefixes: Sequence[str] = (),
    renames: Sequence[tuple[str, str]] = (),
    dtype: str | None = None,
) -> Converted:
    """Convert ``checkpoint`` into the model directory ``out_dir``; see :mod:`zoo_core.hub.convert`.

    ``dtype`` (``fp32``, ``fp16``, ``bf16``) stores the floating tensors in that precision and
    records it in config.json, so that loading casts them back to the model's. Without it they
    are stored in the model's own (fp32), whatever precision the checkpoint had.
    """
    from ..model_dir import build_segmentor

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if dtype is not None and dtype not in STORED_DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(STORED_DTYPES)}")
    if (out_dir / CONFIG_NAME).exists():
        raise ConfigError(f"{out_dir} already holds a model ({CONFIG_NAME}); choose another -o or delete it")
    spec, extra = read_model_spec(Path(config_path))
    state, used_key = _select_state(_read_checkpoint(checkpoint), checkpoint, key)
    state = rename_keys(state, strip_prefixes, renames)

    model = build_segmentor(spec)
    _check_tensors(state, model.state_dict(), checkpoint)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise DataError(f"{checkpoint}: weights do not fit the model in {config_path}: {_first_lines(exc)}") from None
    if missing or unexpected:
        raise DataError(
            f"{checkpoint}: weight names do not match the model in {config_path}: "
            + "; ".join(filter(None, [_names("missing", missing), _names("unexpected", unexpected)]))
            + "; adapt them with --strip-prefix and --map OLD=NEW, or check --key and the config"
        )
    extra = {**extra, "converted_from": checkpoint.name}
    if dtype is not None:
        model = model.to(STORED_DTYPES[dtype])  # floating parameters and buffers; integer counters stay
        extra["dtype"] = dtype
    save_model_dir(model, spec.config(), out_dir, extra=extra)
    return Converted(out_dir, used_key, len(state))


def read_model_spec(path: Path) -> tuple[ModelSpec, dict[str, Any]]:
    """The :class:`ModelSpec` of a model YAML, a pipeline YAML (``model:``) or a ``config.json``, and extras to keep."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the model config: {_first_lines(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with num_classes, backbone and heads (or a `model:` section)")
    extra: dict[str, Any] = {}
    if data.get("format") == FORMAT:  # a model directory's config.json: keep its class names and the like
        extra = {k: v for k, v in data.items() if k not in RESERVED_KEYS and k not in NOT_KEPT}
        data = data.get("model")
    elif isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or "backbone" not in data or "heads" not in data:
        raise ConfigError(
            f"{path}: no model found: expected num_classes, backbone and heads (at the top level or under `model:`)"
        )
    try:
        return ModelSpec.parse(data), extra  # num_classes defaults to 124 (VSPW), as in a pipeline
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_checkpoint(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{path} is not a readable safetensors file ({exc}); download it again") from None
    if not _looks_like_torch_save(path):
        raise DataError(
            f"{path} is not a PyTorch checkpoint (neither the zip archive nor the pickle that torch.save "
            "writes); give a .pth/.pt/.bin file saved with torch.save, or a .safetensors file"
        )
    try:
        with warnings.catch_warnings():  # damaged bytes look like another pickle protocol: torch says so
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if not found:
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))  # not torch's advice to unpickle
            raise DataError(
                f"{path} is not a readable PyTorch checkpoint "
                f"({detail.group(1) if detail else _first_lines(exc, 1)}); download it again"
            ) from None
        raise DataError(
            f"{path} needs full unpickling to load (it contains {found.group(1)}), which can run "
            "arbitrary code; the zoo reads checkpoints with torch.load(weights_only=True) only. If you "
            "trust its source, open it there with full unpickling, save only its state dict of tensors "
            "(torch.save or safetensors) and convert that file"
        ) from None
    except Exception as exc:  # a damaged file fails anywhere inside the unpickler: KeyError, EOFError, ...
        raise DataError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
            f"{_first_lines(exc, 1)}); download it again"
        ) from None


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (since PyTorch 1.6) or, before, a pickle (its first byte is PROTO, 0x80)."""
    try:
        with open(path, "rb") as file:
            first = file.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the checkpoint: {exc.strerror or exc}") from None
    return first == b"\x80" or zipfile.is_zipfile(path)


def _select_state(data: Any, path: Path, key: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            found = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{path} has no key {key!r}; its top level has: {found}")
        data, used = data[key], key
    else:
        used = next((k for k in AUTO_KEYS if isinstance(data, dict) and isinstance(data.get(k), dict)), None)
        data = data[used] if used else data
    where = f"key {used!r}" if used else "the top level"
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: {where} is not a mapping of weight names to tensors; name the right one with --key")
    not_names = [name for name in data if not isinstance(name, str)]
    if not_names:
        raise DataError(
            f"{path}: {where} has keys that are not weight names ({', '.join(map(repr, not_names[:5]))}); "
            "name the weights' key with --key"
        )
    not_tensors = [name for name, value in data.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise DataError(
            f"{path}: {where} holds non-tensor entries ({', '.join(not_tensors[:5])}); name the weights' key with --key"
        )
    return data, used


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """A floating parameter takes floating weights (any precision: they are converted), and only finite ones."""
    for name, tensor in state.items():
        target = expected.get(name)
        if target is None or not target.is_floating_point():
            continue
        if not tensor.is_floating_point():
            raise DataError(
                f"{path}: weight {name!r} is {str(tensor.dtype).removeprefix('torch.')}, but the model's "
                f"parameter is {str(target.dtype).removeprefix('torch.')}; these are not the model's "
                "weights (a quantised copy?): convert the original floating-point checkpoint"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise DataError(
                f"{path}: weight {name!r} holds NaN or infinite values; convert a checkpoint from "
                "before the training diverged"
            )


def rename_keys(
    state: dict[str, torch.Tensor], strip_prefixes: Sequence[str] = (), renames: Sequence[tuple[str, str]] = ()
) -> dict[str, torch.Tensor]:
    """Strip the first matching prefix, then apply each ``(old, new)`` prefix rename in order."""
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = next((name[len(p) :] for p in strip_prefixes if name.startswith(p)), name)
        for old, replacement in renames:
            if new.startswith(old):
                new = replacement + new[len(old) :]
        if new in renamed:
            raise ConfigError(f"two weights become {new!r} after renaming; make --strip-prefix/--map more specific")
        renamed[new] = tensor
    return renamed


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    return " ".join(str(exc).strip().splitlines()[:lines])
