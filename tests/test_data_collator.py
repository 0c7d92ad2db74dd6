"""Collator: right padding, attention mask, image order; a mixed batch through the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from qwenvl_train.data import ConversationDataset, DataCollator
from qwenvl_train.tokenizer import QwenVLTokenizer

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.json"
IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859


def feature(ids, labels, images=None):
    pixels = None if images is None else torch.stack([torch.full((3, 2, 2), float(v)) for v in images])
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "pixel_values": pixels, "id": "x"}


def test_right_padding_labels_and_attention_mask():
    batch = DataCollator()(
        [feature([1, 2, 3], [-100, 2, 3]), feature([4, 5, 6, 7, 8], [-100, -100, 6, 7, 8])]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3, 151643, 151643], [4, 5, 6, 7, 8]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, -100], [-100, -100, 6, 7, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert "pixel_values" not in batch and "id" not in batch
    assert all(t.dtype == torch.long for t in batch.values())


def test_pad_to_multiple_of():
    batch = DataCollator(pad_to_multiple_of=8)([feature([1, 2, 3], [1, 2, 3])])
    assert batch["input_ids"].shape == (1, 8) and batch["attention_mask"].sum() == 3


def test_images_stacked_in_span_order():
    span = [IMG_START, IMG_PAD, IMG_END]
    features = [
        feature([1] + span + span, [-100] * 7, images=[1, 2]),
        feature([2, 3], [2, 3]),
        feature(span + [5], [-100] * 4, images=[3]),
    ]
    batch = DataCollator()(features)
    assert batch["pixel_values"].shape == (3, 3, 2, 2)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]


def test_span_and_image_counts_must_agree():
    with pytest.raises(ValueError, match="1 <img> spans but 0 images"):
        DataCollator()([feature([IMG_START, IMG_PAD, IMG_END], [-100] * 3)])


def test_dataloader_with_workers_loads_images(vocab_file):
    tok = QwenVLTokenizer(vocab_file=str(vocab_file))
    ds = ConversationDataset.from_files(DEMO, tok, n_queries=16, image_size=56)
    loader = DataLoader(ds, batch_size=4, collate_fn=DataCollator(), num_workers=2)
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(ds)
    n_images = sum(b["pixel_values"].shape[0] for b in batches if "pixel_values" in b)
    assert n_images == ds.summary.images == sum((b["input_ids"] == IMG_START).sum() for b in batches)
    for k, b in enumerate(batches):
        assert b["input_ids"].shape[1] == max(ds.lengths[4 * k : 4 * k + 4])
        assert ((b["input_ids"] == 151643) == (b["attention_mask"] == 0)).all()


def test_mixed_batch_through_the_tiny_model(vocab_file, tiny_model_dir):
    model_module = pytest.importorskip("qwenvl_train.model")
    tok = QwenVLTokenizer(vocab_file=str(vocab_file))
    ds = ConversationDataset.from_model(DEMO, tok, tiny_model_dir)
    by_id = {item.id: i for i, item in enumerate(ds.items)}
    picks = ["text_only", "two_images_one_turn"]  # kept small: the 151,936-row lm_head dominates on CPU
    batch = DataCollator()([ds[by_id[name]] for name in picks])
    assert batch["pixel_values"].shape == (2, 3, 56, 56)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # row 0 is padded
    model = model_module.QwenVLForCausalLM.from_pretrained(tiny_model_dir)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grad = model.transformer.visual.conv1.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the images really reached the model
