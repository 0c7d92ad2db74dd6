"""Helpers shared by tests/test_export_*.py: adapters written by short ``train()`` runs, a sample batch, and the
check that a merged folder computes what base + adapter compute."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from qwenvl_train.data import ConversationDataset, DataCollator
from qwenvl_train.training import train
from train_fixtures import cpu_args


def train_adapter(model_dir: Path, data: Path, out: Path, tune: str = "lora", *extra: str) -> Path:
    """A LoRA / Q-LoRA adapter as training writes it: two steps at a high learning rate, so every lora_B is
    non-zero (checked)."""
    train(
        cpu_args(model_dir, data, out, "--tune", tune, "--max_steps", "2", "--learning_rate", "2e-2", *extra)
    )
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in adapter.items() if ".lora_B." in name)
    return out


def sample_batch(model_dir: Path, data: Path) -> dict[str, torch.Tensor]:
    """An image conversation and the text-only one, padded into one batch as training does."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = ConversationDataset.from_model(data, tokenizer, model_dir)
    return DataCollator()([dataset[0], dataset[len(dataset) - 1]])


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits.float()


def assert_merge_exact(
    merged_dir: Path, base_dir: Path, adapter: Path, batch: dict[str, torch.Tensor]
) -> None:
    """The merged folder loads with no missing/unexpected key and gives the logits of the fp32 base with the
    adapter applied unmerged by peft (max-abs-diff < 1e-4), which differ from the base's own."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base_logits = logits(base, batch)
    expected = logits(PeftModel.from_pretrained(base, adapter), batch)
    merged, info = AutoModelForCausalLM.from_pretrained(
        merged_dir, dtype=torch.float32, output_loading_info=True
    )
    assert info == {
        "missing_keys": set(),
        "unexpected_keys": set(),
        "mismatched_keys": set(),
        "error_msgs": [],
    }
    diff = (logits(merged, batch) - expected).abs().max().item()
    assert diff < 1e-4, diff
    assert (expected - base_logits).abs().max().item() > 1e-3  # the adapter does change the output
