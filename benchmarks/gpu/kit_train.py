"""Steps ``lora``, ``qlora`` and ``lora-base``: timed training iterations of the big model (the full Qwen-VL-Chat
shape on a GPU), one image per sample, batch 1 x grad-accum ``plan.accum``, with train_step.py's building blocks.

One model is loaded per path (eager, optimized) and freed after it; each row is one setting, measured on its own:
warm-up iterations (they fill the vision cache), one untimed iteration for memory, then ``plan.iters`` timed ones
(the median is reported). The settings:

* eager: eager attention, the tower on every image, full logits and transformers' ``ForCausalLMLoss``;
* optimized: the fastest attention here (flash_attention_2 where installed, else sdpa), the labelled loss
  (cut-cross-entropy where its kernels run, else in chunks), the warm vision cache; activation checkpointing
  off, then on.

Memory: ``peak`` is everything allocated at the iteration's peak (weights, adapters, optimizer state and the
step: CUDA ``max_memory_allocated``), ``step`` the part above what was resident before it, ``reserved`` the CUDA
allocator's reserved peak (nearer to what nvidia-smi shows).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from pathlib import Path

import torch
from kit_common import Part, Plan, elapsed, free_cuda, gib, model_dir, train_step

#: The original's published figures, one A100-80G, batch 1 x grad-accum 8, one image: (GB, s/it).
ORIGINAL = {
    ("lora-chat", 384): (23.3, 2.2),
    ("lora-chat", 1024): (25.1, 3.5),
    ("lora-chat", 2048): (27.3, 5.9),
    ("qlora-nf4", 384): (17.0, 4.2),
}


def fastest_attention(dev: torch.device) -> str:
    if dev.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def set_checkpointing(base, on: bool) -> None:  # noqa: ANN001
    """Activation checkpointing of every block (non-reentrant), on or off, on the model under the adapters."""
    if on:
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers before activation_checkpointing_*
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(base, "is_activation_checkpointing", None) or getattr(
        base, "is_gradient_checkpointing", False
    ):
        if hasattr(base, "activation_checkpointing_disable"):
            base.activation_checkpointing_disable()
        else:
            base.gradient_checkpointing_disable()


def resident_bytes(model, optimizer: torch.optim.Optimizer) -> int:  # noqa: ANN001
    """Bytes of the weights, buffers and optimizer state (CPU: the part of the peak that is not the step's)."""
    seen: set[int] = set()
    total = 0
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [
        t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)
    ]
    for t in tensors:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def measure(
    part: Part,
    model,  # noqa: ANN001
    mode: str,
    path: str,
    length: int,
    checkpointing: bool,
    loss_fn,  # noqa: ANN001
    config: train_step.QwenVLConfig,
    plan: Plan,
    peak: float,
    extra: dict,
    vit_trains: bool = False,
) -> dict:
    """One row: ``mode`` on ``path`` at ``length`` tokens, one picture per sample at ``config``'s image size. The
    FLOPs count the tower's forward where it runs (every path but the cached one: ``path != "optimized"``), and
    its input gradients too when ``vit_trains`` (adapters inside the ViT)."""
    dev = train_step.device()
    samples = train_step.synthetic_samples(config, length, plan.accum)
    runner = train_step.Runner(model, loss_fn, samples, plan.accum, dev)
    start = time.perf_counter()
    for _ in range(plan.warmup):
        runner.iteration()
    warmup = elapsed(start)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        step = runner.step_memory()
        reserved = round(gib(torch.cuda.max_memory_reserved()), 2)
    else:
        before = resident_bytes(model, runner.optimizer)
        step = runner.step_memory()
        reserved = None
    times = [runner.iteration() for _ in range(plan.iters)]
    seconds = statistics.median(times)
    tokens = length * plan.accum
    labelled = sum(int((s["labels"][:, 1:] != -100).sum()) for s in samples)
    head_trains = mode == "lora-base"
    flops = train_step.model_flops(
        config, tokens, labelled, plan.accum, head_trains, tower=path != "optimized"
    )
    if vit_trains:  # the backward through the tower (input gradients): 2 x its forward more
        tower = flops - train_step.model_flops(config, tokens, labelled, plan.accum, head_trains, tower=False)
        flops += 2 * tower
    original = ORIGINAL.get((mode, length))
    row = part.row(
        mode=mode,
        path=path,
        length=length,
        checkpointing=checkpointing,
        s_it=round(seconds, 4),
        tokens_s=round(tokens / seconds, 1),
        peak_gib=round(gib(before) + step, 2),
        step_gib=round(step, 2),
        reserved_gib=reserved,
        mfu=round(flops / seconds / peak, 4),
        times=[round(t, 4) for t in times],
        warmup_seconds=warmup,
        original_gb=original[0] if original else None,
        original_s_it=original[1] if original else None,
        **extra,
    )
    del runner
    free_cuda()
    return row


def run_mode(
    part: Part,
    work: Path,
    plan: Plan,
    mode: str,
    settings: list[tuple[str, tuple[bool, ...], tuple[int, ...]]],
) -> None:
    """Rows of ``mode`` for each (path, activation checkpointing settings, lengths) of ``settings``. Each path
    loads its own model, with its attention kernel (the model cannot switch kernels at run time: transformers'
    ``set_attn_implementation`` leaves a model with its own attention dispatch as it is), and frees it after."""
    dev = train_step.device()
    folder = model_dir(work, "big")
    config = train_step.QwenVLConfig.from_pretrained(folder)
    fast = fastest_attention(dev)
    peak = train_step.matmul_peak(dev, rounds=plan.peak_rounds, seconds=plan.peak_seconds)
    part["matmul_peak_tflops"] = round(peak / 1e12, 3)
    part["model"] = {
        "size": plan.big,
        "mode": mode,
        "accum": plan.accum,
        "iters": plan.iters,
        "warmup": plan.warmup,
    }
    backend = "cce" if dev.type == "cuda" and importlib.util.find_spec("cut_cross_entropy") else "chunked"
    backend = os.environ.get("GPUKIT_LOSS") or backend  # GPUKIT_LOSS=chunked: a rerun after CCE broke the GPU
    for path, checkpointings, lengths in settings:
        start = time.perf_counter()
        model, attn = train_step.build(folder, mode, "eager" if path == "eager" else fast, dev, None)
        base = model.get_base_model()
        part["model"] = part["model"] | {
            f"{path}_load_seconds": elapsed(start),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        if path == "eager":
            loss_fn = train_step.eager_loss
        else:
            if attn != fast:
                part.note(f"{fast} refused by the model: {attn} instead")
            cache = train_step.VisionFeatureCache(work / f"vision-cache-{mode}", base.transformer.visual)
            loss_fn = train_step.optimized_loss(cache)
            base.loss_backend = backend
        for checkpointing in checkpointings:
            set_checkpointing(base, checkpointing)
            for length in lengths:
                extra = {"attn": attn, "loss": "full logits" if path == "eager" else backend}
                args = (part, model, mode, path, length, checkpointing, loss_fn, config, plan, peak, extra)
                try:
                    measure(*args)
                except torch.OutOfMemoryError:
                    free_cuda()
                    part.row(mode=mode, path=path, length=length, checkpointing=checkpointing, error="out of memory",
                             **extra, **{"pass": False})  # fmt: skip
                except Exception as exc:
                    if path == "eager" or backend != "cce":
                        raise
                    # CCE's kernels break across Triton versions (the product probes them): chunks instead.
                    part.note(
                        f"cut-cross-entropy failed ({type(exc).__name__}: {str(exc)[:200]}): chunked loss"
                    )
                    free_cuda()
                    backend = base.loss_backend = extra["loss"] = "chunked"
                    measure(*args)
        if path != "eager":
            part["vision_cache"] = {"hits": cache.hits, "misses": cache.misses}
        del model, base, loss_fn
        free_cuda()


def run_lora(part: Part, work: Path, plan: Plan) -> None:
    """LoRA (chat): eager-unchunked vs optimized, activation checkpointing off and on, at each length."""
    run_mode(
        part,
        work,
        plan,
        "lora-chat",
        [("eager", (False,), plan.lengths), ("optimized", (False, True), plan.lengths)],
    )


def run_qlora(part: Part, work: Path, plan: Plan) -> None:
    """Q-LoRA on an NF4 base (bitsandbytes), optimized with activation checkpointing (as the original ran it)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"bitsandbytes is not installed ({exc}): carry its wheel (wheels.sh)") from exc
    run_mode(part, work, plan, "qlora-nf4", [("optimized", (True,), plan.qlora_lengths)])


def run_lora_base(part: Part, work: Path, plan: Plan) -> None:
    """LoRA on a base checkpoint: wte and lm_head train too (modules_to_save), eager vs optimized."""
    run_mode(
        part,
        work,
        plan,
        "lora-base",
        [("eager", (False,), plan.base_lengths), ("optimized", (False,), plan.base_lengths)],
    )
