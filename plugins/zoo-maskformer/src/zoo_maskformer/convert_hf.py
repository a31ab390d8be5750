"""``zoo maskformer import-hf``: a transformers ``MaskFormerForInstanceSegmentation`` (Swin) as a zoo model directory.

The source is a directory written by ``save_pretrained`` or a Hub repo id (downloaded with
huggingface_hub: ``config.json``, ``preprocessor_config.json`` and the ``*.safetensors``
files only). transformers itself is not needed: the sizes come from ``config.json`` and the
weights' shapes, the weights from safetensors (never a pickle). transformers' names map
onto the zoo modules one to one, except that its separate query/key/value projections are
concatenated into the zoo's fused ones (Swin ``attn.qkv``, the decoder's ``in_proj``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo_core.errors import DataError

from .convert_d2 import BACKBONE, HEAD, Converted, assemble, infer_model_config

_ENC = "model.pixel_level_module.encoder."
_FPN = "model.pixel_level_module.decoder."
_TR = "model.transformer_module."
_QKV = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
# transformers keys that are not weights of the model: recomputed buffers, the unused final norm of the
# Swin classifier, the training criterion's class weights
_IGNORED = re.compile(
    r".*\.relative_position_index|model\.pixel_level_module\.encoder\.model\.layernorm\..*|criterion\..*"
)
_LAYER_PARTS = {"self_attn_layer_norm": "norm1", "encoder_attn_layer_norm": "norm2", "final_layer_norm": "norm3"}
# saved checkpoints name them fc1/fc2 (and out_proj); transformers 5 modules mlp.fc1/mlp.fc2 (and o_proj)
_LAYER_PARTS.update({"fc1": "linear1", "fc2": "linear2", "mlp.fc1": "linear1", "mlp.fc2": "linear2"})
_BLOCK_PARTS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
}


def _rules(stages: int) -> list[tuple[str, Callable[[re.Match], tuple[str, int | None]]]]:
    """transformers name -> (zoo name, part of a fused q/k/v tensor or None)."""
    pd = HEAD + "pixel_decoder."
    pr = HEAD + "predictor."
    blocks = re.escape(_ENC) + r"model\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
    return [
        (
            re.escape(_ENC) + r"model\.embeddings\.patch_embeddings\.projection\.(\w+)",
            lambda m: (f"{BACKBONE}patch_embed.proj.{m[1]}", None),
        ),
        (re.escape(_ENC) + r"model\.embeddings\.norm\.(\w+)", lambda m: (f"{BACKBONE}patch_embed.norm.{m[1]}", None)),
        (
            blocks + r"attention\.self\.(query|key|value)\.(\w+)",
            lambda m: (f"{BACKBONE}layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}", _QKV[m[3]]),
        ),
        (
            blocks + r"(attention\.self\.relative_position_bias_table)",
            lambda m: (f"{BACKBONE}layers.{m[1]}.blocks.{m[2]}.attn.relative_position_bias_table", None),
        ),
        (
            blocks + r"(.+)\.(\w+)",
            lambda m: (
                (f"{BACKBONE}layers.{m[1]}.blocks.{m[2]}.{_BLOCK_PARTS[m[3]]}.{m[4]}", None)
                if m[3] in _BLOCK_PARTS
                else ("", None)
            ),
        ),
        (
            re.escape(_ENC) + r"model\.encoder\.layers\.(\d+)\.downsample\.(.+)",
            lambda m: (f"{BACKBONE}layers.{m[1]}.downsample.{m[2]}", None),
        ),
        (re.escape(_ENC) + r"hidden_states_norms\.(\d+)\.(\w+)", lambda m: (f"{BACKBONE}norm{m[1]}.{m[2]}", None)),
        (re.escape(_FPN) + r"fpn\.stem\.0\.weight", lambda m: (f"{pd}output_convs.{stages - 1}.conv.weight", None)),
        (re.escape(_FPN) + r"fpn\.stem\.1\.(\w+)", lambda m: (f"{pd}output_convs.{stages - 1}.norm.{m[1]}", None)),
        # fpn.layers run coarse to fine from the second-coarsest map; the zoo's lists run fine to coarse
        (
            re.escape(_FPN) + r"fpn\.layers\.(\d+)\.proj\.0\.weight",
            lambda m: (f"{pd}lateral_convs.{stages - 2 - int(m[1])}.conv.weight", None),
        ),
        (
            re.escape(_FPN) + r"fpn\.layers\.(\d+)\.proj\.1\.(\w+)",
            lambda m: (f"{pd}lateral_convs.{stages - 2 - int(m[1])}.norm.{m[2]}", None),
        ),
        (
            re.escape(_FPN) + r"fpn\.layers\.(\d+)\.block\.0\.weight",
            lambda m: (f"{pd}output_convs.{stages - 2 - int(m[1])}.conv.weight", None),
        ),
        (
            re.escape(_FPN) + r"fpn\.layers\.(\d+)\.block\.1\.(\w+)",
            lambda m: (f"{pd}output_convs.{stages - 2 - int(m[1])}.norm.{m[2]}", None),
        ),
        (re.escape(_FPN) + r"mask_projection\.(\w+)", lambda m: (f"{pd}mask_features.{m[1]}", None)),
        (re.escape(_TR) + r"queries_embedder\.weight", lambda m: (f"{pr}query_embed.weight", None)),
        (re.escape(_TR) + r"input_projection\.(\w+)", lambda m: (f"{pr}input_proj.{m[1]}", None)),
        (
            re.escape(_TR) + r"decoder\.layers\.(\d+)\.(self_attn|encoder_attn)\.([qkv]_proj)\.(weight|bias)",
            lambda m: (
                f"{pr}decoder_layers.{m[1]}.{'self_attn' if m[2] == 'self_attn' else 'multihead_attn'}.in_proj_{m[4]}",
                _QKV[m[3]],
            ),
        ),
        (
            re.escape(_TR) + r"decoder\.layers\.(\d+)\.(self_attn|encoder_attn)\.(?:o_proj|out_proj)\.(\w+)",
            lambda m: (
                f"{pr}decoder_layers.{m[1]}.{'self_attn' if m[2] == 'self_attn' else 'multihead_attn'}.out_proj.{m[3]}",
                None,
            ),
        ),
        (
            re.escape(_TR) + r"decoder\.layers\.(\d+)\.(.+)\.(\w+)",
            lambda m: (
                (f"{pr}decoder_layers.{m[1]}.{_LAYER_PARTS[m[2]]}.{m[3]}", None) if m[2] in _LAYER_PARTS else ("", None)
            ),
        ),
        (re.escape(_TR) + r"decoder\.layernorm\.(\w+)", lambda m: (f"{pr}decoder_norm.{m[1]}", None)),
        (r"class_predictor\.(\w+)", lambda m: (f"{pr}class_embed.{m[1]}", None)),
        (r"mask_embedder\.(\d+)\.0\.(\w+)", lambda m: (f"{pr}mask_embed.layers.{m[1]}.{m[2]}", None)),
    ]


def _hf_names(hf_keys: list[str], stages: int) -> dict[str, str]:
    """zoo name -> the (first) transformers name it comes from, for the messages."""
    names: dict[str, str] = {}
    for key in hf_keys:
        target = _to_zoo(key, _rules(stages))
        if target and target[0]:
            names.setdefault(target[0], key)
    return names


def _to_hf(zoo_name: str, stages: int) -> str:
    """The transformers name (as saved by save_pretrained) of the zoo parameter ``zoo_name``."""
    block_parts = {v: k for k, v in _BLOCK_PARTS.items()}
    layer_parts = {"norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm", "norm3": "final_layer_norm"}
    layer_parts.update({"linear1": "fc1", "linear2": "fc2"})
    rules: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"backbone\.patch_embed\.proj\.(\w+)", lambda m: f"{_ENC}model.embeddings.patch_embeddings.projection.{m[1]}"),
        (r"backbone\.patch_embed\.norm\.(\w+)", lambda m: f"{_ENC}model.embeddings.norm.{m[1]}"),
        (
            r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(\w+)",
            lambda m: f"{_ENC}model.encoder.layers.{m[1]}.blocks.{m[2]}.attention.self.query.{m[3]}",
        ),
        (
            r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
            lambda m: f"{_ENC}model.encoder.layers.{m[1]}.blocks.{m[2]}.attention.self.relative_position_bias_table",
        ),
        (
            r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)",
            lambda m: f"{_ENC}model.encoder.layers.{m[1]}.blocks.{m[2]}.{block_parts.get(m[3], m[3])}.{m[4]}",
        ),
        (
            r"backbone\.layers\.(\d+)\.downsample\.(.+)",
            lambda m: f"{_ENC}model.encoder.layers.{m[1]}.downsample.{m[2]}",
        ),
        (r"backbone\.norm(\d+)\.(\w+)", lambda m: f"{_ENC}hidden_states_norms.{m[1]}.{m[2]}"),
        (rf"heads\.0\.pixel_decoder\.output_convs\.{stages - 1}\.conv\.weight", lambda m: f"{_FPN}fpn.stem.0.weight"),
        (rf"heads\.0\.pixel_decoder\.output_convs\.{stages - 1}\.norm\.(\w+)", lambda m: f"{_FPN}fpn.stem.1.{m[1]}"),
        (
            r"heads\.0\.pixel_decoder\.lateral_convs\.(\d+)\.conv\.weight",
            lambda m: f"{_FPN}fpn.layers.{stages - 2 - int(m[1])}.proj.0.weight",
        ),
        (
            r"heads\.0\.pixel_decoder\.lateral_convs\.(\d+)\.norm\.(\w+)",
            lambda m: f"{_FPN}fpn.layers.{stages - 2 - int(m[1])}.proj.1.{m[2]}",
        ),
        (
            r"heads\.0\.pixel_decoder\.output_convs\.(\d+)\.conv\.weight",
            lambda m: f"{_FPN}fpn.layers.{stages - 2 - int(m[1])}.block.0.weight",
        ),
        (
            r"heads\.0\.pixel_decoder\.output_convs\.(\d+)\.norm\.(\w+)",
            lambda m: f"{_FPN}fpn.layers.{stages - 2 - int(m[1])}.block.1.{m[2]}",
        ),
        (r"heads\.0\.pixel_decoder\.mask_features\.(\w+)", lambda m: f"{_FPN}mask_projection.{m[1]}"),
        (r"heads\.0\.predictor\.query_embed\.weight", lambda m: f"{_TR}queries_embedder.weight"),
        (r"heads\.0\.predictor\.input_proj\.(\w+)", lambda m: f"{_TR}input_projection.{m[1]}"),
        (
            r"heads\.0\.predictor\.decoder_layers\.(\d+)\.(self_attn|multihead_attn)\.in_proj_(\w+)",
            lambda m: (
                f"{_TR}decoder.layers.{m[1]}.{'self_attn' if m[2] == 'self_attn' else 'encoder_attn'}.q_proj.{m[3]}"
            ),
        ),
        (
            r"heads\.0\.predictor\.decoder_layers\.(\d+)\.(self_attn|multihead_attn)\.out_proj\.(\w+)",
            lambda m: (
                f"{_TR}decoder.layers.{m[1]}.{'self_attn' if m[2] == 'self_attn' else 'encoder_attn'}.out_proj.{m[3]}"
            ),
        ),
        (
            r"heads\.0\.predictor\.decoder_layers\.(\d+)\.(\w+)\.(\w+)",
            lambda m: f"{_TR}decoder.layers.{m[1]}.{layer_parts.get(m[2], m[2])}.{m[3]}",
        ),
        (r"heads\.0\.predictor\.decoder_norm\.(\w+)", lambda m: f"{_TR}decoder.layernorm.{m[1]}"),
        (r"heads\.0\.predictor\.class_embed\.(\w+)", lambda m: f"class_predictor.{m[1]}"),
        (r"heads\.0\.predictor\.mask_embed\.layers\.(\d+)\.(\w+)", lambda m: f"mask_embedder.{m[1]}.0.{m[2]}"),
    ]
    for pattern, build in rules:
        match = re.fullmatch(pattern, zoo_name)
        if match:
            return build(match)
    return zoo_name


def _to_zoo(key: str, rules: list) -> tuple[str, int | None] | None:
    for pattern, build in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return build(match)
    return None


def _resolve(source: str, revision: str | None) -> Path:
    """A local directory, or the Hub repo ``source`` downloaded (config and safetensors only)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or source.count("/") != 1 or source.startswith((".", "/")):
        raise DataError(f"{source}: neither a directory written by save_pretrained nor a Hub repo id (owner/name)")
    from fnmatch import fnmatch

    from huggingface_hub import HfApi, hf_hub_download

    # huggingface_hub reads HF_ENDPOINT and HF_HOME once, at its import; read them now, as a fresh process would
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    cache = os.environ.get("HF_HUB_CACHE") or (os.environ.get("HF_HOME") and str(Path(os.environ["HF_HOME"]) / "hub"))
    wanted = ("config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json")
    try:
        # the file list first (no tree listing: the zoo's own hub serves the repo info, not the tree API)
        info = HfApi(endpoint=endpoint).model_info(source, revision=revision)
        files = [s.rfilename for s in info.siblings or []]
        if not any(name.endswith(".safetensors") for name in files):
            pickled = [name for name in files if name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
            hint = f", only {', '.join(pickled)} (pickled weights are not read)" if pickled else ""
            raise DataError(
                f"{source}: no *.safetensors weights in the Hub repo{hint}; convert it to safetensors (save_pretrained)"
            )
        paths = [
            hf_hub_download(source, name, revision=info.sha, endpoint=endpoint, cache_dir=cache or None)
            for name in files
            if any(fnmatch(name, pattern) for pattern in wanted)
        ]
    except DataError:
        raise
    except Exception as exc:  # offline, unknown repo, no access: one line
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(f"{source}: could not download it from the Hugging Face Hub ({reason})") from None
    if not paths:
        raise DataError(f"{source}: the Hub repo has no config.json; give a model saved with save_pretrained")
    return Path(paths[0]).parent


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def _load_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        hint = f" (found {', '.join(pickled)}: pickled weights are not read)" if pickled else ""
        raise DataError(f"{folder}: no *.safetensors weights{hint}; save the model with save_pretrained (safetensors)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{file}: not a readable safetensors file ({exc})") from None
    return state, files[0]


def check_config(config: dict[str, Any], config_where: str) -> None:
    """A :class:`DataError` naming ``config_where`` and the key, unless ``config`` is a Swin transformers MaskFormer."""
    if config.get("model_type") != "maskformer":
        raise DataError(
            f"{config_where}: key 'model_type' is {config.get('model_type')!r}, not 'maskformer': not a transformers "
            "MaskFormer (Mask2Former and others do not convert)"
        )
    backbone = config.get("backbone_config") or {}
    if backbone.get("model_type") not in ("maskformer-swin", "swin"):
        raise DataError(
            f"{config_where}: key 'backbone_config.model_type' is {backbone.get('model_type')!r}: only Swin "
            "backbones convert (maskformer-swin)"
        )
    if backbone.get("use_absolute_embeddings"):
        raise DataError(f"{config_where}: key 'backbone_config.use_absolute_embeddings' is true; not supported")


def convert_state_dict(
    config: dict[str, Any],
    hf_state: dict[str, torch.Tensor],
    size_divisibility: int,
    where: str,
    config_where: str = "config.json",
) -> tuple[dict[str, torch.Tensor], dict[str, Any], Callable[[str], str]]:
    """transformers' ``config`` (its config.json) and weights -> (zoo-named tensors, zoo model config, zoo name ->
    transformers name); a :class:`DataError` naming ``where`` (or ``config_where``) and the first bad key."""
    check_config(config, config_where)
    nheads = (config.get("decoder_config") or {}).get("decoder_attention_heads", 8)
    stages = len(config["backbone_config"].get("depths", [2, 2, 6, 2]))
    rules = _rules(stages)
    fused: dict[str, dict[int, torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        if _IGNORED.fullmatch(key):
            continue
        target = _to_zoo(key, rules)
        if not target or not target[0]:
            raise DataError(
                f"{where}: unexpected key {key!r}: no part of a MaskFormer with a Swin backbone has it; "
                "is it another architecture?"
            )
        name, part = target
        if part is None:
            state[name] = tensor.float()
        else:
            fused.setdefault(name, {})[part] = tensor.float()
    names = _hf_names(list(hf_state), stages)
    for name, parts in fused.items():
        if len(parts) != 3:
            missing = ("query", "key", "value")[min(set(range(3)) - set(parts))]
            raise DataError(f"{where}: missing the {missing} projection of {names[name]!r}")
        state[name] = torch.cat([parts[0], parts[1], parts[2]], dim=0)

    def source_name(zoo_name: str) -> str:
        return names.get(zoo_name) or _to_hf(zoo_name, stages)

    return state, infer_model_config(state, nheads, size_divisibility, where, source_name), source_name


def import_hf(
    source: str, out_dir: Path, size_divisibility: int | None = None, revision: str | None = None
) -> Converted:
    """Convert the transformers MaskFormer at ``source`` (directory or Hub repo id) to the model dir ``out_dir``."""
    folder = _resolve(source, revision)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise DataError(f"{folder}: no config.json; give a directory written by save_pretrained")
    config = _read_json(config_path)
    check_config(config, str(config_path))
    if size_divisibility is None:
        pre = folder / "preprocessor_config.json"
        size_divisibility = _read_json(pre).get("size_divisor", 32) if pre.is_file() else 32
        if not isinstance(size_divisibility, int) or isinstance(size_divisibility, bool) or size_divisibility < 0:
            raise DataError(
                f"{pre}: key 'size_divisor' is {size_divisibility!r}, not an integer >= 0; give --size-divisibility"
            )
    hf_state, weights_path = _load_weights(folder)
    where = str(weights_path)
    state, model_config, source_name = convert_state_dict(config, hf_state, size_divisibility, where, str(config_path))
    extra: dict[str, Any] = {"converted_from": {"format": "transformers-maskformer", "source": source}}
    id2label = config.get("id2label") or {}
    if len(id2label) == model_config["num_classes"]:
        try:
            extra["class_names"] = [str(id2label[str(i)]) for i in range(len(id2label))]
        except KeyError:
            pass
    return assemble(state, model_config, out_dir, where, source_name, extra)
