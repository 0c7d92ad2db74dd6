"""Vision side of Qwen-VL: a ViT-bigG-style tower followed by a one-layer cross-attention resampler.

Parameter names follow the original checkpoints (``transformer.visual.*``): ``conv1``, ``positional_embedding``,
``ln_pre``, ``transformer.resblocks.N.{ln_1,attn.in_proj,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}``,
``attn_pool.{query,pos_embed,kv_proj,ln_q,ln_kv,attn.in_proj_weight,attn.in_proj_bias,attn.out_proj}``,
``ln_post`` and ``proj``.

Numerics follow the original ``visual.py``: positional tables are resized bicubically in fp32, every LayerNorm
uses eps 1e-6, GELU is the exact (erf) one, the tower runs in the dtype of its weights. Attention goes through
``torch.nn.functional.scaled_dot_product_attention`` unless the config asks for ``"eager"``, in which case the
original operation order (scale the query, matmul, softmax in the working dtype) is reproduced.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .configuration import QwenVLConfig

VISION_LN_EPS = 1e-6
#: Rows of the stored vision positional table (a 16 x 16 grid), whatever the image size.
VISION_POS_ROWS = 256


def resize_pos_table(table: torch.Tensor, n_positions: int) -> torch.Tensor:
    """Bicubically resize a square positional table ``[S*S, C]`` to ``[T*T, C]`` with ``T*T = n_positions``.

    Done in fp32 with ``align_corners=False`` and cast back to the table's dtype; a no-op when sizes match.
    """
    src = math.isqrt(table.shape[0])
    tgt = math.isqrt(n_positions)
    if src == tgt:
        return table
    grid = table.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


class ResizedTableCache:
    """The resized copy of a frozen positional table, kept while the table is unchanged.

    A step used to re-interpolate the ViT's 16 x 16 table to the patch grid (32 x 32 at 448 px) and the
    resampler's ``pos_embed`` likewise; both are frozen in most runs, so the result is reused. It is recomputed
    whenever the size, dtype, device, storage or version counter (bumped by every in-place write, e.g. a load or
    an optimizer step) changes; a table that requires grad is never cached, so gradients flow as before.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    def __call__(self, table: torch.Tensor, n_positions: int) -> torch.Tensor:
        if table.requires_grad or hasattr(table, "_local_tensor"):  # trainable, or a sharded DTensor
            return resize_pos_table(table, n_positions)
        key = (n_positions, table.dtype, table.device, table.data_ptr(), table._version)
        if key != self._key or self._value is None:
            self._value = resize_pos_table(table, n_positions)
            self._key = key
        return self._value


def sincos_pos_table(embed_dim: int, grid_size: int) -> torch.Tensor:
    """The 2D sin-cos table ``[grid_size**2, embed_dim]`` (MAE layout) that initialises ``attn_pool.pos_embed``.

    Row ``h * grid_size + w``; the first half of the channels encodes the column ``w``, the second half the row
    ``h``; each half is ``[sin(pos * omega), cos(pos * omega)]`` with ``omega = 10000 ** -(i / (D / 4))``.
    Computed in float32 with numpy, as the original does, so a fresh table is bit-identical to the stored one.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for a 2D sin-cos table, got {embed_dim}")
    coords = np.arange(grid_size, dtype=np.float32)
    cols, rows = np.meshgrid(coords, coords)  # cols[h, w] = w, rows[h, w] = h

    def one_axis(pos: np.ndarray) -> np.ndarray:
        half = embed_dim // 2
        omega = np.arange(half // 2, dtype=np.float32)
        omega /= half / 2.0
        omega = 1.0 / 10000**omega
        angles = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    table = np.concatenate([one_axis(cols), one_axis(rows)], axis=1)
    return torch.from_numpy(table).float()


def _use_eager(config: QwenVLConfig) -> bool:
    return config._attn_implementation == "eager"


class VisionAttention(nn.Module):
    """Self-attention whose fused ``in_proj`` output is laid out per head as ``[heads, 3 * head_dim]``."""

    def __init__(self, config: QwenVLConfig, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"vision width {width} is not divisible by {heads} heads")
        self.config = config
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, self.heads, 3 * self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.head_dim, dim=-1))
        if _use_eager(self.config):
            scores = torch.matmul(q / math.sqrt(self.head_dim), k.transpose(-1, -2))
            out = torch.matmul(scores.softmax(dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class VisionMLP(nn.Module):
    def __init__(self, width: int, mlp_width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, mlp_width)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(mlp_width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class VisionBlock(GradientCheckpointingLayer):
    """Pre-norm residual block: ``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    def __init__(self, config: QwenVLConfig, width: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=VISION_LN_EPS)
        self.attn = VisionAttention(config, width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=VISION_LN_EPS)
        self.mlp = VisionMLP(width, mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionEncoder(nn.Module):
    """Holds ``resblocks`` so that the parameter names read ``transformer.resblocks.N``."""

    def __init__(self, config: QwenVLConfig, width: int, layers: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList([VisionBlock(config, width, heads, mlp_width) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class ResamplerAttention(nn.Module):
    """Multi-head cross-attention with the parameter layout of ``nn.MultiheadAttention``.

    ``in_proj_weight`` stacks the query, key and value projections as ``[Q; K; V]``; ``out_proj`` is a Linear
    called as a module (so ZeRO-3 gathers it and LoRA can wrap it). Inputs are batch-first.
    """

    def __init__(self, config: QwenVLConfig, embed_dim: int, heads: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        self.heads = heads
        self.head_dim = embed_dim // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

        q, k, v = (
            heads(F.linear(query, w_q, b_q)),
            heads(F.linear(key, w_k, b_k)),
            heads(F.linear(value, w_v, b_v)),
        )
        if _use_eager(self.config):
            # nn.MultiheadAttention's own order: scale q by sqrt(1 / head_dim), bmm, softmax, bmm.
            scores = torch.matmul(q * math.sqrt(1.0 / self.head_dim), k.transpose(-1, -2))
            out = torch.matmul(scores.softmax(dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        return self.out_proj(out)


class Resampler(nn.Module):
    """Compress the patch sequence to ``n_queries`` vectors with learned queries and 2D sin-cos positions.

    queries = ``ln_q(query) + pos_embed``; keys = ``ln_kv(kv_proj(x)) + pos_embed`` resized to the patch grid;
    values = ``ln_kv(kv_proj(x))``.
    """

    def __init__(self, config: QwenVLConfig, n_queries: int, embed_dim: int, kv_dim: int) -> None:
        super().__init__()
        self.n_queries = n_queries
        self.grid_size = math.isqrt(n_queries)
        self.embed_dim = embed_dim
        # A parameter (frozen by default), as in the original, so it is stored in and loaded from checkpoints.
        self.pos_embed = nn.Parameter(torch.empty(n_queries, embed_dim), requires_grad=False)
        self.query = nn.Parameter(torch.empty(n_queries, embed_dim))
        # The original skips the projection when the widths already agree (never for released checkpoints).
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = ResamplerAttention(config, embed_dim, embed_dim // 128)
        self.ln_q = nn.LayerNorm(embed_dim, eps=VISION_LN_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=VISION_LN_EPS)
        self._key_pos = ResizedTableCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key_pos = self._key_pos(self.pos_embed, x.shape[1])
        x = self.ln_kv(self.kv_proj(x))
        queries = (self.ln_q(self.query) + self.pos_embed).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.attn(queries, x + key_pos, x)


class VisionTransformer(nn.Module):
    """Image tower: pixels ``[N, 3, H, W]`` -> ``[N, n_queries, output_dim]`` language-model embeddings."""

    def __init__(self, config: QwenVLConfig) -> None:
        super().__init__()
        visual = config.visual
        width = int(visual["width"])
        output_dim = int(visual["output_dim"])
        patch_size = int(visual["patch_size"])
        self.image_size = int(visual["image_size"])
        self.grid_size = self.image_size // patch_size
        self.output_dim = output_dim

        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.empty(VISION_POS_ROWS, width))
        self.ln_pre = nn.LayerNorm(width, eps=VISION_LN_EPS)
        self.transformer = VisionEncoder(
            config,
            width=width,
            layers=int(visual["layers"]),
            heads=int(visual["heads"]),
            mlp_width=int(width * float(visual["mlp_ratio"])),
        )
        self.attn_pool = Resampler(config, int(visual["n_queries"]), output_dim, width)
        self.ln_post = nn.LayerNorm(output_dim, eps=VISION_LN_EPS)
        self.proj = nn.Parameter(torch.empty(output_dim, output_dim))
        self._positions = ResizedTableCache()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        weight = self.conv1.weight
        x = self.conv1(pixel_values.to(device=weight.device, dtype=weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # [N, grid*grid, width]
        x = x + self._positions(self.positional_embedding, x.shape[1])
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(self.attn_pool(x))
        return x @ self.proj
