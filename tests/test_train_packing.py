"""Padding-free packing: the packed row (ids, labels, positions, image order), the micro-batch plan, per-sample
losses equal to the unpacked run's, and a tiny training run with --packing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from qwenvl_train.data import DataCollator
from qwenvl_train.data.collator import PackingCollator
from qwenvl_train.model import register
from qwenvl_train.training import train
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.sampler import PackedBatchSampler, pack_best_fit
from qwenvl_train.training.summary import settings_line
from train_fixtures import cpu_args, logged_losses, snapshot, write_dataset

IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859
register()


def feature(ids: list[int], labels: list[int], pixels: torch.Tensor | None = None) -> dict:
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": pixels, "id": "x"}


def test_packed_row_ids_labels_positions_and_image_order() -> None:
    span = [IMG_START, IMG_PAD, IMG_END]
    images = [torch.full((1, 3, 2, 2), float(v)) for v in (1, 2, 3)]
    features = [
        feature([5, *span, 6], [-100, -100, -100, -100, 6], images[0]),
        feature([7, 8, 9], [7, 8, 9]),  # a labelled first token: not a target of the previous sample
        feature([*span, 10, *span], [-100] * 3 + [10] + [-100] * 3, torch.cat(images[1:])),
    ]
    batch = PackingCollator()(features)
    assert set(batch) == {"input_ids", "labels", "position_ids", "pixel_values"}
    assert batch["input_ids"].tolist() == [[5, *span, 6, 7, 8, 9, *span, 10, *span]]
    assert batch["labels"].tolist() == [
        [-100, -100, -100, -100, 6, -100, 8, 9] + [-100] * 3 + [10] + [-100] * 3
    ]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6]]
    assert torch.equal(batch["pixel_values"], torch.cat(images))
    assert torch.equal(
        batch["pixel_values"], DataCollator()(features)["pixel_values"]
    )  # same order as unpacked
    with pytest.raises(ValueError, match="1 <img> spans but 0 images"):
        PackingCollator()([feature([*span], [-100] * 3)])


def test_pack_plan_respects_the_budget_and_uses_every_sample_once() -> None:
    lengths = [5, 3, 9, 2, 12, 4, 4, 1]
    # Longest first into the tightest room: 4 micro-batches of 12 (alone: over budget), 10, 9, 9 tokens, where
    # cutting the order as it comes makes 5 ([0, 1], [2], [3], [4], [5, 6, 7]).
    assert pack_best_fit(range(8), lengths, 10) == [[4], [2, 7], [0, 5], [1, 3, 6]]
    # Windows of 4: the second window's 1-token sample still fills the first window's 1-token room.
    assert pack_best_fit(range(8), lengths, 10, window=4) == [[2, 7], [0, 1, 3], [4], [5, 6]]
    sampler = PackedBatchSampler(lengths, budget=10, seed=3)
    epoch0 = list(sampler)
    assert len(sampler) == len(epoch0)
    assert sorted(i for pack in epoch0 for i in pack) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in pack) <= 10 or len(pack) == 1 for pack in epoch0)
    assert list(PackedBatchSampler(lengths, budget=10, seed=3)) == epoch0  # seed + epoch fix the plan
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(i for p in epoch1 for i in p) == list(range(len(lengths)))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_per_sample_losses_of_a_packed_batch_equal_the_unpacked_run(tiny_model_dir: Path, impl: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=impl).train()
    nq = model.config.n_queries
    g = torch.Generator().manual_seed(0)
    span = [IMG_START] + [IMG_PAD] * nq + [IMG_END]
    ids = [
        [872, 198, *span, 40, 1079, 5, 6, 7],
        [872, 11, 12, 13, 14, 15, 16],
        [*span, 21, 22, 23, 24, *span, 25, 26],
    ]
    features = []
    for sample in ids:
        labels = [
            t if t not in (IMG_START, IMG_PAD, IMG_END) and k > 1 else -100 for k, t in enumerate(sample)
        ]
        n_images = sample.count(IMG_START)
        pixels = torch.randn(n_images, 3, 56, 56, generator=g) if n_images else None
        features.append(feature(sample, labels, pixels))
    packed = PackingCollator()(features)
    starts = [0, len(ids[0]), len(ids[0]) + len(ids[1]), sum(map(len, ids))]
    for k in range(len(ids)):
        # Sample k alone (padded batch of one) against sample k's labels inside the packed row.
        alone = DataCollator()([features[k]])
        loss_alone = model(**alone).loss
        only_k = torch.full_like(packed["labels"], -100)
        only_k[:, starts[k] : starts[k + 1]] = packed["labels"][:, starts[k] : starts[k + 1]]
        loss_packed = model(**{**packed, "labels": only_k}).loss
        torch.testing.assert_close(loss_packed, loss_alone, rtol=1e-5, atol=0, msg=f"sample {k}")
    # The whole micro-batch: the sum over samples, as the Trainer divides it by num_items_in_batch.
    unpacked = DataCollator()(features)
    n_items = int((unpacked["labels"][:, 1:] != -100).sum())
    assert n_items == int((packed["labels"][:, 1:] != -100).sum())
    torch.testing.assert_close(
        model(**packed, num_items_in_batch=n_items).loss,
        model(**unpacked, num_items_in_batch=n_items).loss,
        rtol=1e-5,
        atol=0,
    )


def test_packing_options(tmp_path: Path) -> None:
    args = parse_args(["--output_dir", str(tmp_path), "--packing", "--model_max_length", "100"])
    assert args.training.packing and args.training.packing_tokens == 8 * 100  # batch size 8 x max length
    assert "packing=800" in settings_line(args)
    given = parse_args(["--output_dir", str(tmp_path), "--packing", "--packing_tokens", "300"])
    assert given.training.packing_tokens == 300
    assert not parse_args(["--output_dir", str(tmp_path)]).training.packing
    assert "packing" not in settings_line(parse_args(["--output_dir", str(tmp_path)]))


def test_a_tiny_run_with_packing_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Full tuning with packed micro-batches (and every second block checkpointed, which must pass the positions
    through): finite losses, every sample once per epoch without padding, the language model changed."""
    data = write_dataset(tmp_path / "data", n_samples=6, n_text=2)
    before = snapshot(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    options = ["--tune", "full", "--max_steps", "4", "--warmup_steps", "0", "--learning_rate", "1e-3",
               "--packing", "--packing_tokens", "90", "--activation_checkpointing", "2"]  # fmt: skip
    trainer = train(cpu_args(tiny_model_dir, data, tmp_path / "out", *options))
    assert [block.gradient_checkpointing for block in trainer.model.transformer.h] == [True, False]
    losses = logged_losses(trainer)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    batches = list(trainer.get_train_dataloader())
    lengths = trainer.train_dataset.lengths.tolist()
    assert sum(b["input_ids"].shape[1] for b in batches) == sum(lengths)  # no padding, every sample once
    for b in batches:
        assert b["input_ids"].shape[0] == 1 and "attention_mask" not in b
        assert b["input_ids"].shape[1] <= 90 or (b["position_ids"] == 0).sum() == 1
        assert int((b["input_ids"] == IMG_START).sum()) == b.get("pixel_values", torch.empty(0)).shape[0]
    assert any((b["position_ids"] == 0).sum() > 1 for b in batches)  # some micro-batch holds several samples
    after = trainer.model.state_dict()
    changed = [n for n, p in before.items() if n in after and not torch.equal(after[n].float(), p.float())]
    assert any(n.startswith("transformer.h.") for n in changed)


def test_resume_with_packing_continues_with_the_same_micro_batches(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Resumed after step 5, steps 6..10 (crossing into the second epoch) have the uninterrupted run's losses:
    the packing plan depends only on the seed and the epoch."""
    data = write_dataset(tmp_path / "data", n_samples=8, n_text=3)
    out = tmp_path / "out"
    options = ["--tune", "full", "--max_steps", "10", "--warmup_steps", "0", "--learning_rate", "1e-3",
               "--packing", "--packing_tokens", "90", "--save_strategy", "steps", "--save_steps", "5"]  # fmt: skip
    whole = train(cpu_args(tiny_model_dir, data, out, *options))
    per_epoch = len(whole.get_train_dataloader())
    assert 5 < per_epoch < 10  # the resumed part crosses an epoch boundary
    expected = {e["step"]: e["loss"] for e in whole.state.log_history if "loss" in e}
    shutil.rmtree(out / "checkpoint-10")
    resumed = train(cpu_args(tiny_model_dir, data, out, *options, "--resume_from_checkpoint", "auto"))
    got = {e["step"]: e["loss"] for e in resumed.state.log_history if "loss" in e}
    assert set(got) == set(range(1, 11))
    for step in range(6, 11):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
