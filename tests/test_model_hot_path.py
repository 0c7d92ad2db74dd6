"""Per-step work done once: rotary cos/sin tables and the resized positional tables of the vision side are built
once and reused, with results identical to computing them afresh, and rebuilt when what they depend on changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from qwenvl_train.model import register, rotary, vision
from qwenvl_train.model.rotary import RotaryTables, rotary_cos_sin
from qwenvl_train.model.vision import ResizedTableCache, resize_pos_table

register()


def counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Count the calls of ``module.name`` (patched in place)."""
    calls: list[int] = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_rotary_tables_equal_a_fresh_computation_and_are_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch, rotary, "rotary_cos_sin")
    tables = RotaryTables(rotary_dim=32)
    device = torch.device("cpu")
    for start, length in [(0, 7), (0, 300), (5, 1), (129, 64), (2000, 48)]:
        cos, sin = tables.lookup(10000.0, start, length, device)
        want_cos, want_sin = rotary_cos_sin(start, length, 32, 10000.0)
        assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin), (start, length)
    assert len(calls) == 1  # one table (2048 rows) served every lookup
    positions = torch.tensor([[0, 1, 2, 0, 1], [3, 4, 5, 6, 7]])
    cos, _ = tables.lookup(10000.0, 0, 5, device, position_ids=positions)
    assert cos.shape == (2, 5, 32)
    assert torch.equal(cos[0, 3], rotary_cos_sin(0, 1, 32, 10000.0)[0][0])
    assert torch.equal(cos[1], rotary_cos_sin(3, 5, 32, 10000.0)[0])
    # A longer position grows the table; another base has its own.
    cos, _ = tables.lookup(10000.0, 5000, 3, device)
    assert torch.equal(cos, rotary_cos_sin(5000, 3, 32, 10000.0)[0])
    assert not torch.equal(tables.lookup(20000.0, 0, 4, device)[0], tables.lookup(10000.0, 0, 4, device)[0])


def test_model_steps_reuse_the_rotary_and_positional_tables(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.transformer.visual.requires_grad_(False)  # --freeze_vit, the default (LoRA freezes it too)
    nq = model.config.n_queries
    rotary_calls = counting(monkeypatch, rotary, "rotary_cos_sin")
    resize_calls = counting(monkeypatch, vision, "resize_pos_table")
    ids = torch.tensor([[872, 198, 151857] + [151859] * nq + [151858, 40, 1079, 5]])
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    model.train()
    losses = []
    for k in range(3):
        part = ids[:, : ids.shape[1] - k]
        losses.append(model(input_ids=part, pixel_values=pixels, labels=part).loss)
    assert all(torch.isfinite(loss) for loss in losses)
    assert len(rotary_calls) == 1  # three lengths, one table
    # The tiny tower's 4 x 4 grid also needs its 16 x 16 ViT table and 4 x 4 resampler table resized.
    assert len(resize_calls) == 2


def test_resized_table_cache_is_identical_and_follows_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting(monkeypatch, vision, "resize_pos_table")
    table = torch.nn.Parameter(
        torch.randn(256, 8, generator=torch.Generator().manual_seed(0)), requires_grad=False
    )
    cache = ResizedTableCache()
    first = cache(table, 1024)
    assert torch.equal(first, resize_pos_table(table, 1024))
    assert cache(table, 1024) is first
    assert len(calls) == 1  # the reference above calls the unpatched function
    with torch.no_grad():
        table.mul_(2)  # an in-place write (a load, an optimizer step) bumps the version counter
    assert torch.equal(cache(table, 1024), resize_pos_table(table, 1024))
    assert torch.equal(cache(table.to(torch.float64), 1024), resize_pos_table(table.to(torch.float64), 1024))
    assert torch.equal(cache(table, 64), resize_pos_table(table, 64))


def test_a_trainable_table_is_resized_every_step_and_gets_gradients() -> None:
    table = torch.nn.Parameter(torch.randn(256, 8, generator=torch.Generator().manual_seed(0)))
    cache = ResizedTableCache()
    a, b = cache(table, 1024), cache(table, 1024)
    assert a is not b and a.requires_grad
    (a.sum() + b.sum()).backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
