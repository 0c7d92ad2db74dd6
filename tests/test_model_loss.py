"""The loss on labelled positions only (``model/loss.py``): equal to transformers' ``ForCausalLMLoss`` over the full
logits, in value and gradients, without ever building a ``[tokens, vocab]`` tensor beyond one chunk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.loss.loss_utils import ForCausalLMLoss

from qwenvl_train.model.loss import labelled_cross_entropy, plain_linear, shift_targets

VOCAB, HIDDEN = 997, 24


def make_batch(seed: int = 0, dtype: torch.dtype = torch.float32):
    """Hidden states, a head and labels with ignored stretches (prompt, padding) in each row."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 17, HIDDEN, generator=generator).to(dtype)
    head = nn.Linear(HIDDEN, VOCAB, bias=False).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=generator) * 0.3)
    labels = torch.randint(0, VOCAB, (3, 17), generator=generator)
    labels[0, :6] = -100
    labels[1, 10:] = -100
    labels[2, ::3] = -100
    return hidden, head, labels


def reference(hidden, head, labels, num_items_in_batch=None):
    return ForCausalLMLoss(head(hidden), labels, VOCAB, num_items_in_batch=num_items_in_batch)


def loss_and_grads(fn, hidden, head, labels, weight=None, **kwargs):
    """Loss and the gradients of the hidden states and of ``weight`` (default: ``head.weight``)."""
    weight = head.weight if weight is None else weight
    hidden = hidden.clone().requires_grad_(True)
    weight.grad = None
    loss = fn(hidden, head, labels, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad.clone()


def chunked(chunk_size: int):
    return lambda hidden, head, labels, **kw: labelled_cross_entropy(
        hidden, head, labels, chunk_size=chunk_size, **kw
    )


def test_shift_targets_moves_labels_left_and_ignores_each_rows_last_position() -> None:
    labels = torch.tensor([[5, 6, -100, 8], [1, 2, 3, 4]])
    assert shift_targets(labels).tolist() == [[6, -100, 8, -100], [2, 3, 4, -100]]


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
@pytest.mark.parametrize("num_items", [None, 40])
def test_loss_and_gradients_equal_the_full_logits_loss(chunk_size: int, num_items: int | None) -> None:
    hidden, head, labels = make_batch()
    kwargs = {"num_items_in_batch": num_items}
    ref = loss_and_grads(reference, hidden, head, labels, **kwargs)
    got = loss_and_grads(chunked(chunk_size), hidden, head, labels, **kwargs)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-7)  # hidden
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-7)  # weight


def test_a_head_that_is_not_a_plain_linear_goes_through_its_own_forward_with_the_same_result() -> None:
    hidden, head, labels = make_batch(1)
    calls = []
    wrapped = nn.Sequential(head)
    wrapped.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    assert plain_linear(wrapped) is None
    ref = loss_and_grads(reference, hidden, head, labels)
    got = loss_and_grads(chunked(5), hidden, wrapped, labels, weight=head.weight)
    n_labelled = int((shift_targets(labels) != -100).sum())
    assert calls == [5] * (n_labelled // 5) + ([n_labelled % 5] if n_labelled % 5 else [])
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bf16_loss_is_close_to_the_full_logits_loss() -> None:
    hidden, head, labels = make_batch(2, torch.bfloat16)
    ref = loss_and_grads(reference, hidden, head, labels)
    got = loss_and_grads(chunked(7), hidden, head, labels)
    assert got[1].dtype == got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], ref[0], rtol=1e-3, atol=0)
    torch.testing.assert_close(got[1].float(), ref[1].float(), rtol=2e-2, atol=2e-3)
    torch.testing.assert_close(got[2].float(), ref[2].float(), rtol=2e-2, atol=2e-3)


def test_nothing_labelled_gives_nan_as_a_mean_and_zero_over_num_items() -> None:
    hidden, head, _ = make_batch()
    labels = torch.full((3, 17), -100)
    assert torch.isnan(labelled_cross_entropy(hidden, head, labels))
    loss, grad_hidden, grad_weight = loss_and_grads(chunked(7), hidden, head, labels, num_items_in_batch=3)
    assert loss.item() == 0.0 and not grad_hidden.any() and not grad_weight.any()


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_larger_than_one_chunk_of_logits_is_ever_created() -> None:
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 64, HIDDEN, generator=generator, requires_grad=True)
    head = nn.Linear(HIDDEN, VOCAB, bias=False)
    labels = torch.randint(0, VOCAB, (4, 64), generator=generator)
    with LargestTensor() as full:
        reference(hidden, head, labels).backward()
    with LargestTensor() as fused:
        labelled_cross_entropy(hidden, head, labels, chunk_size=16).backward()
    assert full.largest == 4 * 64 * VOCAB
    # The largest are the weight-sized gradient (VOCAB x HIDDEN) and one chunk's logits (16 x VOCAB), whatever the
    # number of tokens.
    assert fused.largest == max(VOCAB * HIDDEN, 16 * VOCAB)


def test_modules_to_save_head_resolves_to_the_trained_copy(tiny_model_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from qwenvl_train import QwenVLForCausalLM

    model = QwenVLForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=["lm_head"], task_type="CAUSAL_LM")
    )
    wrapper = model.lm_head
    assert plain_linear(wrapper) is wrapper.modules_to_save["default"]
    with peft_model.disable_adapter():
        assert plain_linear(wrapper) is wrapper.original_module


# ----------------------------------------------------------------------------------------------------------------
# The model's training forward
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151643, (2, 12), generator=generator)
    labels = ids.clone()
    labels[:, :5] = -100
    labels[1, 9:] = -100
    return ids, labels


def test_training_forward_skips_the_logits_and_matches_the_full_logits_loss(
    tiny_model_dir: Path, batch
) -> None:
    from qwenvl_train import QwenVLForCausalLM

    ids, labels = batch

    def run(full_logits: bool):
        torch.manual_seed(0)
        model = QwenVLForCausalLM.from_pretrained(tiny_model_dir).train()
        out = model(input_ids=ids, labels=labels, return_logits=full_logits or None, num_items_in_batch=11)
        loss = ForCausalLMLoss(out.logits, labels, 151936, num_items_in_batch=11) if full_logits else out.loss
        if full_logits:
            torch.testing.assert_close(out.loss, loss, rtol=1e-6, atol=0)
        else:
            assert out.logits is None
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss_ref, grads_ref = run(True)
    loss, grads = run(False)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=0)
    assert set(grads) == set(grads_ref) and "lm_head.weight" in grads and "transformer.wte.weight" in grads
    for name, grad in grads_ref.items():
        # Summation order differs (chunks), so compare each gradient relative to its own scale.
        assert (grads[name] - grad).norm() <= 1e-5 * grad.norm(), name


def test_eval_forward_with_labels_still_returns_logits(tiny_model_dir: Path, batch) -> None:
    from qwenvl_train import QwenVLForCausalLM

    ids, labels = batch
    model = QwenVLForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 12, 151936)
    torch.testing.assert_close(out.loss, ForCausalLMLoss(out.logits, labels, 151936), rtol=1e-6, atol=0)
