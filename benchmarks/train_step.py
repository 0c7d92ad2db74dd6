"""Time training steps of the eager/unchunked path and the optimized path side by side, in one process.

    PYTHONPATH=src python benchmarks/train_step.py                       # medium, 384 tokens, LoRA (chat), CPU
    PYTHONPATH=src python benchmarks/train_step.py --lengths 384 1024 --modes lora-chat lora-base qlora-nf4
    PYTHONPATH=src python benchmarks/train_step.py --size full --lengths 384 512 1024 2048 --accum 8  # a GPU

A model of a named size is built with random weights (shapes, not values, set the speed): ``medium`` (hidden 512,
4 layers, ViT 256 wide at 448 px, 256 queries, the real 151,936-token vocabulary) through the project's tiny-model
builder, or ``full`` (the 9.66B shapes of tests/reference/qwen-vl-chat/config.json). Each sample is one image
span and random text of exactly the sequence length, the answer (labelled) filling the positions after the prompt.
An iteration is batch 1 x ``--accum`` micro-batches and one AdamW step; ``--warmup`` iterations, then ``--iters``
timed ones, for each mode and each path:

* eager: ``attn_implementation="eager"``, the vision tower run on every image, full logits over the vocabulary
  and transformers' ``ForCausalLMLoss`` on them (the model as it computed its loss before the labelled loss);
* optimized: ``--attn`` (sdpa by default; eager when the model refuses it), the loss only at labelled positions
  in chunks (``model.loss_chunk_size``) and the frozen-vision feature cache (warm after the warm-up, as in every
  epoch after the first).

Both paths are built side by side; after the warm-up and one untimed iteration that measures memory, the timed
iterations alternate between them (a shared machine's load then falls on both alike) and the median is reported.
Columns: seconds per iteration, tokens/s, step memory (what an iteration allocates above the resident weights,
optimizer state and cache: CUDA ``max_memory_allocated`` minus what was allocated before; CPU the peak of the live
tensors it creates, tracked op by op), model-FLOP utilization against the
matmul peak measured here (bf16 on CUDA, fp32 on CPU; the FLOPs an iteration needs: 4 x frozen LLM matmul weights
x tokens, the output layer on the labelled tokens only, attention, and 2 x ViT weights x patches where the tower
runs, so the eager path's wasted logits count as lost utilization), and optimized/eager time.

Then the loss alone, forward and backward, for growing numbers of labelled tokens: the peak of the tensors it
holds (tracked op by op) and its largest tensor, beside what one full ``[tokens, vocab]`` fp32 logits tensor
would take.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from qwenvl_train.model import QwenVLConfig, QwenVLForCausalLM
from qwenvl_train.model.loss import labelled_cross_entropy
from qwenvl_train.tiny import make_tiny, tiny_config_dict
from qwenvl_train.training.vision_cache import VisionFeatureCache

REFERENCE_CONFIG = Path(__file__).resolve().parent.parent / "tests/reference/qwen-vl-chat/config.json"
#: Overrides of the tiny config for ``medium`` (the CPU workload of the performance issue).
MEDIUM = {
    "hidden_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "kv_channels": 64,
    "intermediate_size": 2752,
    "visual": {
        "width": 256,
        "layers": 4,
        "heads": 4,
        "mlp_ratio": 4.9231,
        "image_size": 448,
        "n_queries": 256,
        "output_dim": 512,
    },
}
MODES = ("lora-chat", "lora-base", "qlora-nf4", "qlora-gptq")
LORA_TARGETS = ["c_attn", "attn.c_proj", "w1", "w2"]


def load_average() -> str:
    """The 1/5/15-minute load average, as a string."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def size_config(size: str) -> dict:
    """config.json of the named size (original format)."""
    if size == "tiny":  # the test suite's model: only for smoke runs of this script
        return tiny_config_dict()
    if size == "medium":
        return tiny_config_dict(**json.loads(json.dumps(MEDIUM)))
    if size == "full":
        return json.loads(REFERENCE_CONFIG.read_text())
    raise ValueError(f"unknown size {size!r}: medium or full")


def write_model(size: str, folder: Path) -> Path:
    """A random checkpoint of ``size`` in ``folder`` (through ``make_tiny``, so from_pretrained and NF4 work)."""
    overrides = {k: v for k, v in size_config(size).items() if k != "visual"}
    overrides["visual"] = size_config(size)["visual"]
    for key in ("_name_or_path", "architectures", "auto_map", "transformers_version", "model_type"):
        overrides.pop(key, None)
    return make_tiny(folder, seed=0, **overrides)


# ------------------------------------------------------------------------------------------------ devices and memory


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def matmul_peak(dev: torch.device, rounds: int = 5, seconds: float = 0.3) -> float:
    """Measured matmul FLOP/s of this device, bf16 on CUDA, fp32 on CPU (the dtype the benchmark trains in): the
    best of ``rounds`` timed rounds, so that a busy moment of a shared machine does not lower it."""
    dtype, n = (torch.bfloat16, 8192) if dev.type == "cuda" else (torch.float32, 1024)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    a @ b
    best = 0.0
    for _ in range(rounds):
        synchronize(dev)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        synchronize(dev)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


class TensorMemory(TorchDispatchMode):
    """Bytes of tensor storage created inside the block and still alive: the peak and the largest one."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.largest = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._seen or storage.nbytes() == 0:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        self.largest = max(self.largest, size)
        weakref.finalize(t, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        inputs = {
            a.untyped_storage().data_ptr()
            for a in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(a, torch.Tensor)
        }
        for t in out if isinstance(out, (tuple, list)) else (out,):
            # Views and in-place results share an input's storage: nothing new was allocated.
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self._track(t)
        return out


# ------------------------------------------------------------------------------------------------ workload


def synthetic_samples(
    config: QwenVLConfig, length: int, n: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """``n`` samples of exactly ``length`` tokens: 20 prompt tokens, one image span, 10 question tokens, then the
    answer (labelled) up to ``length``; one random image each."""
    generator = torch.Generator().manual_seed(seed)
    span = [config.image_start_id] + [config.image_pad_id] * config.n_queries + [config.image_end_id]
    prompt_len = 20 + len(span) + 10
    if length <= prompt_len + 1:
        raise ValueError(f"sequence length {length} leaves no answer after a {prompt_len}-token prompt")
    size = int(config.visual["image_size"])
    samples = []
    for _ in range(n):
        text = torch.randint(0, 151643, (length,), generator=generator)
        ids = torch.cat([text[:20], torch.tensor(span), text[20 : length - len(span)]])
        labels = ids.clone()
        labels[:prompt_len] = -100
        pixels = torch.randn(1, 3, size, size, generator=generator)
        samples.append({"input_ids": ids[None], "labels": labels[None], "pixel_values": pixels})
    return samples


def model_flops(
    config: QwenVLConfig, tokens: int, labelled: int, images: int, head_trains: bool, tower: bool
) -> float:
    """FLOPs one iteration needs (see the module docstring): the frozen LLM matmuls forward and input-gradient
    (4 x weights x tokens), the output layer on the labelled tokens only (6x when it trains), attention, and the
    ViT's forward when ``tower`` (the cached path skips it). LoRA's own small matmuls are left out."""
    h, layers = config.hidden_size, config.num_hidden_layers
    per_layer = 4 * h * h + 3 * h * (config.intermediate_size // 2)  # c_attn + c_proj, w1 + w2 + c_proj
    llm = 4 * layers * per_layer * tokens
    head = (6 if head_trains else 4) * h * config.vocab_size * labelled
    attention = 3 * 4 * layers * h * tokens * tokens / max(images, 1)  # per sample: L^2, causal ignored
    visual = config.visual
    width, patches = int(visual["width"]), (int(visual["image_size"]) // int(visual["patch_size"])) ** 2
    mlp = int(width * float(visual["mlp_ratio"]))
    vit = 2 * int(visual["layers"]) * (4 * width * width + 2 * width * mlp) * patches * images
    return llm + head + attention + (vit if tower else 0)


@dataclass
class Result:
    mode: str
    path: str
    length: int
    seconds: float
    tokens_per_s: float
    peak_gib: float
    mfu: float
    note: str = ""


def build(model_dir: Path, mode: str, attn: str, dev: torch.device, gptq_dir: str | None) -> tuple:
    """(model, attn actually used) for a mode, or raise ``RuntimeError`` with the reason it cannot run here."""
    from peft import LoraConfig, get_peft_model

    kwargs: dict = {"dtype": torch.bfloat16 if dev.type == "cuda" else torch.float32}
    source = model_dir
    if mode == "qlora-nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"bitsandbytes is not installed ({exc})") from exc
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
            llm_int8_skip_modules=["transformer.visual", "lm_head"],
        )
        kwargs["device_map"] = {"": str(dev)}
    elif mode == "qlora-gptq":
        if not gptq_dir:
            raise RuntimeError(
                "needs a GPTQ checkpoint of this size (--gptq_dir; quantize with qwenvl-train merge)"
            )
        source = Path(gptq_dir)
        kwargs["device_map"] = {"": str(dev)}
    try:
        model = QwenVLForCausalLM.from_pretrained(source, attn_implementation=attn, **kwargs)
    except (ValueError, ImportError) as exc:
        if attn == "eager":
            raise
        print(f"  attn_implementation={attn} refused ({str(exc).splitlines()[0]}); eager instead")
        attn = "eager"
        model = QwenVLForCausalLM.from_pretrained(source, attn_implementation=attn, **kwargs)
    if "device_map" not in kwargs:
        model.to(dev)
    if mode.startswith("qlora"):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=64,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=LORA_TARGETS,
        modules_to_save=["wte", "lm_head"] if mode == "lora-base" else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config).train(), attn


def eager_loss(model, sample: dict, n_items: int) -> torch.Tensor:  # noqa: ANN001
    """The eager path: full logits, then transformers' causal-LM loss over them."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    out = model(
        input_ids=sample["input_ids"],
        pixel_values=sample["pixel_values"],
        return_logits=True,
        use_cache=False,
    )
    return ForCausalLMLoss(
        out.logits, sample["labels"], vocab_size=out.logits.shape[-1], num_items_in_batch=n_items
    )


def optimized_loss(cache: VisionFeatureCache) -> Callable:
    def loss(model, sample: dict, n_items: int) -> torch.Tensor:  # noqa: ANN001
        features = cache.features(sample["pixel_values"])
        return model(
            input_ids=sample["input_ids"],
            image_features=features,
            labels=sample["labels"],
            num_items_in_batch=n_items,
            use_cache=False,
        ).loss

    return loss


class Runner:
    """One path of one mode: a model, its loss, its optimizer, and the iteration it times."""

    def __init__(self, model, loss_fn: Callable, samples: list[dict], accum: int, dev: torch.device) -> None:  # noqa: ANN001
        self.model, self.loss_fn, self.accum, self.dev = model, loss_fn, accum, dev
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-5)
        self.batches = [{k: v.to(dev) for k, v in s.items()} for s in samples]
        self.count = 0

    def iteration(self) -> float:
        """One iteration (``accum`` micro-batches, one optimizer step); its seconds."""
        k, accum = self.count, self.accum
        self.count += 1
        group = self.batches[(k * accum) % len(self.batches) :][:accum]
        group += self.batches[: accum - len(group)]
        n_items = int(sum(int((s["labels"][:, 1:] != -100).sum()) for s in group))
        synchronize(self.dev)
        start = time.perf_counter()
        for sample in group:
            self.loss_fn(self.model, sample, n_items).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.dev)
        return time.perf_counter() - start

    def step_memory(self) -> float:
        """GiB an iteration allocates above what is resident before it (weights, optimizer state, cache):
        the CUDA allocator's peak, or on CPU the live tensors tracked op by op (untimed)."""
        if self.dev.type == "cuda":
            synchronize(self.dev)
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.iteration()
            return (torch.cuda.max_memory_allocated() - before) / 2**30
        with TensorMemory() as memory:
            self.iteration()
        return memory.peak / 2**30


def run_mode(args: argparse.Namespace, model_dir: Path, mode: str, length: int, peak: float) -> list[Result]:
    """Both paths of ``mode`` at ``length``: warm-up, one untimed iteration for memory, then ``iters`` timed
    iterations taken in turns (eager, optimized, eager, ...) so that a shared machine's load falls on both alike;
    the median is reported."""
    dev = device()
    config = QwenVLConfig.from_pretrained(model_dir)
    samples = synthetic_samples(config, length, args.accum)
    tokens = length * args.accum
    labelled = sum(int((s["labels"][:, 1:] != -100).sum()) for s in samples)
    runners: dict[str, Runner] = {}
    notes: dict[str, str] = {}
    cache_dir = tempfile.mkdtemp(prefix="vision-cache-")
    try:
        for path in ("eager", "optimized"):
            try:
                model, used = build(
                    model_dir, mode, "eager" if path == "eager" else args.attn, dev, args.gptq_dir
                )
            except (RuntimeError, ImportError) as exc:
                print(f"  skip {mode}: {str(exc).splitlines()[0]}")
                return []
            if path == "eager":
                loss_fn: Callable = eager_loss
                notes[path] = "full logits, tower every step"
            else:
                visual = model.get_base_model().transformer.visual
                loss_fn = optimized_loss(VisionFeatureCache(cache_dir, visual))
                notes[path] = f"attn {used}, chunked loss, vision cache"
            runners[path] = Runner(model, loss_fn, samples, args.accum, dev)
        memory = {}
        for path, runner in runners.items():
            for _ in range(args.warmup):
                runner.iteration()
            memory[path] = runner.step_memory()
        times: dict[str, list[float]] = {path: [] for path in runners}
        for _ in range(args.iters):
            for path, runner in runners.items():
                times[path].append(runner.iteration())
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    results = []
    for path in runners:
        seconds = statistics.median(times[path])
        flops = model_flops(
            config, tokens, labelled, args.accum, head_trains=mode == "lora-base", tower=path == "eager"
        )
        results.append(
            Result(
                mode,
                path,
                length,
                seconds,
                tokens / seconds,
                memory[path],
                flops / seconds / peak,
                notes[path],
            )
        )
    del runners
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return results


def print_table(results: list[Result]) -> None:
    print()
    header = f"{'mode':<11} {'len':>5} {'path':<10} {'s/it':>8} {'tokens/s':>9} {'step GiB':>9} {'MFU':>6} {'ratio':>6}  note"
    print(header)
    print("-" * len(header))
    eager: dict[tuple[str, int], float] = {}
    for r in results:
        if r.path == "eager":
            eager[(r.mode, r.length)] = r.seconds
            ratio = ""
        else:
            ratio = f"{r.seconds / eager[(r.mode, r.length)]:.3f}"
        print(
            f"{r.mode:<11} {r.length:>5} {r.path:<10} {r.seconds:>8.3f} {r.tokens_per_s:>9.1f} {r.peak_gib:>9.2f} "
            f"{100 * r.mfu:>5.1f}% {ratio:>6}  {r.note}"
        )
    print("ratio = optimized s/it / eager s/it (lower is better)")
    print(
        "step GiB = peak memory an iteration allocates above the resident weights, optimizer state and cache"
    )


# ------------------------------------------------------------------------------------------------ loss memory


def loss_memory(token_counts: list[int], hidden: int, chunk: int, eager_max: int) -> None:
    """Peak tensor memory of the loss (forward + backward) against the number of labelled tokens."""
    vocab = 151936
    # Frozen, as in LoRA on a chat checkpoint: the figures are then the loss's own, not the head's gradient.
    head = torch.nn.Linear(hidden, vocab, bias=False).requires_grad_(False)
    print()
    print(
        f"loss alone, forward + backward, hidden {hidden}, vocabulary {vocab}, frozen head, chunk {chunk} "
        "(MiB of the tensors the loss creates)"
    )
    header = (
        f"{'labelled':>9} {'chunked peak':>13} {'largest':>8} {'eager peak':>11} {'full fp32 logits':>17}"
    )
    print(header)
    print("-" * len(header))
    for n in token_counts:
        hidden_states = torch.randn(1, n + 1, hidden, requires_grad=True)
        labels = torch.randint(0, vocab, (1, n + 1))
        with TensorMemory() as mem:
            labelled_cross_entropy(hidden_states, head, labels, chunk_size=chunk).backward()
        eager = "-"
        if n <= eager_max:
            with TensorMemory() as full:
                logits = head(hidden_states).float()
                F.cross_entropy(logits[0, :-1], labels[0, 1:]).backward()
                del logits
            eager = f"{full.peak / 2**20:.0f}"
        print(
            f"{n:>9} {mem.peak / 2**20:>13.0f} {mem.largest / 2**20:>8.0f} {eager:>11} {n * vocab * 4 / 2**20:>17.0f}"
        )


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size", choices=["medium", "full", "tiny"], default="medium", help="tiny: smoke runs"
    )
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=None, help="default: 384 (CPU), 384 512 1024 2048"
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=None, help="default: lora-chat (CPU), all"
    )
    parser.add_argument(
        "--accum", type=int, default=None, help="micro-batches per iteration (default 2 CPU, 8 GPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed iterations first (they fill the cache)"
    )
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 3 CPU, 5 GPU)")
    parser.add_argument("--attn", default="sdpa", help="attention of the optimized path (eager if refused)")
    parser.add_argument("--gptq_dir", default=None, help="a GPTQ checkpoint of --size, for qlora-gptq")
    parser.add_argument("--loss_tokens", type=int, nargs="*", default=[256, 1024, 2048, 4096])
    parser.add_argument("--loss_chunk", type=int, default=1024)
    parser.add_argument(
        "--loss_eager_max", type=int, default=1024, help="largest count the full-logits loss runs"
    )
    parser.add_argument("--model_dir", default=None, help="reuse a checkpoint written by an earlier run")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    args.lengths = args.lengths or ([384, 512, 1024, 2048] if gpu else [384])
    args.modes = args.modes or (list(MODES) if gpu else ["lora-chat"])
    args.accum = args.accum or (8 if gpu else 2)
    args.iters = args.iters or (5 if gpu else 3)
    return args


def versions() -> Iterator[str]:
    import peft
    import transformers

    yield f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
    yield f"peft {peft.__version__}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dev = device()
    if args.size == "full" and dev.type != "cuda":
        raise SystemExit(
            "train_step.py: --size full (9.66B parameters) needs a GPU; use --size medium on a CPU"
        )
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name} | load average {load_average()} | {''.join(versions())}")
    peak = matmul_peak(dev)
    print(f"measured matmul peak: {peak / 1e12:.3f} TFLOP/s ({'bf16' if dev.type == 'cuda' else 'fp32'})")
    print(
        f"size {args.size}, lengths {args.lengths}, batch 1 x accum {args.accum}, warm-up {args.warmup}, "
        f"timed {args.iters}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else write_model(args.size, Path(tmp) / args.size)
        results: list[Result] = []
        for mode in args.modes:
            for length in args.lengths:
                print(f"running {mode} at {length} tokens ...", flush=True)
                results += run_mode(args, model_dir, mode, length, peak)
    print_table(results)
    if args.loss_tokens:
        loss_memory(
            args.loss_tokens, size_config(args.size)["hidden_size"], args.loss_chunk, args.loss_eager_max
        )
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
