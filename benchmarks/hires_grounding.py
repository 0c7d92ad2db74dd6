"""Does LoRA on the resampler and the ViT recover grounding at a higher resolution where LLM-only LoRA does not?

    PYTHONPATH=src python benchmarks/hires_grounding.py --work /tmp/hires   # run 3 of BENCHMARKS.md (~30 min, 2 cores)
    PYTHONPATH=src python benchmarks/hires_grounding.py --base_steps 100 --base_train 400 --n_train 64 \
        --n_heldout 16 --lora_steps 20 --batch 8 --lora_r 8 --lora_lr 1e-3 --placement free   # the first runs

Every training and generation step is the product's own command line, in a child process, as in ``make demo``:

1. the demo model (``make-tiny --preset demo``, 56 px) trained in full on the demo data (``demo-data``, recipe
   ``finetune/demo.yaml``) for ``--base_steps`` steps: the grounding model to adapt (kept in ``WORK/base``, and
   reused when the script runs again on the same ``--work``);
2. a grounding set of small shapes, ``--n_train`` training and ``--n_heldout`` held-out conversations: 8 px
   shapes centred in the cells of an 8 x 8 grid of the 224 px picture (``--placement grid``: 2 px at 56 px,
   4 px at 112 px; a cell is half a 14 px patch at 56 px and one patch at 112 px), or 6 to 12 px shapes anywhere
   (``free``);
3. at 2 x the resolution (112 px) and at the original (56 px): held-out Acc@0.5 and mean IoU (``eval``) of the
   model before fine-tuning, then after ``--lora_steps`` steps of LoRA (recipe ``finetune/demo-lora.yaml`` with
   ``--lora_r``, alpha 2 x r, ``--lora_lr``, ``--lora_schedule`` and ``--image_size N``) on ``llm``,
   ``llm resampler`` and ``llm resampler vit``, same steps and seed; beside them how many answers held a box, the
   median distance between the predicted and the true centre (in the [0, 1000) coordinates), the share of boxes
   whose centre is within half a grid cell of the truth, the share of questions whose true cell the model ranks
   first among the 64 candidate answers (:func:`cell_ranking`, in this process; grid placement only), and the
   first training loss and the mean of the last ten the run logged.

The table it prints (and ``WORK/results.json``) is what BENCHMARKS.md shows, whatever it shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qwenvl_train.demo.data import BACKGROUNDS, COLOURS, SHAPES, Shape, draw_shape, grounding_answer
from qwenvl_train.format.markup import image_markup
from qwenvl_train.model.visual_config import vision_settings

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = (("llm",), ("llm", "resampler"), ("llm", "resampler", "vit"))
#: Sides of the small shapes on the 224 px picture, placed anywhere (``--placement free``).
SMALL_SIDES = (6, 12)
#: ``--placement grid``: cells per side of the fine grid (28 px cells on the 224 px picture, half a 14 px patch
#: at 56 px, one patch at 112 px) and the side of the shape centred in its cell (2 px at 56 px, 4 px at 112 px).
FINE_GRID = 8
GRID_SIDE = 8
MAX_NEW_TOKENS = 40
#: A predicted centre this close to the reference centre (in [0, 1000) units) is "near": half a fine-grid cell.
NEAR = 1000 / FINE_GRID / 2


def grid_cell_shape(colour: str, kind: str, col: int, row: int, canvas: int = 224) -> Shape:
    """The ``GRID_SIDE`` px shape centred in cell ``(col, row)`` of the ``FINE_GRID`` grid."""
    cell = canvas // FINE_GRID
    offset = (cell - GRID_SIDE) // 2
    x0, y0 = col * cell + offset, row * cell + offset
    return Shape(colour, kind, x0, y0, x0 + GRID_SIDE, y0 + GRID_SIDE)


def small_shape(rng: random.Random, placement: str = "grid", canvas: int = 224) -> Shape:
    """A small shape of random colour and kind: centred in a random cell of the ``FINE_GRID`` grid
    (``grid``), or ``SMALL_SIDES`` px wide anywhere on the picture (``free``)."""
    if placement == "grid":
        col, row = rng.randrange(FINE_GRID), rng.randrange(FINE_GRID)
        return grid_cell_shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), col, row, canvas)
    side = rng.randint(*SMALL_SIDES)
    x0, y0 = rng.randrange(canvas - side), rng.randrange(canvas - side)
    return Shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), x0, y0, x0 + side, y0 + side)


def write_small_shapes(
    folder: Path, n_train: int, n_heldout: int, seed: int, placement: str = "grid"
) -> tuple[Path, Path]:
    """``train.json`` and ``heldout.json`` of one-picture grounding questions about one small shape each."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    splits = []
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        samples = []
        for i in range(n):
            shape = small_shape(rng, placement)
            relative = f"images/{split}{i}.png"
            draw_shape(shape, rng.choice(BACKGROUNDS)).save(folder / relative)
            question = image_markup(1, relative) + f"Where is {shape.name(False)}?"
            samples.append({"id": f"{split}{i}", "conversations": [
                {"from": "user", "value": question},
                {"from": "assistant", "value": grounding_answer(shape, False)}]})  # fmt: skip
        path = folder / f"{split}.json"
        path.write_text(json.dumps(samples, ensure_ascii=False, indent=1))
        splits.append(path)
    return splits[0], splits[1]


def cli(*args: str) -> str:
    """``qwenvl-train ARGS`` in a child process; stop if it fails. Returns its output (stdout, then stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [sys.executable, "-m", "qwenvl_train", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"qwenvl-train {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def logged_losses(run: Path) -> list[float]:
    """The training losses the Trainer logged in ``run`` (its ``trainer_state.json``), in order."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def at_size(model: Path, size: int, folder: Path) -> Path:
    """``model`` with ``visual.image_size`` = ``size`` in its config.json (the other files linked)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in model.iterdir():
        if path.name != "config.json" and path.is_file():
            (folder / path.name).symlink_to(path.resolve())
    config = json.loads((model / "config.json").read_text())
    config["visual"] = {**config["visual"], "image_size": size}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def centre_errors(samples: list[dict]) -> list[float]:
    """Distances, in [0, 1000) units, between the centres of each predicted box and its reference."""
    errors = []
    for sample in samples:
        for box in sample.get("boxes", []):
            if box["predicted"] is not None:
                (a, b, c, d), (e, f, g, h) = box["reference"], box["predicted"]
                errors.append(((a + c - e - g) ** 2 + (b + d - f - h) ** 2) ** 0.5 / 2)
    return errors


def cell_ranking(model: Path, heldout: Path, n_queries: int) -> float:
    """The share of held-out questions (grid placement) for which ``model`` ranks the true cell first among the
    ``FINE_GRID`` ** 2 candidate answers (the question's ``<ref>`` with the box of each cell), by the summed loss
    of the answer's tokens after the prompt: where the model believes the shape is, without the greedy decoding
    of digits. Chance is 1 / 64. The product's own pieces do it: ``load_for_inference`` (which applies an
    adapter's recorded image size), the chat prompt of ``make_context`` and ``eval --benchmark``'s option
    losses (``eval_mm.choice``)."""
    import torch

    from qwenvl_train.data.images import image_tensor
    from qwenvl_train.eval_mm.choice import option_losses
    from qwenvl_train.eval_mm.generation import prompt_ids
    from qwenvl_train.format.markup import grounding_markup
    from qwenvl_train.format.render import make_context
    from qwenvl_train.inference.loading import load_for_inference
    from qwenvl_train.model.visual_config import adapter_visual

    loaded, tokenizer = load_for_inference(str(model), device="cpu")
    size = int(adapter_visual(model).get("image_size") or vision_settings(model).image_size)
    cells = [(col, row) for row in range(FINE_GRID) for col in range(FINE_GRID)]
    right = 0
    samples = json.loads(heldout.read_text())
    for sample in samples:
        query, reference = (turn["value"] for turn in sample["conversations"][:2])
        ref = reference[len("<ref>") : reference.index("</ref>")]
        answers = [grounding_markup(ref, [grid_cell_shape("red", "square", c, r).box()]) for c, r in cells]
        context = make_context(tokenizer, query, n_queries=n_queries)
        pixels = torch.stack([image_tensor(str(heldout.parent / path), size) for path in context.images])
        targets = [prompt_ids(tokenizer, answer, n_queries) for answer in answers]
        losses = option_losses(loaded, [context.input_ids], [targets], pixels, [len(context.images)])[0]
        totals = [loss * len(target) for loss, target in zip(losses, targets, strict=True)]
        right += answers.index(reference) == min(range(len(totals)), key=totals.__getitem__)
    return right / max(len(samples), 1)


def evaluate(model: Path, heldout: Path, out: Path, n_queries: int, ranked: bool) -> dict:
    """``eval``'s metrics of ``model`` on ``heldout``, with the localisation figures of :func:`centre_errors`:
    ``predicted`` boxes, ``centre_median`` and ``near`` (the share of reference boxes whose predicted centre
    is within ``NEAR`` units); and, when ``ranked`` (grid placement), ``cell@1`` of :func:`cell_ranking`."""
    cli("eval", "--model", str(model), "--data", str(heldout), "--out", str(out),
        "--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size", "16")  # fmt: skip
    result = json.loads(out.read_text())
    metrics, errors = result["metrics"], centre_errors(result["samples"])
    references = sum(len(sample.get("boxes", [])) for sample in result["samples"])
    metrics["predicted"] = len(errors)
    metrics["centre_median"] = statistics.median(errors) if errors else None
    metrics["near"] = sum(error < NEAR for error in errors) / max(references, 1)
    metrics["cell@1"] = cell_ranking(model, heldout, n_queries) if ranked else None
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="keep everything here (default: a temp folder)"
    )
    parser.add_argument("--base_steps", type=int, default=300)
    parser.add_argument("--base_train", type=int, default=2000, help="demo-data conversations for the base")
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_heldout", type=int, default=128)
    parser.add_argument("--lora_steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lora_r", type=int, default=32, help="LoRA rank (alpha = 2 x rank)")
    parser.add_argument("--lora_lr", type=float, default=2e-3, help="LoRA peak learning rate")
    parser.add_argument(
        "--lora_schedule",
        choices=("cosine", "constant"),
        default="constant",
        help="constant: finetune/demo-lora.yaml's; cosine: 10%% warm-up, then cosine decay",
    )
    parser.add_argument("--scale", type=int, default=2, help="the higher resolution, in multiples of 56 px")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="the image sizes to run (default: 56 x scale, then 56)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--placement",
        choices=("grid", "free"),
        default="grid",
        help="small shapes centred in the cells of a fine grid, or anywhere (the first runs of BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="hires-"))
    start = time.perf_counter()
    model, demo_data = work / "model", work / "demo-data"
    if not (work / "base" / "config.json").is_file():
        cli("make-tiny", str(model), "--preset", "demo", "--seed", str(args.seed))
        cli(
            "demo-data",
            str(demo_data),
            "--n",
            str(args.base_train),
            "--n-heldout",
            "8",
            "--seed",
            str(args.seed),
        )
        cli("train", "--config", str(ROOT / "finetune/demo.yaml"), "--model_name_or_path", str(model),
            "--data_path", str(demo_data / "train.json"), "--output_dir", str(work / "base"),
            "--max_steps", str(args.base_steps), "--per_device_train_batch_size", str(args.batch),
            "--seed", str(args.seed))  # fmt: skip
    base = work / "base"
    train_json, heldout = write_small_shapes(
        work / "small", args.n_train, args.n_heldout, args.seed + 1, args.placement
    )
    n_queries = vision_settings(base).n_queries
    ranked = args.placement == "grid"
    rows = []
    for size in args.sizes or (56 * args.scale, 56):
        shutil.rmtree(work / f"base{size}", ignore_errors=True)
        before = evaluate(
            at_size(base, size, work / f"base{size}"),
            heldout,
            work / f"eval-before-{size}.json",
            n_queries,
            ranked,
        )
        rows.append((size, "before fine-tuning", before))
        for targets in VARIANTS:
            name = "+".join(targets)
            out = work / f"lora-{size}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            cli("train", "--config", str(ROOT / "finetune/demo-lora.yaml"),
                "--model_name_or_path", str(base), "--data_path", str(train_json), "--output_dir", str(out),
                "--image_size", str(size), "--lora_target", *targets, "--max_steps", str(args.lora_steps),
                "--lora_r", str(args.lora_r), "--lora_alpha", str(2 * args.lora_r),
                "--learning_rate", str(args.lora_lr), "--lr_scheduler_type", args.lora_schedule,
                "--warmup_steps", str(args.lora_steps // 10 if args.lora_schedule == "cosine" else 0),
                "--per_device_train_batch_size", str(args.batch),
                "--seed", str(args.seed))  # fmt: skip
            metrics = evaluate(out, heldout, work / f"eval-{size}-{name}.json", n_queries, ranked)
            losses = logged_losses(out)
            tail = losses[-10:]
            metrics["loss_first_last"] = (losses[0], sum(tail) / len(tail)) if losses else None
            rows.append((size, f"LoRA {' + '.join(targets)}", metrics))
    seconds = time.perf_counter() - start
    print(f"demo model trained {args.base_steps} steps at 56 px on {args.base_train} demo conversations; small "
          f"shapes ({args.placement}) {args.n_train} train / {args.n_heldout} held-out; LoRA r={args.lora_r} "
          f"alpha={2 * args.lora_r} lr {args.lora_lr:g} {args.lora_schedule}, "
          f"{args.lora_steps} steps of batch {args.batch}, seed {args.seed}; {seconds:.0f} s")  # fmt: skip
    print(
        f"| image_size | model | Acc@0.5 | mean IoU | boxes | centre error (median) | near (< {NEAR:.1f}) "
        f"| true cell ranked first (of {FINE_GRID**2}) | LoRA loss, first -> mean of the last 10 logged |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, label, m in rows:
        median = "-" if m["centre_median"] is None else f"{m['centre_median']:.0f}"
        loss = "" if not m.get("loss_first_last") else "{:.2f} -> {:.2f}".format(*m["loss_first_last"])
        cell = "-" if m["cell@1"] is None else f"{m['cell@1']:.3f}"
        print(f"| {size} | {label} | {m.get('acc@0.5', 0.0):.3f} | {m.get('mean_iou', 0.0):.3f} | "
              f"{m['predicted']} / {m['samples']} | {median} | {m['near']:.3f} | {cell} | {loss} |")  # fmt: skip
    (work / "results.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds,
                    "rows": [{"image_size": size, "model": label, **m} for size, label, m in rows]}, indent=1)
    )  # fmt: skip
    print(f"(files in {work}; the rows in results.json)")


if __name__ == "__main__":
    main()
