"""Command-line arguments of ``qwenvl-train train``: four dataclasses plus an extended ``TrainingArguments``.

Every field carries its help text, so ``--help`` documents itself. ``--config FILE.yaml`` may supply any field of
any of them (a flat mapping ``field: value``); options given on the command line win over the file.

Defaults follow the original Qwen-VL scripts where they were sound: learning rate 1e-5 (full) / 1e-4 (LoRA,
Q-LoRA), weight decay 0.1, Adam beta2 0.95, warmup 1% of the steps, cosine schedule, 2048 tokens.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import transformers
import yaml
from transformers import HfArgumentParser

from ..data.options import DataOptions
from ..errors import ConfigurationError
from ..model.parameter_names import LLM_LORA_TARGETS
from .validate import UsageError, check_device_options, validate

TUNE_MODES = ("full", "lora", "qlora")
#: Options of a config file that name another file (see :func:`resolve_config_paths`).
CONFIG_PATH_OPTIONS = ("deepspeed", "fsdp_config")
DEFAULT_LEARNING_RATE = {"full": 1e-5, "lora": 1e-4, "qlora": 1e-4}
DEFAULT_LORA_TARGETS = list(LLM_LORA_TARGETS)


@dataclass
class ModelArguments:
    """Which checkpoint to train, and which of its parts train."""

    model_name_or_path: str = field(
        default="Qwen/Qwen-VL-Chat",
        metadata={"help": "Checkpoint directory (original Qwen-VL format) or hub id."},
    )
    tune: str = field(
        default="full",
        metadata={
            "help": "Tuning mode: full (every unfrozen weight trains), lora (low-rank adapters on a frozen base) "
            "or qlora (adapters on a 4-bit base: bitsandbytes NF4, or the checkpoint's own GPTQ weights).",
            "choices": list(TUNE_MODES),
        },
    )
    freeze_vit: bool = field(
        default=True,
        metadata={
            "help": "full mode: keep the vision transformer (transformer.visual, except attn_pool) frozen."
        },
    )
    freeze_resampler: bool = field(
        default=False,
        metadata={"help": "full mode: keep the resampler (transformer.visual.attn_pool) frozen."},
    )
    freeze_llm: bool = field(
        default=False,
        metadata={"help": "full mode: keep the language model (wte, blocks, ln_f, lm_head) frozen."},
    )
    checkpoint_kind: str = field(
        default="auto",
        metadata={
            "help": "chat or base checkpoint. In lora/qlora mode a base checkpoint also trains wte and lm_head "
            "(saved in the adapter), since it has never seen the ChatML tokens. auto: chat when the "
            "checkpoint's generation_config.json says chat_format 'chatml', base otherwise.",
            "choices": ["auto", "chat", "base"],
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention kernel passed to from_pretrained: eager (the original's operations), sdpa, "
            "flex_attention, flash_attention_2/3 or a registered kernel; default: the model's choice (sdpa)."
        },
    )
    vision_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the frozen-vision feature cache: each image's vision-tower output is computed once, "
            "stored (safetensors, keyed by the pixels, the vision weights and the compute dtype) and reused in "
            "later epochs and runs. Needs the whole tower frozen (full: --freeze_vit --freeze_resampler; "
            "lora/qlora: no transformer.visual targets); not with ZeRO-3 or FSDP."
        },
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Side in pixels the pictures are resized to (a multiple of 14, at least 56): the ViT sees "
            "(N/14)^2 patches, its 16 x 16 position table and the resampler's are interpolated as the original "
            "does, and the language model still sees n_queries (256) tokens per picture. Every folder the run "
            "writes records N (config.json's visual.image_size; an adapter folder's visual_config.json), so "
            "chat, eval, serve, merge and the original code use N. Default: the checkpoint's (448)."
        },
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "dtype the weights are loaded in. auto: bfloat16 with --bf16, float32 otherwise (fp16 mixed "
            "precision needs float32 master weights).",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )


@dataclass
class DataArguments(DataOptions):
    """Where the conversations are, and the data options ``check-data`` shares (see ``data/options.py``)."""

    data_path: list[str] = field(
        default_factory=lambda: ["data/train.json"],
        metadata={
            "help": "Training data: JSON/JSONL files of conversations in the Qwen-VL fine-tuning format "
            "(image paths relative to each file's folder).",
            "nargs": "+",
        },
    )
    eval_data_path: list[str] | None = field(
        default=None,
        metadata={
            "help": "Optional evaluation data, same format: eval_loss at each evaluation (default: --eval_data).",
            "nargs": "+",
        },
    )
    eval_data: list[str] | None = field(
        default=None,
        metadata={
            "help": "Held-out conversations answered by generation at each evaluation and at the end of training, "
            "scored as `qwenvl-train eval` does: eval_acc@0.5 and eval_mean_iou (box answers), eval_exact_match "
            "(other answers). Also used for eval_loss when --eval_data_path is not given.",
            "nargs": "+",
        },
    )
    eval_benchmark: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=FILE (repeatable): an original eval_mm benchmark (qwenvl-train eval --benchmark names) asked "
            "and scored at each evaluation as `eval --benchmark` does, logged as eval_<NAME>_<metric> (e.g. "
            "eval_textvqa_val_vqa_accuracy); add ,questions=Q.json,annotations=A.json where the metric needs them. "
            "Needs --eval_data or --eval_data_path (the evaluation's loss).",
            "nargs": "+",
            "action": "extend",
        },
    )
    eval_max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "--eval_data: most tokens generated per answer (default: the generation_config's)."
        },
    )


@dataclass
class LoraArguments:
    """Low-rank adapters (lora and qlora modes)."""

    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={
            "help": "What gets adapters: the part names llm (the language model's attention and gated MLP: "
            "c_attn attn.c_proj w1 w2, the default), resampler (attn_pool.attn.in_proj_weight as a parameter "
            "LoRA, attn_pool.attn.out_proj, attn_pool.kv_proj) and vit (every ViT block's attn.in_proj, "
            "attn.out_proj, mlp.c_fc, mlp.c_proj), and/or module or parameter names (or dotted suffixes). "
            "--lora_dropout applies to module targets; parameter targets have none (peft's limit).",
            "nargs": "+",
        },
    )
    lora_bias: str = field(
        default="none",
        metadata={"help": "Which biases train with LoRA.", "choices": ["none", "all", "lora_only"]},
    )
    modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules trained in full next to the adapters and saved in the adapter file. Default: "
            "wte and lm_head for a base checkpoint (see --checkpoint_kind), none for a chat checkpoint.",
            "nargs": "*",
        },
    )


@dataclass
class QuantArguments:
    """How the base is quantized in qlora mode. The vision tower is never quantized."""

    quant: str = field(
        default="auto",
        metadata={
            "help": "auto: gptq when the checkpoint's config.json has a GPTQ quantization_config (like "
            "Qwen-VL-Chat-Int4), else nf4. nf4: load a bf16/fp32 checkpoint in 4 bits through bitsandbytes.",
            "choices": ["auto", "nf4", "gptq"],
        },
    )
    double_quant: bool = field(
        default=True, metadata={"help": "nf4: quantize the quantization constants too."}
    )
    compute_dtype: str = field(
        default="bfloat16",
        metadata={"help": "nf4: dtype of the 4-bit matmuls.", "choices": ["bfloat16", "float16", "float32"]},
    )


CHECKPOINTING_ON = ("full", "true", "yes", "on")
CHECKPOINTING_OFF = ("off", "false", "no", "none")


def checkpointing_every(value: Any) -> int:
    """``--activation_checkpointing`` as "checkpoint every k-th block": ``full``/``true`` -> 1, ``off``/``false``
    -> 0, an integer ``k >= 0`` -> ``k`` (``1`` is full, ``0`` is off).

    Raises:
        ValueError: anything else.
    """
    if value is None or isinstance(value, bool):
        return int(bool(value))
    text = str(value).strip().lower()
    if text in CHECKPOINTING_ON:
        return 1
    if text in CHECKPOINTING_OFF:
        return 0
    if text.isdigit():
        return int(text)
    raise ValueError(
        f"--activation_checkpointing takes full, off (or true/false) or an integer k (every k-th block), got {value!r}"
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' TrainingArguments with the original Qwen-VL recipe's defaults."""

    activation_checkpointing: str | None = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "help": "Recompute activations in the backward pass to save memory: 'full' (every block; a bare flag "
            "or 'true' means the same), an integer k (only every k-th block of the language model and of the "
            "vision tower, from the first: less memory saved, less recomputation), or 'off'/'false'.",
            "nargs": "?",
            "const": "full",
        },
    )

    output_dir: str | None = field(
        default="output_qwen", metadata={"help": "Where checkpoints and the model go."}
    )
    learning_rate: float = field(
        default=DEFAULT_LEARNING_RATE["full"],
        metadata={"help": "Peak learning rate. Default: 1e-5 for --tune full, 1e-4 for lora and qlora."},
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    warmup_steps: float = field(
        default=0.01,
        metadata={"help": "Linear warmup: an integer number of steps, or a fraction in [0, 1) of all steps."},
    )
    lr_scheduler_type: str = field(  # type: ignore[assignment]
        default="cosine",
        metadata={
            "help": "Learning-rate schedule (the ds_configs define none, so this is the one that runs)."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep every collated field (pixel_values is not a dataset column)."}
    )

    vision_lr: float | None = field(
        default=None,
        metadata={
            "help": "Peak learning rate of the vision tower and resampler (transformer.visual.*, when they train); "
            "they follow the same schedule. Default: --learning_rate. A tower trained from scratch (make demo) "
            "needs a lower one than the language model."
        },
    )

    loss_backend: str = field(
        default="auto",
        metadata={
            "help": "Output layer + cross-entropy: 'auto' uses cut-cross-entropy when the package is installed, "
            "training runs on CUDA and a one-time probe call works, else the chunked path (one log line says "
            "why); 'chunked' always the chunked path; 'cce' cut-cross-entropy or stop with an error.",
            "choices": ["auto", "chunked", "cce"],
        },
    )

    packing: bool = field(
        default=False,
        metadata={
            "help": "Padding-free packing: concatenate shuffled samples into one row per micro-batch, up to "
            "--packing_tokens tokens packed best fit (longest first into the tightest room), each sample "
            "attending only to itself (positions restart at 0). Replaces "
            "length grouping and --per_device_train_batch_size for training batches; the loss of every sample "
            "is that of the unpacked run."
        },
    )
    packing_tokens: int | None = field(
        default=None,
        metadata={
            "help": "--packing: tokens per micro-batch. Default: per_device_train_batch_size x model_max_length "
            "(never more than a padded batch holds)."
        },
    )

    def __post_init__(self) -> None:
        every = checkpointing_every(self.activation_checkpointing)
        self.activation_checkpointing = every > 0
        super().__post_init__()
        if every > 1:
            kwargs = dict(self.activation_checkpointing_kwargs or {})
            if kwargs.get("every_n_layers", every) != every:
                raise ValueError(
                    f"--activation_checkpointing {every} disagrees with every_n_layers="
                    f"{kwargs['every_n_layers']} in --activation_checkpointing_kwargs"
                )
            self.activation_checkpointing_kwargs = {**kwargs, "every_n_layers": every}

    @property
    def checkpointing_every(self) -> int:
        """Every how many blocks activations are checkpointed: 0 = off, 1 = full, k."""
        if not self.activation_checkpointing:
            return 0
        return int((self.activation_checkpointing_kwargs or {}).get("every_n_layers", 1))


ARGUMENT_CLASSES = (ModelArguments, DataArguments, LoraArguments, QuantArguments, TrainingArguments)


@dataclass
class Arguments:
    """Everything ``train()`` needs, parsed and resolved."""

    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    quant: QuantArguments
    training: TrainingArguments


def build_parser() -> HfArgumentParser:
    """The parser of ``qwenvl-train train`` (every dataclass field, plus ``--config``)."""
    parser = HfArgumentParser(ARGUMENT_CLASSES, prog="qwenvl-train train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="YAML mapping of any of these options (field: value); the command line wins over it.",
    )
    parser.add_argument(
        "--preflight_only",
        action="store_true",
        help="Run the checks made before anything loads (options, checkpoint, output folder, disk space), then "
        "exit: 0 when training could start, 1 with the reason. A launcher runs it once before torchrun.",
    )

    def one_line_error(message: str) -> NoReturn:
        # The usage of every option would fill screens: the error alone, and where the options are listed.
        sys.stderr.write(f"{parser.prog}: error: {message} (`{parser.prog} --help` lists the options)\n")
        sys.exit(2)

    parser.error = one_line_error  # type: ignore[method-assign]
    return parser


def load_config_file(path: str | Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a YAML config; every key must be a known option and every value pass the same type and choice
    checks as on the command line (``checkpoint_kind: Chat`` is refused, ``learning_rate: 1e-5`` becomes a float).

    Raises:
        ConfigurationError: (a ``ValueError``) one line naming the file and the key.
    """
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigurationError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(values, dict):
        raise ConfigurationError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    actions = {
        action.dest: action
        for action in parser._actions
        if action.dest not in ("help", "config", "preflight_only")
    }
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigurationError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return {key: _check_value(path, key, value, actions[key]) for key, value in values.items()}


def _check_value(path: str | Path, key: str, value: Any, action: argparse.Action) -> Any:
    """``value`` converted by the option's type and checked against its choices, as argparse would."""
    many = action.nargs in ("+", "*")
    if isinstance(value, list) and not many:
        raise ConfigurationError(f"{path}: {key}: expected one value, got a list")
    items = value if isinstance(value, list) else [value]
    converted = []
    for item in items:
        if item is True and action.nargs == "?" and action.const is True:
            converted.append(
                item
            )  # what the bare flag gives (``fsdp: true`` as ``--fsdp``), not the string "True"
            continue
        if item is not None and action.type is not None:
            try:
                item = action.type(item if isinstance(item, (str, bool)) else str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                kind = getattr(action.type, "__name__", "value")
                raise ConfigurationError(f"{path}: {key}: {item!r} is not a valid {kind}") from None
        if item is not None and action.choices is not None and item not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigurationError(f"{path}: {key}: {item!r} is not one of {choices}")
        converted.append(item)
    return converted if many and isinstance(value, list) else converted[0] if not many else converted


def resolve_config_paths(values: dict[str, Any], config: str | Path) -> dict[str, Any]:
    """``values`` with each relative :data:`CONFIG_PATH_OPTIONS` path made absolute: taken from the current folder
    when it exists there, else from the config file's folder or the nearest folder above it where it exists (so
    ``deepspeed: ds_configs/zero2.json`` in ``finetune/*.yaml`` works from any folder). A path found nowhere is
    left as written, for the error to name it."""
    resolved = dict(values)
    for name in CONFIG_PATH_OPTIONS:
        value = values.get(name)
        if not isinstance(value, str) or Path(value).is_absolute() or Path(value).exists():
            continue
        folder = Path(config).resolve().parent
        for candidate in (folder, *folder.parents):
            if (candidate / value).exists():
                resolved[name] = str(candidate / value)
                break
    return resolved


def parse_args(argv: Sequence[str] | None = None) -> Arguments:
    """Parse the command line and ``--config`` (the command line wins); the lr default follows ``--tune``. Every
    check that needs only the options is made here (:mod:`.validate`), before anything loads.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when None.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--tune", default=None)
    known, _ = pre.parse_known_args(argv)
    file_values = (
        resolve_config_paths(load_config_file(known.config, parser), known.config) if known.config else {}
    )
    check_device_options(argv, file_values)
    # The learning-rate default depends on the mode, and must be known before TrainingArguments.__post_init__
    # (which fills DeepSpeed's "auto" values from it).
    tune = known.tune or file_values.get("tune", ModelArguments.tune)
    if tune not in TUNE_MODES:
        parser.error(f"--tune must be one of {', '.join(TUNE_MODES)}, got {tune!r}")
    # As parser defaults, so anything given on the command line overrides the file.
    parser.set_defaults(**{"learning_rate": DEFAULT_LEARNING_RATE[tune], **file_values})
    # Returns the five dataclasses, a namespace holding --config and --preflight_only, and what is left.
    try:
        model, data, lora, quant, training, _, unknown = parser.parse_args_into_dataclasses(
            argv, return_remaining_strings=True
        )
    except ValueError as error:  # a value the dataclasses refuse: one line, as argparse's own errors
        parser.error(str(error))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args = Arguments(model=model, data=data, lora=lora, quant=quant, training=training)
    if training.packing and training.packing_tokens is None:
        training.packing_tokens = training.per_device_train_batch_size * data.model_max_length
    try:
        validate(args)
    except UsageError as error:
        parser.error(str(error))
    return args


def check_devices_only(argv: Sequence[str]) -> None:
    """:func:`.validate.check_device_options` for a command line (and its ``--config`` file) without building the training
    arguments, which would set up devices and, under ``--ddp_backend``/``--deepspeed``, expect a process group: what
    a launcher runs once before torchrun (``train --check_devices_only ...``).

    Raises:
        ConfigurationError: a bad ``--config`` file, or a GPU-only option on a machine without CUDA.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    file_values = load_config_file(known.config, build_parser()) if known.config else {}
    check_device_options(argv, file_values)
