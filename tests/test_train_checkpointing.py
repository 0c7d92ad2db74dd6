"""``--activation_checkpointing`` full / every k-th block / off: which blocks are checkpointed, and that the loss
and gradients equal the run without checkpointing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from qwenvl_train.model import register
from qwenvl_train.tiny import make_tiny
from qwenvl_train.training import train
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.summary import settings_line
from train_fixtures import cpu_args, write_dataset

IMG, IMG_END, IMG_PAD = 151857, 151858, 151859
register()


@pytest.mark.parametrize(
    ("given", "every", "shown"),
    [
        ([], 0, "off"),
        (["--activation_checkpointing"], 1, "full"),
        (["--activation_checkpointing", "full"], 1, "full"),
        (["--activation_checkpointing", "true"], 1, "full"),
        (["--activation_checkpointing", "false"], 0, "off"),
        (["--activation_checkpointing", "off"], 0, "off"),
        (["--activation_checkpointing", "3"], 3, "3"),
    ],
)
def test_activation_checkpointing_values(tmp_path: Path, given: list[str], every: int, shown: str) -> None:
    args = parse_args([*given, "--output_dir", str(tmp_path)])
    t = args.training
    assert t.activation_checkpointing is (every > 0)  # what the Trainer reads to switch it on
    assert t.checkpointing_every == every
    assert (t.activation_checkpointing_kwargs or {}).get("every_n_layers", 1) == max(every, 1)
    assert f"activation_checkpointing={shown}" in settings_line(args)


@pytest.mark.parametrize(
    "given",
    [
        ["--activation_checkpointing", "often"],
        ["--activation_checkpointing", "2", "--activation_checkpointing_kwargs", '{"every_n_layers": 3}'],
    ],
)
def test_bad_activation_checkpointing_is_one_clear_error(
    tmp_path: Path, given: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args([*given, "--output_dir", str(tmp_path)])
    assert "--activation_checkpointing" in capsys.readouterr().err


@pytest.fixture(scope="module")
def three_layer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with 3 decoder blocks and 3 vision blocks."""
    return make_tiny(
        tmp_path_factory.mktemp("tiny3") / "model", seed=0, num_hidden_layers=3, visual={"layers": 3}
    )


def run_step(model_dir: Path, every: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """One forward/backward; returns the loss, the gradients and the names of the blocks that checkpointed."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    nq = model.config.n_queries
    ids = torch.tensor([[872, 198, IMG] + [IMG_PAD] * nq + [IMG_END, 40, 1079, 5, 6, 7]])
    pixels = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    called: list[str] = []
    if every:
        model.activation_checkpointing_enable(every_n_layers=every)
        for name, module in model.named_modules():
            if hasattr(module, "_gradient_checkpointing_func") and module is not model:

                def counted(*args, _inner=module._gradient_checkpointing_func, _name=name, **kwargs):
                    called.append(_name)
                    return _inner(*args, **kwargs)

                module._gradient_checkpointing_func = counted
    model.train()
    loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, called


@pytest.mark.parametrize(
    ("every", "blocks"),
    [
        (1, ["0", "1", "2"]),
        (2, ["0", "2"]),
        (3, ["0"]),
    ],
)
def test_every_kth_block_is_checkpointed_with_the_same_loss_and_gradients(
    three_layer_dir: Path, every: int, blocks: list[str]
) -> None:
    loss_ref, grads_ref, none = run_step(three_layer_dir, 0)
    loss, grads, called = run_step(three_layer_dir, every)
    assert none == []
    vision = [f"transformer.visual.transformer.resblocks.{i}" for i in blocks]
    assert sorted(called) == sorted([f"transformer.h.{i}" for i in blocks] + vision)
    torch.testing.assert_close(loss, loss_ref, rtol=0, atol=0)
    assert set(grads) == set(grads_ref) and "transformer.visual.conv1.weight" in grads
    for name, grad in grads_ref.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_training_with_every_second_block_checkpointed(three_layer_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_samples=4)
    options = ["--tune", "lora", "--lora_target", "c_attn", "w1", "--max_steps", "1", "--warmup_steps", "0",
               "--learning_rate", "1e-2", "--activation_checkpointing", "2"]  # fmt: skip
    trainer = train(cpu_args(three_layer_dir, data, tmp_path / "out", *options))
    base = trainer.model.get_base_model()
    flags = [block.gradient_checkpointing for block in base.transformer.h]
    assert flags == [True, False, True]
    assert [b.gradient_checkpointing for b in base.transformer.visual.transformer.resblocks] == flags
    lora_b = [p for n, p in trainer.model.named_parameters() if ".lora_B." in n]
    assert lora_b and all(p.detach().abs().sum() > 0 for p in lora_b)
