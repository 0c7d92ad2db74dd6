"""Step ``parity``: the bf16 model against an fp32 eager reference, on the mid-size random model.

* Each attention kernel (eager, sdpa, flex_attention, and flash_attention_2/3 where installed) in bf16: the logits'
  relative error (``||x - ref|| / ||ref||``), their largest absolute difference and the loss's difference from the
  fp32 eager model. bf16 eager is the yardstick: a kernel passes when its error is at most twice bf16 eager's
  (plus a small floor).
* The chunked loss (only the labelled positions, in chunks; and cut-cross-entropy where it runs) against the loss
  over the full logits, in fp32 and in bf16.
* The vision feature cache: logits with the tower's features read from the cache (first computed, then read back)
  against the tower run inside the forward.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from kit_common import Part, Plan, elapsed, free_cuda, model_dir, train_step

#: Passing margins: a kernel's error may be twice bf16 eager's plus these floors.
REL_FLOOR, LOSS_FLOOR = 2e-3, 5e-3


def batch(config: train_step.QwenVLConfig, plan: Plan, dev: torch.device) -> dict[str, torch.Tensor]:
    samples = train_step.synthetic_samples(config, plan.parity_length, plan.parity_samples, seed=1)
    return {
        "input_ids": torch.cat([s["input_ids"] for s in samples]).to(dev),
        "labels": torch.cat([s["labels"] for s in samples]).to(dev),
        "pixel_values": torch.cat([s["pixel_values"] for s in samples]).to(dev),
    }


def full_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, from the full logits (fp32)."""
    return F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="mean"
    )


def load(folder: Path, attn: str, dtype: torch.dtype, dev: torch.device):  # noqa: ANN201
    model = train_step.QwenVLForCausalLM.from_pretrained(folder, attn_implementation=attn, dtype=dtype)
    return model.to(dev).eval()


@torch.no_grad()
def forward(model, inputs: dict, dtype: torch.dtype, **kwargs) -> tuple[torch.Tensor, float]:  # noqa: ANN001
    """(fp32 logits, loss) of one forward with labels."""
    args = dict(input_ids=inputs["input_ids"], labels=inputs["labels"], return_logits=True, use_cache=False)
    if "image_features" in kwargs:
        args["image_features"] = kwargs["image_features"]
    else:
        args["pixel_values"] = inputs["pixel_values"].to(dtype)
    out = model(**args)
    return out.logits.float(), float(out.loss)


def compare(logits: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = logits - ref
    return {
        "rel_error": float(diff.norm() / ref.norm()),
        "max_abs": float(diff.abs().max()),
        "top1_agree": float((logits.argmax(-1) == ref.argmax(-1)).float().mean()),
    }


def loss_rows(part: Part, model, inputs: dict, dtype: torch.dtype, label: str, dev: torch.device) -> None:  # noqa: ANN001
    """The chunked loss (several chunks) and CCE where it runs, against the loss over the full logits."""
    logits, _ = forward(model, inputs, dtype)
    reference = float(full_loss(logits, inputs["labels"]))
    labelled = int((inputs["labels"][:, 1:] != -100).sum())
    chunk = max(1, labelled // 3)  # at least three chunks
    saved_chunk, saved_backend = model.loss_chunk_size, model.loss_backend
    backends = ["chunked"]
    cce = importlib.util.find_spec("cut_cross_entropy") is not None
    if dev.type == "cuda" and dtype == torch.bfloat16 and cce:
        backends.append("cce")
    limit = 1e-4 if dtype == torch.float32 else 2e-2
    try:
        for backend in backends:
            model.loss_chunk_size, model.loss_backend = chunk, backend
            try:
                _, loss = forward(model, inputs, dtype)
            except Exception as exc:  # noqa: BLE001 - CCE's kernels: recorded, not fatal
                part.row(
                    check=f"loss {backend} vs full logits ({label})", error=str(exc).splitlines()[0][:300]
                )
                continue
            diff = abs(loss - reference)
            part.row(
                check=f"loss {backend} (chunks of {chunk}) vs full logits ({label})",
                loss=loss,
                full=reference,
                abs_diff=diff,
                limit=limit * max(1.0, abs(reference)),
                **{"pass": diff <= limit * max(1.0, abs(reference))},
            )
    finally:
        model.loss_chunk_size, model.loss_backend = saved_chunk, saved_backend


def cache_rows(part: Part, model, inputs: dict, dtype: torch.dtype, work: Path, label: str) -> None:  # noqa: ANN001
    """Logits through the vision feature cache (cold: computed and stored; warm: read back) vs the tower in the
    forward."""
    folder = work / "parity-vision-cache"
    shutil.rmtree(folder, ignore_errors=True)
    cache = train_step.VisionFeatureCache(folder, model.transformer.visual)
    reference, _ = forward(model, inputs, dtype)
    pixels = inputs["pixel_values"].to(dtype)
    for state in ("cold", "warm"):
        features = cache.features(pixels)
        logits, _ = forward(model, inputs, dtype, image_features=features)
        diff = float((logits - reference).abs().max())
        scale = float(reference.abs().max())
        part.row(
            check=f"vision cache {state} vs tower in the forward ({label})",
            max_abs=diff,
            identical=diff == 0.0,
            hits=cache.hits,
            misses=cache.misses,
            limit=1e-3 * scale,
            **{"pass": diff <= 1e-3 * scale},
        )
    shutil.rmtree(folder, ignore_errors=True)


def run(part: Part, work: Path, plan: Plan) -> None:
    dev = train_step.device()
    folder = model_dir(work, "mid")
    config = train_step.QwenVLConfig.from_pretrained(folder)
    inputs = batch(config, plan, dev)
    part["model"] = {"size": plan.mid, "length": plan.parity_length, "samples": plan.parity_samples}
    start = time.perf_counter()
    reference_model = load(folder, "eager", torch.float32, dev)
    ref_logits, ref_loss = forward(reference_model, inputs, torch.float32)
    part.row(check="fp32 eager reference", loss=ref_loss, seconds=elapsed(start))
    loss_rows(part, reference_model, inputs, torch.float32, "fp32 eager", dev)
    cache_rows(part, reference_model, inputs, torch.float32, work, "fp32 eager")
    del reference_model
    free_cuda()

    yardstick: dict | None = None
    for attn in plan.attentions:
        start = time.perf_counter()
        if attn.startswith("flash") and dev.type != "cuda":
            part.row(check=f"bf16 {attn} vs fp32 eager", skipped="needs CUDA")
            continue
        if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            part.row(check=f"bf16 {attn} vs fp32 eager", skipped="flash_attn not installed")
            continue
        if attn == "flash_attention_3" and importlib.util.find_spec("flash_attn_interface") is None:
            part.row(check=f"bf16 {attn} vs fp32 eager", skipped="flash_attn_3 not installed")
            continue
        try:
            model = load(folder, attn, torch.bfloat16, dev)
            logits, loss = forward(model, inputs, torch.bfloat16)
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot run here is a finding, not a crash
            part.row(
                check=f"bf16 {attn} vs fp32 eager", error=str(exc).splitlines()[0][:300], **{"pass": False}
            )
            free_cuda()
            continue
        found = compare(logits, ref_logits) | {"loss": loss, "loss_diff": abs(loss - ref_loss)}
        del logits
        if yardstick is None:  # bf16 eager: the error bf16 itself brings
            yardstick = found
            ok = found["rel_error"] < 0.05
        else:
            ok = (
                found["rel_error"] <= 2 * yardstick["rel_error"] + REL_FLOOR
                and found["loss_diff"] <= 2 * yardstick["loss_diff"] + LOSS_FLOOR
            )
        part.row(check=f"bf16 {attn} vs fp32 eager", seconds=elapsed(start), **found, **{"pass": ok})
        if attn == "sdpa":
            loss_rows(part, model, inputs, torch.bfloat16, "bf16 sdpa", dev)
            cache_rows(part, model, inputs, torch.bfloat16, work, "bf16 sdpa")
        del model
        free_cuda()
