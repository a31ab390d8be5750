"""The ``maskformer`` head: an FPN pixel decoder and a transformer decoder predicting (class, mask) pairs.

MaskFormer (Cheng, Schwing, Kirillov, "Per-Pixel Classification is Not All You Need for
Semantic Segmentation", NeurIPS 2021), semantic-segmentation model:

- ``pixel_decoder``: an FPN over the backbone's maps (fine to coarse). The coarsest map goes
  through a 3x3 conv + GroupNorm(32) + ReLU; every finer map through a 1x1 lateral conv +
  GroupNorm, is added to the coarser result upsampled (nearest), then a 3x3 conv + GroupNorm +
  ReLU. ``mask_features``: a 3x3 conv of the finest (stride 4) result to ``mask_dim`` channels.
- ``predictor``: ``num_queries`` learnt queries decoded by a DETR-style transformer decoder
  (post-norm) over the coarsest backbone map (1x1 input projection to ``hidden_dim``, sine
  position encoding); every layer's output goes through the shared final LayerNorm, then a
  linear class head (``num_classes + 1``, "no object" last) and a 3-layer MLP giving mask
  embeddings; mask logits = mask embedding . mask features at every stride-4 pixel.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError
from zoo_core.interfaces import HeadOutput, MaskClassification

GROUPS = 32
"""GroupNorm groups of the pixel decoder (the paper's FPN)."""


class ConvNorm(nn.Sequential):
    """Conv (no bias) + GroupNorm(32) [+ ReLU]: ``conv``, ``norm`` as named parameters."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool):
        layers: dict[str, nn.Module] = {
            "conv": nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            "norm": nn.GroupNorm(GROUPS, out_channels),
        }
        if relu:
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(OrderedDict(layers))


class PixelDecoder(nn.Module):
    """FPN over the maps (fine to coarse); ``forward`` gives the stride-4 ``mask_features``.

    ``lateral_convs[i]`` and ``output_convs[i]`` belong to input map ``i`` (0 = finest);
    the coarsest map has an output conv only.
    """

    def __init__(self, in_channels: Sequence[int], conv_dim: int, mask_dim: int):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvNorm(c, conv_dim, 1, relu=False) for c in in_channels[:-1])
        self.output_convs = nn.ModuleList(
            ConvNorm(c, conv_dim, 3, relu=True) for c in [*[conv_dim] * (len(in_channels) - 1), in_channels[-1]]
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)  # "Xavier" fill of the Caffe2 FPN
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.output_convs[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[i](features[i])
            y = self.output_convs[i](lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest"))
        return self.mask_features(y)


def sine_position_encoding(x: torch.Tensor, num_pos_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's sine encoding ``(N, 2 * num_pos_feats, h, w)`` of ``x``'s grid (no padding mask), normalised to 2*pi.

    Channels: ``num_pos_feats`` for the row (y) then as many for the column (x); within each,
    sin and cos of the position over ``temperature ** (2 * (i // 2) / num_pos_feats)`` alternate.
    """
    n, _, height, width = x.shape
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=x.device) / (height + eps) * scale
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=x.device) / (width + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (L,) -> (L, num_pos_feats), sin/cos interleaved
        angles = positions[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_pos_feats)
    pos_x = encode(xs)[None, :, :].expand(height, width, num_pos_feats)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return pos.unsqueeze(0).expand(n, -1, -1, -1)  # float32, as the memory it is added to may not be


class DecoderLayer(nn.Module):
    """A post-norm DETR decoder layer: self-attention, cross-attention to the memory, feed-forward."""

    def __init__(self, hidden_dim: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden_dim, nheads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(hidden_dim, nheads, dropout=dropout)
        self.linear1 = nn.Linear(hidden_dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, hidden_dim)
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)
        self.dropout = nn.Dropout(dropout)  # inside the feed-forward
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """Sequence-first tensors: ``tgt``, ``query_pos`` ``(Q, N, C)``; ``memory``, ``pos`` ``(HW, N, C)``."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attended = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (``layers.0`` ... ``layers.{n-1}``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim, *[hidden_dim] * (num_layers - 1), out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TransformerPredictor(nn.Module):
    """Queries decoded over one backbone map; per decoder layer the class logits and mask embeddings."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        dropout: float,
        mask_dim: int,
        enforce_input_proj: bool,
    ):
        super().__init__()
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_proj:
            self.input_proj: nn.Module = nn.Conv2d(in_channels, hidden_dim, 1)
            nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
            nn.init.zeros_(self.input_proj.bias)
        else:
            self.input_proj = nn.Identity()
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(dec_layers)
        )
        for layer in self.decoder_layers:
            for param in layer.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.hidden_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class_logits, mask_embed)`` of every layer: ``(L, N, Q, K + 1)`` and ``(L, N, Q, mask_dim)``."""
        pos = sine_position_encoding(x, self.hidden_dim // 2).flatten(2).permute(2, 0, 1)  # (HW, N, C)
        memory = self.input_proj(x).flatten(2).permute(2, 0, 1)
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, x.shape[0], -1)  # (Q, N, C)
        tgt = torch.zeros_like(query_pos)
        states = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, pos, query_pos)
            states.append(self.decoder_norm(tgt))
        hs = torch.stack(states).transpose(1, 2)  # (L, N, Q, C)
        return self.class_embed(hs), self.mask_embed(hs)


class MaskFormerHead(nn.Module):
    """MaskFormer: FPN pixel decoder + transformer decoder giving (class, mask) pairs per query.

    ``in_index`` picks the backbone maps the pixel decoder reads, fine to coarse (default:
    all; the first must be the stride-4 map for the paper's mask resolution);
    ``transformer_in_index`` the map the transformer decoder reads (default: the coarsest,
    stride 32). Sizes default to the paper's: ``conv_dim`` 256 (a multiple of 32, for
    GroupNorm(32)), ``mask_dim`` 256, ``hidden_dim`` 256, ``num_queries`` 100, ``nheads`` 8,
    ``dim_feedforward`` 2048, ``dec_layers`` 6, ``dropout`` 0.1. Returns a
    :class:`~zoo_core.interfaces.MaskClassification` at the first picked map's stride, with
    every earlier decoder layer's pair in ``aux``.
    """

    classifier_path = "predictor.class_embed"  # the final class classifier, Linear(hidden_dim, num_classes + 1)

    def __init__(
        self,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        num_classes: int,
        conv_dim: int = 256,
        mask_dim: int = 256,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        dropout: float = 0.1,
        in_index: Sequence[int] | None = None,
        transformer_in_index: int = -1,
        enforce_input_proj: bool = False,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        indices = list(range(len(in_channels))) if in_index is None else list(in_index)
        _check_sizes(locals(), indices, len(in_channels), in_strides)
        self.in_index = indices
        self.transformer_in_index = transformer_in_index
        self.stride = in_strides[indices[0]]
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.pixel_decoder = PixelDecoder([in_channels[i] for i in indices], conv_dim, mask_dim)
        self.predictor = TransformerPredictor(
            in_channels[transformer_in_index],
            num_classes,
            hidden_dim,
            num_queries,
            nheads,
            dim_feedforward,
            dec_layers,
            dropout,
            mask_dim,
            enforce_input_proj,
        )

    def forward(self, features: list[torch.Tensor], prev_output: HeadOutput | None = None) -> MaskClassification:
        mask_features = self.pixel_decoder([features[i] for i in self.in_index])
        class_logits, mask_embed = self.predictor(features[self.transformer_in_index])
        mask_logits = torch.einsum("lnqc,nchw->lnqhw", mask_embed, mask_features)
        aux = [{"class_logits": class_logits[i], "mask_logits": mask_logits[i]} for i in range(len(class_logits) - 1)]
        return MaskClassification(class_logits[-1], mask_logits[-1], aux)


def _check_sizes(args: dict, indices: list[int], num_maps: int, in_strides: Sequence[int]) -> None:
    """A :class:`ConfigError` naming the first bad argument of :class:`MaskFormerHead`."""
    for name in ("conv_dim", "mask_dim", "hidden_dim", "num_queries", "nheads", "dim_feedforward", "dec_layers"):
        value = args[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"head 'maskformer' {name} must be a positive integer, got {value!r}")
    if args["conv_dim"] % GROUPS:
        raise ConfigError(
            f"head 'maskformer' conv_dim must be a multiple of {GROUPS} (GroupNorm({GROUPS})), got {args['conv_dim']}"
        )
    if args["hidden_dim"] % args["nheads"] or args["hidden_dim"] % 2:
        raise ConfigError(
            f"head 'maskformer' hidden_dim {args['hidden_dim']} must be even and a multiple of nheads {args['nheads']}"
        )
    if not isinstance(args["dropout"], (int, float)) or not 0 <= args["dropout"] < 1:
        raise ConfigError(f"head 'maskformer' dropout must be in [0, 1), got {args['dropout']!r}")
    for name, picked in (("in_index", indices), ("transformer_in_index", [args["transformer_in_index"]])):
        for index in picked:
            if not isinstance(index, int) or not -num_maps <= index < num_maps:
                raise ConfigError(
                    f"head 'maskformer' {name} {index!r} is out of range: the backbone gives {num_maps} maps"
                )
    strides = [in_strides[i] for i in indices]
    if not indices or any(a >= b for a, b in zip(strides, strides[1:])):
        raise ConfigError(
            f"head 'maskformer' in_index {indices} must pick maps from fine to coarse (strides {strides})"
        )
