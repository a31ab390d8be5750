"""The ``maskformer-swin`` backbone: the Swin Transformer as MaskFormer's segmentation models use it.

It differs from timm's classification Swin (and the zoo-swin-ocr ``swin`` backbone built on
it) in what MaskFormer checkpoints need, for any input size:

- all four stages (strides 4, 8, 16, 32), each through its own output LayerNorm (``norm0`` ..
  ``norm3``);
- the image is zero-padded at the bottom/right to a multiple of the patch size; in every
  block the (normalised) map is zero-padded to a multiple of the window size, the shifted
  windows' attention mask is computed on that padded size, and the window is never shrunk
  to the map; patch merging zero-pads an odd height or width.

Parameter names follow the MaskFormer checkpoints' backbone (``patch_embed``,
``layers.{i}.blocks.{j}`` with ``norm1``, ``attn.qkv``, ``attn.proj``,
``attn.relative_position_bias_table``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``;
``layers.{i}.downsample.{norm,reduction}``; ``norm{i}``), so they convert by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo_core.errors import ConfigError

MASK_VALUE = -100.0
"""Added to the attention logits between tokens from different regions of a shifted window."""


class DropPath(nn.Module):
    """Stochastic depth: in training, drops a sample's residual branch with probability ``p`` (rescaling the rest)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def relative_position_index(window: int) -> torch.Tensor:
    """``(window**2, window**2)``: the row of the bias table for each (query, key) pair of a window."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack((ys.flatten(), xs.flatten()))  # (2, N)
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), in [0, 2 * window - 2]
    return delta[0] * (2 * window - 1) + delta[1]


def partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` (H, W multiples of ``window``) -> ``(B * windows, window**2, C)``, row-major windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def unpartition(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`partition`."""
    x = windows.view(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """``(windows, window**2, window**2)``: 0 within a region, :data:`MASK_VALUE` across regions.

    After the cyclic shift by ``shift``, a window at the bottom/right edge of the (padded)
    ``height x width`` map holds tokens from up to three bands per axis that were not
    neighbours: ``[0, size - window)``, ``[size - window, size - shift)``, ``[size - shift, size)``.
    """

    def bands(size: int) -> torch.Tensor:
        idx = torch.arange(size, device=device)
        return (idx >= size - window).long() + (idx >= size - shift).long()

    regions = (bands(height)[:, None] * 3 + bands(width)[None, :]).view(1, height, width, 1)
    ids = partition(regions, window).squeeze(-1)  # (windows, N)
    return (ids[:, None, :] != ids[:, :, None]).float() * MASK_VALUE


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window, with a learnt relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor, batch: int, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (batch * windows, N, C)``; ``mask (windows, N, N)`` or ``None``."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_mask = bias.unsqueeze(0).expand(bw, -1, -1, -1)
        else:
            windows = mask.shape[0]
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).unsqueeze(0).expand(batch, -1, -1, -1, -1)
            attn_mask = attn_mask.reshape(batch * windows, self.num_heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention then MLP, each pre-normed with a residual; ``x`` is ``(B, H, W, C)``."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        y = F.pad(self.norm1(x), (0, 0, 0, -w % ws, 0, -h % ws))  # padded after the norm: zeros
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = unpartition(self.attn(partition(y, ws), b, mask if self.shift else None), ws, b, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhoods concatenated (odd sizes zero-padded), LayerNorm, linear ``4C -> 2C``."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # channel order: (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        last: bool,
    ):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift, mlp_ratio, drop_path[i])
            for i in range(depth)
        )
        self.downsample = None if last else PatchMerging(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        ws = self.window
        mask = shifted_window_mask(h + (-h % ws), w + (-w % ws), ws, self.shift, x.device)
        for block in self.blocks:
            x = block(x, mask)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = images.shape[2:]
        x = self.proj(F.pad(images, (0, -w % p, 0, -h % p)))
        return self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)


def _positive_ints(name: str, value: object, length: int | None = None) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if (length is not None and len(values) != length) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
    ):
        count = f"{length} " if length else ""
        raise ConfigError(f"backbone 'maskformer-swin' {name} must be {count}positive integers, got {value!r}")
    return values


class MaskFormerSwin(nn.Module):
    """Swin Transformer with MaskFormer's padding and per-stage output norms (see the module doc).

    Defaults are Swin-T's; the MaskFormer Swin-L config is ``embed_dim=192, depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48), window_size=12``. ``channels`` are ``embed_dim * 2**i``,
    ``strides`` 4, 8, 16, 32 (with ``patch_size`` 4).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.3,
        patch_size: int = 4,
    ):
        super().__init__()
        (embed_dim,) = _positive_ints("embed_dim", embed_dim, 1)
        depths = _positive_ints("depths", depths)
        num_heads = _positive_ints("num_heads", num_heads, len(depths))
        (window_size,) = _positive_ints("window_size", window_size, 1)
        (patch_size,) = _positive_ints("patch_size", patch_size, 1)
        if not isinstance(drop_path_rate, (int, float)) or not 0 <= drop_path_rate < 1:
            raise ConfigError(f"backbone 'maskformer-swin' drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
            raise ConfigError(f"backbone 'maskformer-swin' mlp_ratio must be positive, got {mlp_ratio!r}")
        dims = [embed_dim * 2**i for i in range(len(depths))]
        for dim, heads in zip(dims, num_heads):
            if dim % heads:
                raise ConfigError(
                    f"backbone 'maskformer-swin' num_heads {list(num_heads)}: {heads} heads do not divide "
                    f"the stage's {dim} channels; use a divisor of embed_dim * 2**stage"
                )
        self.channels = dims
        self.strides = [patch_size * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        total = sum(depths)  # stochastic depth grows linearly over the blocks (plain Python: meta-device safe)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            SwinStage(
                dims[i], d, num_heads[i], window_size, mlp_ratio, rates[starts[i] : starts[i] + d], i == len(depths) - 1
            )
            for i, d in enumerate(depths)
        )
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        maps = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            maps.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x)
        return maps
