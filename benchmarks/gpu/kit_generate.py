"""Step ``generate``: generation speed of the big model (bf16 on a GPU) with one picture per prompt, at each batch
size of ``plan.gen_batches``: greedy, exactly ``plan.gen_new_tokens`` new tokens (``min_new_tokens``), sdpa, KV
cache. The prefill alone (one new token) is timed too, so the decode rate is reported apart from it."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from kit_common import Part, Plan, elapsed, model_dir, train_step


def run(part: Part, work: Path, plan: Plan) -> None:
    dev = train_step.device()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    folder = model_dir(work, "big")
    start = time.perf_counter()
    model = train_step.QwenVLForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation="sdpa", device_map={"": str(dev)}
    ).eval()  # straight onto the device: no 19 GB detour through host memory
    part["model"] = {
        "size": plan.big,
        "dtype": str(dtype).removeprefix("torch."),
        "load_seconds": elapsed(start),
    }
    sample = train_step.synthetic_samples(model.config, plan.gen_prompt_length, 1, seed=2)[0]
    pad = model.generation_config.pad_token_id
    for batch in plan.gen_batches:
        ids = sample["input_ids"].repeat(batch, 1).to(dev)
        pixels = sample["pixel_values"].repeat(batch, 1, 1, 1).to(dev, dtype)

        def generate(n: int, ids: torch.Tensor = ids, pixels: torch.Tensor = pixels) -> tuple[int, float]:
            train_step.synchronize(dev)
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    pixel_values=pixels,
                    max_new_tokens=n,
                    min_new_tokens=n,
                    do_sample=False,
                    top_p=None,
                    top_k=None,
                    pad_token_id=pad,
                )
            train_step.synchronize(dev)
            return out.shape[1] - ids.shape[1], time.perf_counter() - start

        generate(2)  # warm-up
        _, prefill = generate(1)
        new, seconds = generate(plan.gen_new_tokens)
        part.row(
            batch=batch,
            prompt_tokens=ids.shape[1],
            new_tokens=new,
            seconds=round(seconds, 4),
            tokens_s=round(batch * new / seconds, 1),
            decode_tokens_s=round(batch * (new - 1) / max(seconds - prefill, 1e-9), 1),
            prefill_s=round(prefill, 4),
        )
