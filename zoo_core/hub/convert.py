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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch
import yaml

from ..errors import ConfigError, DataError
from ..model_dir import CONFIG_NAME, FORMAT, RESERVED_KEYS, _names, save_model_dir

AUTO_KEYS = ("state_dict", "model", "module")


@dataclass(frozen=True)
class Converted:
    out_dir: Path
    key: Optional[str]  # where the weights were in the checkpoint (None: the top level)
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


def convert_checkpoint(checkpoint: Path, config_path: Path, out_dir: Path, key: Optional[str] = None,
                       strip_prefixes: Sequence[str] = (), renames: Sequence[tuple[str, str]] = ()) -> Converted:
    """Convert ``checkpoint`` into the model directory ``out_dir``; see :mod:`zoo_core.hub.convert`."""
    from ..model_dir import build_segmentor

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if (out_dir / CONFIG_NAME).exists():
        raise ConfigError(f"{out_dir} already holds a model ({CONFIG_NAME}); choose another -o or delete it")
    model_config, extra = read_model_spec(Path(config_path))
    state, used_key = _select_state(_read_checkpoint(checkpoint), checkpoint, key)
    state = rename_keys(state, strip_prefixes, renames)

    model = build_segmentor(model_config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise DataError(f"{checkpoint}: weights do not fit the model in {config_path}: {_first_lines(exc)}") from None
    if missing or unexpected:
        raise DataError(f"{checkpoint}: weight names do not match the model in {config_path}: "
                        + "; ".join(filter(None, [_names("missing", missing), _names("unexpected", unexpected)]))
                        + "; adapt them with --strip-prefix and --map OLD=NEW, or check --key and the config")
    save_model_dir(model, model_config, out_dir, extra={**extra, "converted_from": checkpoint.name})
    return Converted(out_dir, used_key, len(state))


def read_model_spec(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The build config from a model YAML, a pipeline YAML (``model:``) or a ``config.json``; plus extras to keep."""
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the model config: {_first_lines(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with num_classes, backbone and heads (or a `model:` section)")
    if data.get("format") == FORMAT:  # a model directory's config.json: keep its class names and the like
        extra = {k: v for k, v in data.items() if k not in RESERVED_KEYS and k != "converted_from"}
        return data["model"], extra
    if isinstance(data.get("model"), dict):
        data = data["model"]
    if "backbone" not in data or "heads" not in data:
        raise ConfigError(f"{path}: no model found: expected num_classes, backbone and heads "
                          "(at the top level or under `model:`)")
    return {"num_classes": 124, **data}, {}  # 124: VSPW, the default of a pipeline's model section


def _read_checkpoint(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{path} is not a readable safetensors file ({exc}); download it again") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it contains {found.group(1)})" if found else ""
        raise DataError(f"{path} needs full unpickling to load{what}, which can run arbitrary code; the zoo reads "
                        "checkpoints with torch.load(weights_only=True) only. If you trust its source, open it there "
                        "with full unpickling, save only its state dict of tensors (torch.save or safetensors) "
                        "and convert that file") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise DataError(f"{path} is not a readable PyTorch checkpoint ({_first_lines(exc)}); "
                        "download it again") from None


def _select_state(data: Any, path: Path, key: Optional[str]) -> tuple[dict[str, torch.Tensor], Optional[str]]:
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            found = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{path} has no key {key!r}; its top level has: {found}")
        data, used = data[key], key
    else:
        used = next((k for k in AUTO_KEYS if isinstance(data, dict) and isinstance(data.get(k), dict)), None)
        data = data[used] if used else data
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: {'key ' + repr(used) if used else 'the top level'} is not a mapping of weight names "
                        "to tensors; name the right one with --key")
    not_tensors = [name for name, value in data.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise DataError(f"{path}: {'key ' + repr(used) if used else 'the top level'} holds non-tensor entries "
                        f"({', '.join(map(str, not_tensors[:5]))}); name the weights' key with --key")
    return data, used


def rename_keys(state: dict[str, torch.Tensor], strip_prefixes: Sequence[str] = (),
                renames: Sequence[tuple[str, str]] = ()) -> dict[str, torch.Tensor]:
    """Strip the first matching prefix, then apply each ``(old, new)`` prefix rename in order."""
    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        new = next((name[len(p):] for p in strip_prefixes if name.startswith(p)), name)
        for old, replacement in renames:
            if new.startswith(old):
                new = replacement + new[len(old):]
        if new in renamed:
            raise ConfigError(f"two weights become {new!r} after renaming; make --strip-prefix/--map more specific")
        renamed[new] = tensor
    return renamed


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    return " ".join(str(exc).strip().splitlines()[:lines])
