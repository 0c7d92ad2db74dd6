"""Load a model (and a LoRA adapter) for chat and evaluation.

A model folder has ``config.json``; an adapter folder, as training saves it, has ``adapter_config.json`` (naming
its base in ``base_model_name_or_path``) and no ``config.json``. ``--model`` may be either: given an adapter
folder alone, the base it names is loaded under it. The adapter's LoRA layers are injected into the model and
stay unmerged (exactly what training computed; ``qwenvl-train merge`` writes a merged copy); the picture size
the adapter was trained at (its ``visual_config.json``, ``train --image_size``) replaces its base's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..model.visual_config import adapter_visual, with_image_size


class LoadError(UserError, ValueError):
    """A model or adapter folder cannot be used; one line saying why."""


def _adapter_base(adapter: Path) -> str | None:
    try:
        return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise LoadError(f"{adapter}/adapter_config.json: cannot read ({exc})") from None


def resolve_folders(model: str | None, adapter: str | None) -> tuple[Path, Path | None]:
    """``(model folder, adapter folder or None)`` from ``--model`` / ``--adapter``.

    Raises:
        LoadError: a folder is missing or of the wrong kind, or the base an adapter names is not a model folder.
    """
    model_dir = Path(model) if model else None
    adapter_dir = Path(adapter) if adapter else None
    if model_dir is not None and not (model_dir / "config.json").is_file():
        if (model_dir / "adapter_config.json").is_file() and adapter_dir is None:
            model_dir, adapter_dir = None, model_dir  # --model names an adapter: its base goes under it
        else:
            raise LoadError(f"--model {model_dir}: not a model folder (no config.json)")
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise LoadError(f"--adapter {adapter_dir}: not an adapter folder (no adapter_config.json)")
    if model_dir is None:
        if adapter_dir is None:
            raise LoadError("pass --model DIR (a model folder, or an adapter folder as training saves it)")
        base = _adapter_base(adapter_dir)
        if not base or not (Path(base) / "config.json").is_file():
            raise LoadError(
                f"{adapter_dir}: its base model {base!r} (adapter_config.json) is not a model folder here; "
                "pass it with --model DIR"
            )
        model_dir = Path(base)
    return model_dir, adapter_dir


def torch_dtype(name: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU that supports it, float32 otherwise."""
    import torch

    if name == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_for_inference(
    model: str | None, adapter: str | None = None, dtype: str = "auto", device: str | None = None
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` ready to generate: eval mode, on ``device`` (default: the GPU when there is one).

    The tokenizer comes from the model folder, or from the adapter folder when the model folder has no
    ``qwen.tiktoken``.

    Raises:
        LoadError: see :func:`resolve_folders`; no ``qwen.tiktoken`` in either folder.
    """
    model_dir, adapter_dir = resolve_folders(model, adapter)  # a bad folder fails before torch loads
    vocab_dirs = [d for d in (model_dir, adapter_dir) if d is not None and (d / "qwen.tiktoken").is_file()]
    if not vocab_dirs:
        raise LoadError(
            f"{model_dir}: no qwen.tiktoken (run `qwenvl-train vocab --dest {model_dir}` to put it there)"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(vocab_dirs[0]))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs: dict[str, Any] = {}
    trained_size = adapter_visual(adapter_dir).get("image_size")
    if trained_size is not None:  # the adapter was trained at another picture size than its base says
        from transformers import AutoConfig

        kwargs["config"] = with_image_size(AutoConfig.from_pretrained(str(model_dir)), trained_size)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch_dtype(dtype, device), device_map={"": device}, **kwargs
    )
    if adapter_dir is not None:
        from peft import PeftModel

        # The adapters stay injected in the model's modules: generate on the model itself.
        loaded = PeftModel.from_pretrained(loaded, str(adapter_dir)).get_base_model()
    return loaded.eval(), tokenizer
