"""One step of the GPU check kit (``check.sh`` runs each in its own process, under its own time limit), or the
report that gathers them:

    python benchmarks/gpu/check.py STEP --work DIR [--dry-run]
    python benchmarks/gpu/check.py report --work DIR --out DIR [--dry-run]

Steps: ``setup`` (versions, device, what is installed; then the random checkpoints the others use), ``parity``, ``lora``, ``qlora``, ``lora-base``, ``cli``, ``generate``,
``eval``, ``serve``, ``hires``. Each writes ``DIR/parts/STEP.json`` after
every measurement; ``report`` turns the parts and ``DIR/status.tsv`` (each step's exit status and seconds, written
by check.sh) into ``check.json`` and ``check.md``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from kit_common import ROOT, STEPS, Part, Plan, device, elapsed, gib, model_dir, plan

# ------------------------------------------------------------------------------------------------ setup


PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "cut_cross_entropy",
    "flash_attn",
    "flash_attn_3",
    "triton",
    "safetensors",
    "tiktoken",
    "tokenizers",
    "huggingface_hub",
    "regex",
    "numpy",
    "pillow",
)


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def run_setup(part: Part, work: Path, plan_: Plan) -> None:
    """Versions, where each package is imported from (the carried site folder or the machine's), the device, the
    work folder's free space and whether the product imports; then the checkpoints of the other steps."""
    part["install"] = {
        "status": os.environ.get("GPUKIT_INSTALL", "not run"),
        "seconds": float(os.environ.get("GPUKIT_INSTALL_SECONDS", "0") or 0),
        "note": os.environ.get("GPUKIT_INSTALL_NOTE", ""),
    }
    pins = lock_pins()
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        dist = {"pillow": "pillow", "cut_cross_entropy": "cut-cross-entropy"}.get(
            name, name.replace("_", "-")
        )
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
            continue
        module = "PIL" if name == "pillow" else name
        try:
            where = str(Path(importlib.import_module(module).__file__).parent.parent)
        except Exception as exc:  # noqa: BLE001 - installed but broken: say so
            where = f"import failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        versions[name] = f"{version} ({where})"
        if dist in pins and pins[dist] != version and name not in ("torch",):
            part.note(f"{dist} {version}, requirements.lock pins {pins[dist]}")
    part["versions"] = versions
    dev = device()
    info = {"device": str(dev), "torch_cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(gib(props.total_memory), 1),
            multiprocessors=props.multi_processor_count,
        )
    part["device"] = info
    usage = shutil.disk_usage(work)
    part["work"] = {"path": str(work), "free_gib": round(gib(usage.free), 1)}
    import qwenvl_train.model  # noqa: F401  (the product imports, with the transformers it found)

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qwenvl_train", "--help"], capture_output=True, text=True, timeout=60
    )
    commands = done.stdout
    part["cli_help_seconds"] = elapsed(start)
    part["serve_command"] = " serve " in commands or "\n    serve" in commands
    if not part["serve_command"]:
        part.note("no serve command in this version: the serve step will fail")
    for line in plan_.notes:
        part.note(line)
    write_models(part, work, plan_)


# ------------------------------------------------------------------------------------------------ checkpoints


def write_full_on_gpu(folder: Path, dev: torch.device) -> dict:
    """The full Qwen-VL-Chat shape (tests/reference/qwen-vl-chat/config.json) with random weights drawn on the GPU
    and saved in bf16, as the real checkpoint ships: the 38 GB fp32 CPU path of make_tiny would take minutes.
    The other files (generation and tokenizer config, the vocabulary) are make_tiny's."""
    from kit_common import train_step
    from safetensors.torch import save_file

    aux = train_step.write_model("tiny", folder.parent / f"{folder.name}-aux")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("generation_config.json", "tokenizer_config.json", "qwen.tiktoken"):
        shutil.copy(aux / name, folder / name)
    shutil.rmtree(aux)
    config_dict = train_step.size_config("full")
    config_dict.pop("_name_or_path", None)
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
    config = train_step.QwenVLConfig.from_pretrained(folder)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dev):
        model = train_step.QwenVLForCausalLM(config)
    built = elapsed(start)
    state = {
        name: (t.to(torch.bfloat16) if t.is_floating_point() else t).detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
    }
    parameters = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    start = time.perf_counter()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return {"parameters": parameters, "build_seconds": built, "save_seconds": elapsed(start)}


def write_models(part: Part, work: Path, plan_: Plan) -> None:
    """The checkpoints of the other steps: ``big`` (training, CLI, generation) and ``mid`` (parity)."""
    from kit_common import train_step

    dev = device()
    big, mid = model_dir(work, "big"), model_dir(work, "mid")
    for which, size, folder in (("big", plan_.big, big), ("mid", plan_.mid, mid)):
        start = time.perf_counter()
        if which == "mid" and size == plan_.big:
            folder.symlink_to(big.name)
            info: dict = {"same_as": "big"}
        elif size == "full" and dev.type == "cuda":
            info = write_full_on_gpu(folder, dev)
        else:
            train_step.write_model(size, folder)
            info = {}
        files = sum(f.stat().st_size for f in folder.resolve().glob("*.safetensors"))
        part.row(
            model=which,
            size=size,
            path=str(folder),
            weights_gib=round(gib(files), 2),
            seconds=elapsed(start),
            **info,
        )


# ------------------------------------------------------------------------------------------------ main


#: Each step's function, as "module:function" (imported only for the step that runs: the cli step's process, for
#: one, never imports the model).
RUNNERS = {
    "parity": "kit_parity:run",
    "lora": "kit_train:run_lora",
    "qlora": "kit_train:run_qlora",
    "lora-base": "kit_train:run_lora_base",
    "cli": "kit_cli:run",
    "generate": "kit_generate:run",
    "eval": "kit_eval:run",
    "serve": "kit_serve:run",
    "hires": "kit_hires:run",
}


def runner(step: str):  # noqa: ANN201
    if step == "setup":
        return run_setup
    module, function = RUNNERS[step].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=[*STEPS, "report"])
    parser.add_argument("--work", required=True, type=Path, help="the kit's work folder (models, parts)")
    parser.add_argument("--out", type=Path, help="report: where check.json and check.md go")
    parser.add_argument("--dry-run", action="store_true", help="CPU, small models")
    args = parser.parse_args(argv)
    if args.step == "report":
        import kit_report

        return kit_report.write(args.work, args.out, args.dry_run)
    part = Part(args.work, args.step, args.dry_run)
    try:
        runner(args.step)(part, args.work, plan(args.dry_run))
    except Exception as exc:  # noqa: BLE001 - recorded in the part; the report shows it
        traceback.print_exc()
        part["error"] = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )
        part["state"] = "error"
        return 1
    failed = [row for row in part["rows"] if row.get("pass") is False]
    part["state"] = "fail" if failed else "ok"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
