"""``zoo maskformer import-d2``: an official MaskFormer checkpoint (detectron2 ``.pkl``) as a zoo model directory.

The official checkpoints (``model_final_*.pkl``) are pickled dicts ``{"model": {name:
numpy array}, "__author__": ..., "matching_heuristics": ...}``; they are read with
:func:`~zoo_maskformer.unpickle.load_checkpoint_pickle` (arrays and containers only). The
architecture's sizes are read off the arrays' shapes (Swin stages, window, heads; the
head's dims, queries, decoder layers, classes); only the transformer decoder's number of
attention heads is not in the shapes (``nheads``, 8 in every official config).

:func:`assemble` is shared with :mod:`zoo_maskformer.convert_hf`: zoo-named tensors in, a
checked model directory out, nothing written unless every key and shape matches.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo_core.errors import DataError

BACKBONE = "backbone."
HEAD = "heads.0."

# official name -> zoo name (the backbone keeps its names: zoo_maskformer.swin uses the official ones)
_TO_ZOO: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.(.+)", lambda m: BACKBONE + m[1]),
    (
        r"sem_seg_head\.pixel_decoder\.adapter_(\d+)\.weight",
        lambda m: f"{HEAD}pixel_decoder.lateral_convs.{int(m[1]) - 1}.conv.weight",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.adapter_(\d+)\.norm\.(.+)",
        lambda m: f"{HEAD}pixel_decoder.lateral_convs.{int(m[1]) - 1}.norm.{m[2]}",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.layer_(\d+)\.weight",
        lambda m: f"{HEAD}pixel_decoder.output_convs.{int(m[1]) - 1}.conv.weight",
    ),
    (
        r"sem_seg_head\.pixel_decoder\.layer_(\d+)\.norm\.(.+)",
        lambda m: f"{HEAD}pixel_decoder.output_convs.{int(m[1]) - 1}.norm.{m[2]}",
    ),
    (r"sem_seg_head\.pixel_decoder\.mask_features\.(.+)", lambda m: f"{HEAD}pixel_decoder.mask_features.{m[1]}"),
    (
        r"sem_seg_head\.predictor\.transformer\.decoder\.layers\.(\d+)\.(.+)",
        lambda m: f"{HEAD}predictor.decoder_layers.{m[1]}.{m[2]}",
    ),
    (r"sem_seg_head\.predictor\.transformer\.decoder\.norm\.(.+)", lambda m: f"{HEAD}predictor.decoder_norm.{m[1]}"),
    (
        r"sem_seg_head\.predictor\.((?:query_embed|input_proj|class_embed|mask_embed)\..+)",
        lambda m: f"{HEAD}predictor.{m[1]}",
    ),
]
# zoo name -> official name, for the messages about a missing key
_TO_OFFICIAL: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.(.+)", lambda m: "backbone." + m[1]),
    (
        r"heads\.0\.pixel_decoder\.lateral_convs\.(\d+)\.conv\.weight",
        lambda m: f"sem_seg_head.pixel_decoder.adapter_{int(m[1]) + 1}.weight",
    ),
    (
        r"heads\.0\.pixel_decoder\.lateral_convs\.(\d+)\.norm\.(.+)",
        lambda m: f"sem_seg_head.pixel_decoder.adapter_{int(m[1]) + 1}.norm.{m[2]}",
    ),
    (
        r"heads\.0\.pixel_decoder\.output_convs\.(\d+)\.conv\.weight",
        lambda m: f"sem_seg_head.pixel_decoder.layer_{int(m[1]) + 1}.weight",
    ),
    (
        r"heads\.0\.pixel_decoder\.output_convs\.(\d+)\.norm\.(.+)",
        lambda m: f"sem_seg_head.pixel_decoder.layer_{int(m[1]) + 1}.norm.{m[2]}",
    ),
    (r"heads\.0\.pixel_decoder\.mask_features\.(.+)", lambda m: f"sem_seg_head.pixel_decoder.mask_features.{m[1]}"),
    (
        r"heads\.0\.predictor\.decoder_layers\.(\d+)\.(.+)",
        lambda m: f"sem_seg_head.predictor.transformer.decoder.layers.{m[1]}.{m[2]}",
    ),
    (r"heads\.0\.predictor\.decoder_norm\.(.+)", lambda m: f"sem_seg_head.predictor.transformer.decoder.norm.{m[1]}"),
    (r"heads\.0\.predictor\.(.+)", lambda m: f"sem_seg_head.predictor.{m[1]}"),
]
# in the checkpoints, not weights of the model: recomputed buffers and the training criterion's class weights
_IGNORED = re.compile(r"criterion\..*|pixel_(mean|std)|.*\.relative_position_index")
# present in every official MaskFormer checkpoint with a Swin backbone
_SIGNATURE = ("sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.query_embed.weight")
_SWIN_SIGNATURE = "backbone.patch_embed.proj.weight"


def _rename(name: str, rules: list[tuple[str, Callable[[re.Match], str]]]) -> str | None:
    for pattern, build in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return build(match)
    return None


def official_name(zoo_name: str) -> str:
    """The official checkpoint's name of the zoo parameter ``zoo_name``."""
    return _rename(zoo_name, _TO_OFFICIAL) or zoo_name


@dataclass
class Converted:
    out_dir: Path
    tensors: int
    config: dict[str, Any]


def infer_model_config(
    state: Mapping[str, torch.Tensor],
    nheads: int,
    size_divisibility: int,
    where: str,
    source_name: Callable[[str], str],
) -> dict[str, Any]:
    """The zoo ``ModelSpec`` mapping whose parameters have the shapes of ``state`` (zoo names).

    A :class:`DataError` naming ``where`` and the source's name of the first key the sizes are read from that is
    missing.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise DataError(f"{where}: missing key {source_name(key)!r}; not a complete MaskFormer checkpoint")
        return tuple(state[key].shape)

    def count(prefix: str, suffix: str) -> int:  # by a key each one has: a stray partial one shows as unexpected
        pattern = re.compile(re.escape(prefix) + r"(\d+)\." + re.escape(suffix))
        return len({int(m[1]) for key in state if (m := pattern.fullmatch(key))})

    embed_dim, _, patch_size, _ = shape(BACKBONE + "patch_embed.proj.weight")
    stages = count(BACKBONE + "layers.", "blocks.0.norm1.weight")
    depths = [count(f"{BACKBONE}layers.{i}.blocks.", "norm1.weight") for i in range(stages)]
    if stages == 0 or min(depths) == 0:
        shape(f"{BACKBONE}layers.{stages if stages == 0 else depths.index(0)}.blocks.0.norm1.weight")
    tables = [shape(f"{BACKBONE}layers.{i}.blocks.0.attn.relative_position_bias_table") for i in range(stages)]
    window = (math.isqrt(tables[0][0]) + 1) // 2
    mlp_hidden = shape(f"{BACKBONE}layers.0.blocks.0.mlp.fc1.weight")[0]
    predictor = HEAD + "predictor."
    num_queries, hidden_dim = shape(predictor + "query_embed.weight")
    dec_layers = count(predictor + "decoder_layers.", "linear1.weight")
    head_args = {
        "conv_dim": shape(HEAD + "pixel_decoder.output_convs.0.conv.weight")[0],
        "mask_dim": shape(HEAD + "pixel_decoder.mask_features.weight")[0],
        "hidden_dim": hidden_dim,
        "num_queries": num_queries,
        "nheads": nheads,
        "dim_feedforward": shape(predictor + "decoder_layers.0.linear1.weight")[0],
        "dec_layers": dec_layers,
    }
    in_channels = embed_dim * 2 ** (stages - 1)
    if predictor + "input_proj.weight" in state and in_channels == hidden_dim:
        head_args["enforce_input_proj"] = True
    return {
        "num_classes": shape(predictor + "class_embed.weight")[0] - 1,
        "size_divisibility": size_divisibility,
        "backbone": {
            "type": "maskformer-swin",
            "args": {
                "embed_dim": embed_dim,
                "depths": depths,
                "num_heads": [t[1] for t in tables],
                "window_size": window,
                "mlp_ratio": mlp_hidden / embed_dim,
                "patch_size": patch_size,
            },
        },
        "heads": [{"type": "maskformer", "args": head_args}],
    }


def assemble(
    state: dict[str, torch.Tensor],
    model_config: dict[str, Any],
    out_dir: Path,
    where: str,
    source_name: Callable[[str], str],
    extra: dict[str, Any],
) -> Converted:
    """Build the model of ``model_config``, check ``state`` (zoo names) against it key by key, save it.

    Nothing is written unless every parameter of the model has a tensor of its shape in
    ``state`` and ``state`` has nothing else; the first offending key is named by its source name.
    """
    from zoo_core.errors import ZooError
    from zoo_core.model_dir import build_segmentor, save_model_dir

    try:
        model = build_segmentor(model_config)
    except ZooError as exc:  # sizes read off the checkpoint that the zoo model refuses
        raise DataError(f"{where}: the checkpoint's sizes do not make a MaskFormer: {exc}") from None
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise DataError(f"{where}: missing key {source_name(key)!r}; not a complete MaskFormer checkpoint")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise DataError(
                f"{where}: key {source_name(key)!r} has shape {list(state[key].shape)}, but the sizes read off the "
                f"checkpoint's other keys need {list(tensor.shape)}; the checkpoint is inconsistent"
            )
    for key in state:
        if key not in expected:
            raise DataError(
                f"{where}: unexpected key {source_name(key)!r}: no part of a MaskFormer with a Swin backbone has it; "
                "is it a checkpoint of another architecture?"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    save_model_dir(model, model_config, out_dir, extra=extra)
    return Converted(Path(out_dir), len(state), model_config)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_state(checkpoint: Any, where: str) -> dict[str, torch.Tensor]:
    """The zoo-named tensors of an unpickled official checkpoint; a :class:`DataError` naming the first bad key."""
    import numpy as np

    weights = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict):
        found = (
            f"a dict with keys {sorted(map(str, checkpoint))[:5]}"
            if isinstance(checkpoint, dict)
            else type(checkpoint).__name__
        )
        raise DataError(
            f"{where}: not a detectron2 checkpoint: expected a dict with a 'model' dict of arrays, found {found}"
        )
    for key in _SIGNATURE:
        if key not in weights:
            raise DataError(f"{where}: not a MaskFormer checkpoint: no key {key!r}")
    if _SWIN_SIGNATURE not in weights:
        raise DataError(
            f"{where}: no key {_SWIN_SIGNATURE!r}: a MaskFormer checkpoint with another backbone (ResNet?); "
            "only Swin backbones convert"
        )
    state: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        if not isinstance(name, str) or _IGNORED.fullmatch(name):
            continue
        zoo_name = _rename(name, _TO_ZOO)
        if zoo_name is None:
            raise DataError(
                f"{where}: unexpected key {name!r}: no part of a MaskFormer with a Swin backbone has it; "
                "is it a checkpoint of another architecture?"
            )
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            kind = f"a {value.dtype} array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            raise DataError(f"{where}: key {name!r} holds {kind}, not a floating-point array")
        state[zoo_name] = torch.from_numpy(np.ascontiguousarray(value)).float()
    return state


def import_d2(
    pkl: Path, out_dir: Path, nheads: int = 8, size_divisibility: int = 32, num_classes: int | None = None
) -> Converted:
    """Convert the official checkpoint ``pkl`` to the model directory ``out_dir``."""
    from .unpickle import load_checkpoint_pickle

    pkl = Path(pkl)
    where = str(pkl)
    state = official_state(load_checkpoint_pickle(pkl), where)
    config = infer_model_config(state, nheads, size_divisibility, where, official_name)
    if num_classes is not None and config["num_classes"] != num_classes:
        raise DataError(
            f"{where}: key 'sem_seg_head.predictor.class_embed.weight' gives {config['num_classes']} classes, "
            f"not the {num_classes} of --num-classes; convert the checkpoint of your dataset"
        )
    extra = {"converted_from": {"format": "detectron2-maskformer", "file": pkl.name, "sha256": sha256(pkl)}}
    return assemble(state, config, out_dir, where, official_name, extra)
