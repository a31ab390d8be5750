"""Weight averaging of model directories: ``zoo average`` (3rd place) and the end of SWA (5th place)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..fileio import atomic_path, atomic_write_text
from ..model_dir import CONFIG_NAME, RESERVED_KEYS, WEIGHTS_NAME, read_model_config


def average_model_dirs(model_dirs: Sequence[Path], out: Path, extra: dict | None = None) -> Path:
    """Average the weights of model directories of one architecture into ``out``.

    Floating-point tensors (weights, and BatchNorm running statistics) are averaged in
    float64 and stored in their own dtype; integer tensors (BatchNorm's
    ``num_batches_tracked``) are taken from the last directory. Every directory must have
    the same model config and the same tensor names and shapes. Memory is one running sum
    plus one model, whatever the number of directories.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    if len(model_dirs) < 1:
        raise ConfigError("give at least one model directory to average")
    model_dirs = [Path(d) for d in model_dirs]
    first = read_model_config(model_dirs[0])
    sums: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for index, folder in enumerate(model_dirs):
        config = read_model_config(folder)
        if config["model"] != first["model"]:
            raise ConfigError(
                f"{folder / CONFIG_NAME}: its model config differs from {model_dirs[0] / CONFIG_NAME}; "
                "only checkpoints of one architecture can be averaged"
            )
        path = folder / WEIGHTS_NAME
        try:
            with safe_open(str(path), framework="pt") as f:
                names = set(f.keys())
                if index and names != set(sums):
                    raise DataError(
                        f"{path} holds other tensors than {model_dirs[0] / WEIGHTS_NAME} "
                        f"({len(names ^ set(sums))} names differ); average checkpoints of one model"
                    )
                for name in names:
                    tensor = f.get_tensor(name)
                    if not index:
                        dtypes[name] = tensor.dtype
                        sums[name] = tensor.double() if tensor.is_floating_point() else tensor.clone()
                    elif tensor.shape != sums[name].shape:
                        raise DataError(
                            f"{path}: tensor {name} has shape {tuple(tensor.shape)}, but "
                            f"{tuple(sums[name].shape)} in {model_dirs[0] / WEIGHTS_NAME}"
                        )
                    elif tensor.is_floating_point():
                        sums[name] += tensor.double()
                    else:
                        sums[name] = tensor.clone()
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{path} is missing, truncated or corrupt ({exc}); leave it out or re-create it") from None

    count = len(model_dirs)
    averaged = {
        name: (value / count).to(dtypes[name]) if dtypes[name].is_floating_point else value
        for name, value in sums.items()
    }
    out = Path(out)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(averaged, str(tmp))
    config = {k: v for k, v in first.items() if k in RESERVED_KEYS or k == "class_names"}
    config.update(extra or {})
    config["averaged_from"] = [str(d) for d in model_dirs]
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out
