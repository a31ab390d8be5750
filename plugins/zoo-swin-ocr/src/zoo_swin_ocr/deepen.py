"""Model surgery: more Swin blocks per stage for a trained model (report 4.1.1, part 2: (2,2,18,2) -> (4,6,20,4)).

New blocks are appended at the end of each stage. Each is a copy of the stage's last old
block of the same parity (timm's block ``i`` shifts its windows when ``i`` is odd), with
the output projections of its two residual branches (``attn.proj`` and ``mlp.fc2``,
weights and biases) set to zero. timm's Swin block is pre-norm without layer scale::

    x = x + attn.proj(...(norm1(x)))        # -> x + 0
    x = x + mlp.fc2(act(mlp.fc1(norm2(x)))) # -> x + 0

so every new block starts as the identity and the deepened model predicts exactly what the
old one did; fine-tuning then grows them (the gradient of ``fc2``/``proj`` is not zero).
Copying instead of a random init gives the new block's norms, attention and first MLP layer
the statistics of a trained block at that depth. The additions must be even so that each
stage still ends with the kind of block (shifted or not) it ended with. The attention
masks and relative position indices are not weights (non-persistent buffers): the new
model computes its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo_core.errors import ConfigError, DataError

from .backbone import backbone_args, check_depths

BLOCK_PREFIX = "backbone.model.layers_{stage}.blocks.{block}."
ZEROED = ("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias")
"""The residual branches' output projections of a new block: zero, so the block starts as the identity."""
NOT_KEPT = ("dtype", "averaged_from", "converted_from", "deepened_from")
"""Keys of the old config.json true of its weights file only: the deepened weights are new, and stored in fp32."""


def check_deepening(old_depths: Sequence[int], new_depths: Sequence[int]) -> None:
    """Refuse depths that shrink a stage, add an odd number of blocks, or change nothing."""
    old, new = tuple(old_depths), check_depths(list(new_depths), "--depths")
    for stage, (a, b) in enumerate(zip(old, new)):
        if b < a:
            raise ConfigError(
                f"--depths {_fmt(new)}: stage {stage} would shrink from {a} to {b} blocks; "
                f"deepening only adds blocks (the model has {_fmt(old)})"
            )
        if (b - a) % 2:
            raise ConfigError(
                f"--depths {_fmt(new)}: stage {stage} goes from {a} to {b} blocks; add an even number "
                "so shifted and plain windows keep alternating to the stage's end "
                f"(the model has {_fmt(old)})"
            )
    if old == new:
        raise ConfigError(f"--depths {_fmt(new)} are the model's depths already; nothing to add")


def new_blocks(old_depths: Sequence[int], new_depths: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(stage, new block index, source block index)`` of every block the deepening adds."""
    added = []
    for stage, (a, b) in enumerate(zip(old_depths, new_depths)):
        for block in range(a, b):
            same_parity = [i for i in range(a) if i % 2 == block % 2]
            added.append((stage, block, same_parity[-1] if same_parity else a - 1))
    return added


def deepen_state_dict(
    state: Mapping[str, torch.Tensor], old_depths: Sequence[int], new_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """The deepened model's weights: every old tensor under its own name, plus the new blocks (see the module doc)."""
    check_deepening(old_depths, new_depths)
    for stage, depth in enumerate(old_depths):
        has_last = any(k.startswith(BLOCK_PREFIX.format(stage=stage, block=depth - 1)) for k in state)
        has_extra = any(k.startswith(BLOCK_PREFIX.format(stage=stage, block=depth)) for k in state)
        if not has_last or has_extra:
            raise DataError(
                f"the weights do not hold a swin backbone of depths {_fmt(old_depths)}: stage {stage} "
                f"should have blocks 0..{depth - 1} under {BLOCK_PREFIX.format(stage=stage, block='N')}"
            )
    out = {name: tensor.clone() for name, tensor in state.items()}
    for stage, block, source in new_blocks(old_depths, new_depths):
        src = BLOCK_PREFIX.format(stage=stage, block=source)
        dst = BLOCK_PREFIX.format(stage=stage, block=block)
        for name, tensor in state.items():
            if name.startswith(src):
                suffix = name[len(src) :]
                out[dst + suffix] = torch.zeros_like(tensor) if suffix in ZEROED else tensor.clone()
    return out


@dataclass(frozen=True)
class Deepened:
    out_dir: Path
    old_depths: tuple[int, ...]
    new_depths: tuple[int, ...]
    added_blocks: int
    kept_tensors: int  # the old model's, each under its own name


def deepen_model_dir(model_dir: Path, new_depths: Sequence[int], out_dir: Path) -> Deepened:
    """Deepen the saved model ``model_dir`` (a ``swin`` backbone) to ``new_depths``, written to ``out_dir``."""
    from zoo_core.model_dir import (
        CONFIG_NAME,
        RESERVED_KEYS,
        build_segmentor,
        find_component,
        load_model_dir,
        read_model_config,
        save_model_dir,
    )

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = read_model_config(model_dir)
    backbone = config["model"].get("backbone")
    if not isinstance(backbone, Mapping) or not isinstance(backbone.get("type"), str):
        raise DataError(f"{model_dir / CONFIG_NAME}: model.backbone has no type; it is not a zoo model config")
    entry = find_component("backbone", backbone["type"])
    if (entry.distribution, entry.name) != ("zoo-swin-ocr", "swin"):
        raise ConfigError(
            f"{model_dir / CONFIG_NAME}: the backbone is {backbone['type']!r} "
            f"(from {entry.distribution}); zoo deepen adds blocks to the 'swin' backbone of "
            "zoo-swin-ocr only"
        )
    if (out_dir / CONFIG_NAME).exists():
        raise ConfigError(f"{out_dir} already holds a model ({CONFIG_NAME}); choose another -o or delete it")
    old_args = dict(backbone.get("args") or {})
    try:
        old_depths = tuple(backbone_args(old_args.get("preset", "swin-l"), old_args.get("depths"))["depths"])
    except ConfigError as exc:
        raise ConfigError(f"{model_dir / CONFIG_NAME}: {exc}") from None
    check_deepening(old_depths, new_depths)
    new_depths = tuple(new_depths)

    old_model, _ = load_model_dir(model_dir)  # strict: the weights match the config
    old_state = old_model.state_dict()
    new_state = deepen_state_dict(old_state, old_depths, new_depths)
    del old_model
    new_config = copy.deepcopy(config["model"])
    new_config["backbone"]["args"] = {**old_args, "depths": list(new_depths)}
    new_model = build_segmentor(new_config)
    missing, unexpected = new_model.load_state_dict(new_state, strict=False)
    if missing or unexpected:  # the backbone's key layout changed under us: never write a half-loaded model
        raise DataError(
            f"deepened weights do not fit the deepened model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    extra = {k: v for k, v in config.items() if k not in RESERVED_KEYS and k not in NOT_KEPT}
    extra["deepened_from"] = {"depths": list(old_depths)}
    save_model_dir(new_model.eval(), new_config, out_dir, extra=extra)
    return Deepened(out_dir, old_depths, new_depths, len(new_blocks(old_depths, new_depths)), len(old_state))


def _fmt(depths: Sequence[int]) -> str:
    return ",".join(str(d) for d in depths)
