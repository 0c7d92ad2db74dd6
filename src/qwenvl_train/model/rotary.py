"""Rotary position embedding of Qwen-VL and its inference-only length extrapolation (dynamic NTK, logn scaling).

The cos/sin tables are computed once per RoPE base and device (:class:`RotaryTables`) and sliced per step:
row ``p`` of the table is exactly what a fresh computation for position ``p`` gives.
"""

from __future__ import annotations

import math

import torch

#: Rows a fresh table starts with; it grows by doubling when a longer position is asked for.
MIN_TABLE_ROWS = 2048
#: Different bases kept at once (dynamic NTK at inference picks one per prefill length band).
MAX_TABLES = 8


def ntk_alpha(prefill_length: int, seq_length: int) -> float:
    """Dynamic-NTK alpha of the original: ``max(2 ** ceil(log2(L / seq_length) + 1) - 1, 1)``.

    It is 1 (no change) for every ``L <= seq_length``.
    """
    context_value = math.log(prefill_length / seq_length, 2) + 1
    return float(max(2 ** math.ceil(context_value) - 1, 1))


def ntk_base(base: float, alpha: float, rotary_dim: int) -> float:
    """RoPE base after NTK scaling: ``base * alpha ** (rotary_dim / (rotary_dim - 2))``."""
    return base * alpha ** (rotary_dim / (rotary_dim - 2))


def logn_scale(start: int, length: int, seq_length: int, device: torch.device | None = None) -> torch.Tensor:
    """Query scale of the positions ``start .. start + length - 1``: ``log(p + 1) / log(seq_length)`` once
    ``p + 1 > seq_length``, else 1. Returned as float32 ``[length]``."""
    counts = torch.arange(start + 1, start + length + 1, dtype=torch.float64, device=device)
    scale = torch.where(counts > seq_length, counts.log() / math.log(seq_length), torch.ones_like(counts))
    return scale.float()


def rotary_cos_sin(
    start: int, length: int, rotary_dim: int, base: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``cos``/``sin`` tables ``[length, rotary_dim]`` for positions ``start .. start + length - 1``."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, device=device).float() / rotary_dim))
    positions = torch.arange(start, start + length, device=device).float()
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of ``t`` ``[B, L, H, D]`` in fp32; cast back to ``t``'s dtype.

    ``cos``/``sin`` are ``[L, rotary_dim]`` (the same positions for every row) or ``[B, L, rotary_dim]``
    (positions per row, e.g. packed samples).
    """
    rot_dim = cos.shape[-1]
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rotated, passed = t[..., :rot_dim].float(), t[..., rot_dim:].float()
    rotated = rotated * cos + _rotate_half(rotated) * sin
    return torch.cat((rotated, passed), dim=-1).type_as(t)


class RotaryTables:
    """fp32 cos/sin tables for positions ``0 .. n - 1``, one per (RoPE base, device), reused across steps.

    A training step used to rebuild the tables for its length; here they are built once (grown by doubling
    when a longer position comes) and sliced, which gives the same values as :func:`rotary_cos_sin`.
    """

    def __init__(self, rotary_dim: int) -> None:
        self.rotary_dim = rotary_dim
        self._tables: dict[tuple[float, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def table(self, base: float, rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cached) tables for the positions ``0 .. >= rows - 1``."""
        key = (base, str(device))
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < rows:
            have = 0 if cached is None else cached[0].shape[0]
            size = max(rows, 2 * have, MIN_TABLE_ROWS)
            if cached is None and len(self._tables) >= MAX_TABLES:
                self._tables.clear()
            cached = rotary_cos_sin(0, size, self.rotary_dim, base, device=device)
            self._tables[key] = cached
        return cached

    def lookup(
        self,
        base: float,
        start: int,
        length: int,
        device: torch.device,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[length, rotary_dim]`` for positions ``start .. start + length - 1``, or ``[B, L, rotary_dim]`` for the
        given ``position_ids`` ``[B, L]``."""
        if position_ids is None:
            cos, sin = self.table(base, start + length, device)
            return cos[start : start + length], sin[start : start + length]
        position_ids = position_ids.to(device)
        cos, sin = self.table(base, int(position_ids.max()) + 1, device)
        return cos[position_ids], sin[position_ids]
