"""Training checkpoints: a model directory plus the optimizer's tensors and the trainer's state.

``OUT/checkpoints/iter_0001000/`` holds ``model.safetensors`` + ``config.json`` (a model
directory that ``zoo run`` and ``zoo average`` read), ``optimizer.safetensors`` (every
optimizer state tensor) and ``trainer_state.json`` (iteration, optimizer hyper-parameters,
gradient scaler, the pipeline's fingerprint). Nothing is pickled. A checkpoint is written
into a hidden temporary folder and renamed into place, so a half-written one is never seen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..model_dir import WEIGHTS_NAME, load_weights, save_model_dir

STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
CHECKPOINT_RE = re.compile(r"^iter_(\d{7,})$")


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(
    folder: Path,
    iteration: int,
    model: torch.nn.Module,
    model_config: dict,
    extra: dict,
    optimizer: torch.optim.Optimizer | None = None,
    state: dict | None = None,
    components: Sequence[tuple[str, str, str]] = (),
) -> Path:
    """Write ``folder/iter_N`` atomically; without an optimizer it is a bare model directory (SWA snapshots)."""
    from safetensors.torch import save_file

    final = folder / checkpoint_name(iteration)
    tmp = folder / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir(parents=True)
    try:
        save_model_dir(model, model_config, tmp, extra=dict(extra, iteration=iteration), components=components)
        if optimizer is not None:
            tensors, groups = _flatten_optimizer(optimizer.state_dict())
            save_file(tensors, str(tmp / OPTIMIZER_NAME))
            record = dict(state or {}, iteration=iteration, optimizer_param_groups=groups)
            (tmp / STATE_NAME).write_text(json.dumps(record, indent=2) + "\n")
        else:
            (tmp / STATE_NAME).write_text(json.dumps(dict(state or {}, iteration=iteration), indent=2) + "\n")
        if final.exists():  # a rerun of the same iteration (resumed after a crash): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load weights and optimizer state from ``path`` strictly; returns the trainer state."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = json.loads((path / STATE_NAME).read_text())
        optimizer_tensors = load_file(str(path / OPTIMIZER_NAME))
    except (OSError, SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"checkpoint {path} is incomplete or corrupt ({exc}); delete it to resume from the previous one"
        ) from None
    load_weights(model, path / WEIGHTS_NAME, "the pipeline's model (resume with the pipeline that wrote it)")
    groups = state.pop("optimizer_param_groups")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(optimizer_tensors, groups))
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"checkpoint {path}: the optimizer state does not fit ({exc}); resume with the pipeline that wrote it"
        ) from None
    return state


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep`` 0 keeps all)."""
    if keep <= 0:
        return
    for _, path in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
    return tensors, json.loads(json.dumps(state_dict["param_groups"]))


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}
