"""Next-token cross-entropy computed only where labels are set, in chunks, without full-vocabulary logits.

The output layer of Qwen-VL has 151,936 rows. Computing ``[tokens, 151936]`` fp32 logits for every position of a
training batch (and keeping them for the backward pass) costs more time and memory than the rest of a small
model, and about half of the positions (system prompt, questions, image spans, padding) have no label at all.
Here the hidden states whose next-token label is set are gathered first, then the output layer and the
cross-entropy run over chunks of them:

* :class:`ChunkedLinearCrossEntropy` (a plain ``nn.Linear`` head): each chunk's logits exist only inside the
  forward pass, where the gradients with respect to the hidden states and the weight are computed at once; the
  backward pass only scales them. Peak memory is one chunk's logits, and what is kept grows with the number of
  labelled tokens times the hidden size, never times the vocabulary.
* any other head (a DeepSpeed ZeRO-3 partitioned or FSDP-sharded weight, a quantized or adapter-wrapped layer):
  the module is called chunk by chunk so its own hooks and autograd run; still only the labelled positions.

The arithmetic is that of transformers' ``ForCausalLMLoss``: logits in the head's compute dtype, upcast to fp32,
summed cross-entropy divided by the number of labelled tokens, or by ``num_items_in_batch`` (the Trainer's count
over the whole gradient-accumulation step) when given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..format.render import IGNORE_INDEX

#: Labelled tokens per chunk: 1024 x 151,936 fp32 logits are about 0.6 GB.
DEFAULT_CHUNK_SIZE = 1024


def shift_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The label each position predicts: ``labels`` shifted left by one, ``ignore_index`` at each row's end."""
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def _sharded(weight: torch.Tensor) -> bool:
    """A weight that is not all here: ZeRO-3 partitioned (``ds_id``) or an FSDP2 ``DTensor``."""
    return hasattr(weight, "ds_id") or type(weight).__name__ == "DTensor"


def plain_linear(head: nn.Module) -> nn.Linear | None:
    """The ``nn.Linear`` that computes ``head``'s output when the fused path can use its weight directly.

    peft's ``ModulesToSaveWrapper`` (``lm_head`` trained in full next to LoRA adapters) forwards to one of its
    copies, which is returned. None for anything else (quantized, adapter or sharded layers).
    """
    while type(head).__name__ == "ModulesToSaveWrapper":
        active = head.active_adapters
        head = (
            head.original_module if head.disable_adapters or not active else head.modules_to_save[active[0]]
        )
    if type(head) is nn.Linear and head.bias is None and not _sharded(head.weight):
        return head
    return None


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``sum(cross_entropy(hidden @ weight.T, targets)) / divisor`` without keeping any chunk's logits.

    The forward pass computes, chunk by chunk, the logits (in the dtype ``F.linear`` gives under the current
    autocast state), their fp32 log-softmax and loss, and the gradients of the loss with respect to ``hidden`` and
    ``weight``; backward multiplies them by the incoming gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        divisor: torch.Tensor,
        chunk_size: int,
    ) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        )
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]
            t = targets[start : start + chunk_size]
            logits = F.linear(h, weight)
            dtype = logits.dtype
            log_probs = logits.float().log_softmax(dim=-1)
            # Drop each chunk's tensors as soon as they are used: the next chunk's logits must not be allocated
            # while this chunk's are alive (peak: two chunks during the log-softmax, not three).
            del logits
            total += -log_probs.gather(1, t[:, None]).sum()
            if not (need_hidden or need_weight):
                del log_probs
                continue
            # d(sum CE)/d(logits) = softmax - onehot, cast to the logits' dtype like autograd's .float() backward.
            grad_logits = log_probs.exp_()
            del log_probs
            grad_logits[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            grad_logits = grad_logits.to(dtype)
            if need_hidden:
                grad_hidden[start : start + chunk_size] = grad_logits @ weight.to(dtype)
            if need_weight:
                grad_weight += (grad_logits.T @ h.to(dtype)).float()
            del grad_logits
        ctx.save_for_backward(grad_hidden, grad_weight, divisor)
        ctx.weight_dtype = weight.dtype
        return total / divisor

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_weight, divisor = ctx.saved_tensors
        scale = grad_output / divisor
        if grad_hidden is not None:
            grad_hidden = grad_hidden * scale.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * scale).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def labelled_cross_entropy(
    hidden_states: torch.Tensor,
    head: nn.Module,
    labels: torch.Tensor | None = None,
    *,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_index: int = IGNORE_INDEX,
    backend: str = "chunked",
) -> torch.Tensor:
    """Causal-LM loss from the final hidden states, computed only at positions whose next-token label is set.

    Args:
        hidden_states: ``[batch, length, hidden]`` after the final norm.
        head: the output layer (``lm_head``), any module mapping hidden to vocabulary logits.
        labels: ``[batch, length]`` token ids, ``ignore_index`` where not trained (shifted here).
        shift_labels: already shifted targets ``[batch, length]`` (instead of ``labels``).
        num_items_in_batch: divide the summed loss by this instead of the number of labelled tokens here.
        chunk_size: labelled tokens per chunk of logits.
        ignore_index: label value of untrained positions.
        backend: ``"cce"`` computes a plain linear head's loss with cut-cross-entropy (resolved and probed
            beforehand by :func:`.cce.resolve_loss_backend`); other heads and ``"chunked"`` use the chunks.

    Returns:
        The scalar loss (fp32), NaN when nothing is labelled and ``num_items_in_batch`` is not given, as the
        mean of an empty cross-entropy is.
    """
    if shift_labels is None:
        if labels is None:
            raise ValueError("pass labels or shift_labels")
        shift_labels = shift_targets(labels, ignore_index)
    shift_labels = shift_labels.to(hidden_states.device)
    keep = shift_labels != ignore_index
    hidden = hidden_states[keep]
    targets = shift_labels[keep]
    if num_items_in_batch is None:
        divisor = torch.tensor(float(targets.shape[0]), device=hidden.device)
    else:
        divisor = torch.as_tensor(num_items_in_batch, device=hidden.device).float()

    linear = plain_linear(head)
    if linear is not None and backend == "cce" and hidden.shape[0] > 0:
        from .cce import cce_sum

        return cce_sum(hidden, linear.weight, targets) / divisor
    if linear is not None:
        return ChunkedLinearCrossEntropy.apply(hidden, linear.weight, targets, divisor, chunk_size)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        logits = head(hidden[start : start + chunk_size]).float()
        total = total + F.cross_entropy(logits, targets[start : start + chunk_size], reduction="sum")
    if hidden.shape[0] == 0:
        # Keep the head in the graph (zero gradients), so every rank runs the same backward.
        total = total + head(hidden[:0]).sum() * 0.0
    return total / divisor
