"""Does LoRA on the resampler and the ViT recover grounding at a higher resolution where LLM-only LoRA does not?

    PYTHONPATH=src python benchmarks/hires_grounding.py                      # the small run of BENCHMARKS.md
    PYTHONPATH=src python benchmarks/hires_grounding.py --base_steps 300 --n_train 2000 --lora_steps 100

Every step is the product's own command line, in a child process, as in ``make demo``:

1. the demo model (``make-tiny --preset demo``, 56 px) trained in full on the demo data (``demo-data``, recipe
   ``finetune/demo.yaml``) for ``--base_steps`` steps: the grounding model to adapt;
2. a grounding set of small shapes (6 to 12 px on a 224 px picture: 1.5 to 3 px at 56 px, a fraction of one 14 px
   patch), ``--n_train`` training and ``--n_heldout`` held-out conversations;
3. at 2 x the resolution (112 px) and at the original (56 px): held-out Acc@0.5 and mean IoU (``eval``) of the
   model before fine-tuning, then after ``--lora_steps`` steps of LoRA (recipe ``finetune/demo-lora.yaml``,
   ``--image_size N``) on ``llm``, ``llm resampler`` and ``llm resampler vit``, same steps and seed.

The table it prints is what BENCHMARKS.md shows, whatever it shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qwenvl_train.demo.data import BACKGROUNDS, COLOURS, SHAPES, Shape, draw_shape, grounding_answer
from qwenvl_train.format.markup import image_markup

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = (("llm",), ("llm", "resampler"), ("llm", "resampler", "vit"))
#: Sides of the small shapes on the 224 px picture.
SMALL_SIDES = (6, 12)
MAX_NEW_TOKENS = 40


def small_shape(rng: random.Random, canvas: int = 224) -> Shape:
    """A shape of random colour and kind, ``SMALL_SIDES`` px wide, anywhere on the picture."""
    side = rng.randint(*SMALL_SIDES)
    x0, y0 = rng.randrange(canvas - side), rng.randrange(canvas - side)
    return Shape(rng.choice(list(COLOURS)), rng.choice(SHAPES), x0, y0, x0 + side, y0 + side)


def write_small_shapes(folder: Path, n_train: int, n_heldout: int, seed: int) -> tuple[Path, Path]:
    """``train.json`` and ``heldout.json`` of one-picture grounding questions about one small shape each."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    splits = []
    for split, n in (("train", n_train), ("heldout", n_heldout)):
        samples = []
        for i in range(n):
            shape = small_shape(rng)
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


def cli(*args: str) -> None:
    """``qwenvl-train ARGS`` in a child process (output kept short); stop if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(
        [sys.executable, "-m", "qwenvl_train", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"qwenvl-train {' '.join(args)} failed:\n{done.stderr[-3000:]}")


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


def evaluate(model: Path, heldout: Path, out: Path) -> dict:
    cli("eval", "--model", str(model), "--data", str(heldout), "--out", str(out),
        "--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size", "16")  # fmt: skip
    return json.loads(out.read_text())["metrics"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="keep everything here (default: a temp folder)"
    )
    parser.add_argument("--base_steps", type=int, default=100)
    parser.add_argument("--base_train", type=int, default=400, help="demo-data conversations for the base")
    parser.add_argument("--n_train", type=int, default=64)
    parser.add_argument("--n_heldout", type=int, default=16)
    parser.add_argument("--lora_steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--scale", type=int, default=2, help="the higher resolution, in multiples of 56 px")
    parser.add_argument("--seed", type=int, default=0)
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
    train_json, heldout = write_small_shapes(work / "small", args.n_train, args.n_heldout, args.seed + 1)
    rows = []
    for size in (56 * args.scale, 56):
        shutil.rmtree(work / f"base{size}", ignore_errors=True)
        before = evaluate(
            at_size(base, size, work / f"base{size}"), heldout, work / f"eval-before-{size}.json"
        )
        rows.append((size, "before fine-tuning", before))
        for targets in VARIANTS:
            name = "+".join(targets)
            out = work / f"lora-{size}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            cli("train", "--config", str(ROOT / "finetune/demo-lora.yaml"), "--model_name_or_path", str(base),
                "--data_path", str(train_json), "--output_dir", str(out), "--image_size", str(size),
                "--lora_target", *targets, "--max_steps", str(args.lora_steps),
                "--per_device_train_batch_size", str(args.batch), "--seed", str(args.seed))  # fmt: skip
            rows.append(
                (
                    size,
                    f"LoRA {' + '.join(targets)}",
                    evaluate(out, heldout, work / f"eval-{size}-{name}.json"),
                )
            )
    print(f"demo model trained {args.base_steps} steps at 56 px on {args.base_train} demo conversations; small-shape "
          f"set {args.n_train} train / {args.n_heldout} held-out; LoRA r=8 lr 1e-3, {args.lora_steps} steps of "
          f"batch {args.batch}, seed {args.seed}; {time.perf_counter() - start:.0f} s")  # fmt: skip
    print(f"{'image_size':>10}  {'model':<30}{'Acc@0.5':>9}{'mean IoU':>10}{'samples':>9}")
    print("-" * 70)
    for size, label, m in rows:
        print(
            f"{size:>10}  {label:<30}{m.get('acc@0.5', 0.0):>9.3f}{m.get('mean_iou', 0.0):>10.3f}{m['samples']:>9}"
        )
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
