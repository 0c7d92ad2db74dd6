"""Loading the tokenizer and model, and preparing the model for its tuning mode (full, lora, qlora).

The model has three parts, named after the original checkpoints' parameters (``vit``, ``resampler``, ``llm``:
:mod:`qwenvl_train.model.parameter_names`).

Parameters the model itself creates frozen (the resampler's fixed sin-cos ``pos_embed``) stay frozen in every
mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..errors import UserError
from ..model.parameter_names import expand_lora_targets, matches_target, part_of
from ..model.visual_config import with_image_size
from .arguments import Arguments, LoraArguments, ModelArguments, QuantArguments
from .base_checkpoint import quant_method, resolve_kind

#: Trained next to the adapters for a base checkpoint: it has never seen the ChatML special tokens.
BASE_MODULES_TO_SAVE = ["wte", "lm_head"]


class PreparationError(UserError, RuntimeError):
    """The requested preparation cannot be done with this checkpoint, model or device (``--quant`` that does not
    fit the weights, a ``--lora_target`` the model lacks, ...); options that cannot go together are refused while
    parsing (:mod:`.validate`)."""


def is_chat_checkpoint(model_name_or_path: str, kind: str = "auto") -> bool:
    """True for a chat checkpoint (Qwen-VL-Chat), False for a base one (Qwen-VL).

    ``kind`` ``chat``/``base`` decides; ``auto`` asks the checkpoint's own files (see
    :func:`.base_checkpoint.resolve_kind`), which raises when they do not say.
    """
    return resolve_kind(model_name_or_path, kind) == "chat"


def checkpoint_quant_method(model_name_or_path: str) -> str | None:
    """How the checkpoint's weights are quantized (``gptq`` for Qwen-VL-Chat-Int4: ``quantization_config`` in
    config.json, or auto-gptq's quantize_config.json), or None."""
    return quant_method(model_name_or_path)


def load_dtype(model_args: ModelArguments, bf16: bool) -> torch.dtype:
    """dtype to load the (unquantized) weights in."""
    if model_args.dtype != "auto":
        return getattr(torch, model_args.dtype)
    return torch.bfloat16 if bf16 else torch.float32


def quantization_config(model_args: ModelArguments, quant_args: QuantArguments) -> Any | None:
    """The quantization config to load with: NF4 through bitsandbytes, or None (full/lora, or a GPTQ checkpoint,
    whose own ``quantization_config`` transformers applies through gptqmodel)."""
    if resolve_quant(model_args, quant_args) != "nf4":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=quant_args.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, quant_args.compute_dtype),
        # The vision tower and the output head stay in full precision.
        llm_int8_skip_modules=["transformer.visual", "lm_head"],
    )


def resolve_quant(model_args: ModelArguments, quant_args: QuantArguments) -> str | None:
    """``--quant`` made definite for qlora (``nf4`` or ``gptq``, from the checkpoint's own files under ``auto``);
    None in the other modes.

    Raises:
        PreparationError: ``--quant`` does not fit the checkpoint's weights.
    """
    if model_args.tune != "qlora":
        return None
    method = checkpoint_quant_method(model_args.model_name_or_path)
    quant = quant_args.quant
    if quant == "auto":
        quant = "gptq" if method == "gptq" else "nf4"
    if quant == "gptq" and method != "gptq":
        raise PreparationError(
            f"--quant gptq: {model_args.model_name_or_path} has no GPTQ quantization_config in its config.json "
            "(nor a quantize_config.json)"
        )
    if quant == "nf4" and method is not None:
        raise PreparationError(
            f"--quant nf4: {model_args.model_name_or_path} is already quantized ({method})"
        )
    return quant


def load_tokenizer(args: Arguments) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, right-padded with ``<|endoftext|>`` at the training length."""
    tokenizer = AutoTokenizer.from_pretrained(
        args.model.model_name_or_path, model_max_length=args.data.model_max_length, padding_side="right"
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def load_model(args: Arguments) -> nn.Module:
    """The model as the mode needs it: full precision, or with a 4-bit LLM for qlora."""
    model_args = args.model
    kwargs: dict[str, Any] = {"dtype": load_dtype(model_args, args.training.bf16)}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quant = quantization_config(model_args, args.quant)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if model_args.tune == "qlora":
        # 4-bit weights are placed once, on this process's device (no later .to() is allowed).
        kwargs["device_map"] = {"": _local_device()}
    if model_args.image_size is not None:
        # The config is what every saved folder writes, so they all record the size the run trained at.
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
        kwargs["config"] = with_image_size(config, model_args.image_size)
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)


def _local_device() -> str | int:
    import os

    if torch.cuda.is_available():
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


@dataclass
class ParameterCounts:
    """Trainable and total parameter counts (ZeRO-3 partitioned parameters are counted in full)."""

    trainable: int
    total: int


def count_parameters(model: nn.Module) -> ParameterCounts:
    """Trainable/total parameters; a 4-bit parameter counts as the number of weights it packs.

    The total is the model's weights counted once, plus the adapters: for a module peft trains in full
    (``modules_to_save``: ``wte``/``lm_head`` of a base checkpoint) only the trainable copy counts, not the frozen
    ``original_module`` peft keeps beside it.
    """
    copies = {id(p) for module in model.modules() if _is_modules_to_save(module)
              for p in module.original_module.parameters()}  # fmt: skip
    trainable = total = 0
    for param in model.parameters():
        if id(param) in copies:
            continue
        n = getattr(param, "ds_numel", None) or param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit weights per uint8 element
        total += n
        if param.requires_grad:
            trainable += n
    return ParameterCounts(trainable=trainable, total=total)


def _is_modules_to_save(module: nn.Module) -> bool:
    """A peft wrapper holding a frozen ``original_module`` and trainable ``modules_to_save`` copies of it."""
    return type(module).__name__ == "ModulesToSaveWrapper" and len(getattr(module, "modules_to_save", ())) > 0


def prepare_model(model: nn.Module, args: Arguments) -> nn.Module:
    """Freeze/unfreeze for ``--tune full``, or wrap with LoRA adapters for ``lora``/``qlora``. ``args`` are checked
    already (:func:`.validate.validate`: the freeze flags fit the mode and leave something to train).

    Returns:
        The model to train (a ``PeftModel`` in lora/qlora mode).
    """
    set_loss_backend(model, args.training.loss_backend, args.training.device)
    if args.model.tune == "full":
        return prepare_full(model, args.model)
    if args.model.tune == "qlora":
        from peft import prepare_model_for_kbit_training

        # Activation checkpointing itself is switched on by the Trainer, like in every mode.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # The kind only matters for the default --modules_to_save (and may be undecidable when they are given).
    chat = args.lora.modules_to_save is not None or is_chat_checkpoint(
        args.model.model_name_or_path, args.model.checkpoint_kind
    )
    model = add_lora(model, args.lora, chat=chat)
    if args.training.activation_checkpointing:
        # The embeddings are frozen, so without this the checkpointed blocks would see inputs that do not
        # require grad and (with reentrant checkpointing) the adapters inside them would get no gradient.
        model.enable_input_require_grads()
    return model


def set_loss_backend(model: nn.Module, requested: str, device: torch.device) -> str:
    """Resolve ``--loss_backend`` on the training device (probing cut-cross-entropy once) and set it on the model.

    Raises:
        PreparationError: ``cce`` was asked for and cannot run here.
    """
    from ..model.cce import LossBackendError, resolve_loss_backend

    try:
        backend = resolve_loss_backend(requested, device)
    except LossBackendError as error:
        raise PreparationError(str(error)) from None
    if hasattr(model, "loss_backend"):
        model.loss_backend = backend
    return backend


def prepare_full(model: nn.Module, model_args: ModelArguments) -> nn.Module:
    """Set ``requires_grad`` part by part from ``--freeze_vit/--freeze_resampler/--freeze_llm`` (which
    :func:`.validate.check_freeze_flags` made sure leave something to train)."""
    frozen_parts = {
        part
        for part, frozen in (
            ("vit", model_args.freeze_vit),
            ("resampler", model_args.freeze_resampler),
            ("llm", model_args.freeze_llm),
        )
        if frozen
    }
    fixed = fixed_parameters(model)
    for name, param in model.named_parameters():
        param.requires_grad_(part_of(name) not in frozen_parts and name not in fixed)
    return model


def fixed_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters the model keeps frozen by design (the resampler's sin-cos ``pos_embed``)."""
    return {name for name, param in model.named_parameters() if name.endswith("attn_pool.pos_embed")}


def split_lora_targets(model: nn.Module, targets: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--lora_target``, its part names expanded (:func:`~qwenvl_train.model.parameter_names.expand_lora_targets`),
    into module targets and parameter targets.

    A target naming a parameter rather than a module (the resampler's ``attn_pool.attn.in_proj_weight``, stored
    like ``nn.MultiheadAttention``'s) goes to peft's ``target_parameters``.
    """
    param_names = [name for name, _ in model.named_parameters()]
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    targets = expand_lora_targets(targets, linear + param_names)
    modules, params = [], []
    for target in targets:
        is_param = any(matches_target(n, [target]) for n in param_names)
        (params if is_param else modules).append(target)
    module_names = [name for name, _ in model.named_modules()]
    for target in modules:
        if not any(matches_target(n, [target]) for n in module_names):
            raise PreparationError(
                f"--lora_target {target}: no module or parameter of the model has that name"
            )
    return modules, params


def add_lora(model: nn.Module, lora_args: LoraArguments, chat: bool) -> nn.Module:
    """Wrap ``model`` with LoRA adapters; a base checkpoint (``chat`` False) also trains ``wte`` and ``lm_head`` in
    full unless ``--modules_to_save`` says otherwise."""
    from peft import LoraConfig, get_peft_model

    modules, params = split_lora_targets(model, lora_args.lora_target)
    modules_to_save = lora_args.modules_to_save
    if modules_to_save is None:
        modules_to_save = [] if chat else list(BASE_MODULES_TO_SAVE)
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        # peft refuses dropout on a parameter LoRA: the config says none, and the module adapters get theirs below.
        lora_dropout=0.0 if params else lora_args.lora_dropout,
        target_modules=modules or None,
        target_parameters=params or None,
        bias=lora_args.lora_bias,
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    if params and lora_args.lora_dropout:
        set_module_dropout(model, lora_args.lora_dropout)
    return model


def set_module_dropout(model: nn.Module, p: float) -> int:
    """Give every module LoRA layer (not the parameter ones, peft's ``ParamWrapper``) dropout ``p`` on its input, as
    ``LoraConfig(lora_dropout=p)`` would have; returns how many layers got it."""
    from peft.tuners.lora import LoraLayer, ParamWrapper

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLayer) and not isinstance(module, ParamWrapper):
            for adapter in module.lora_dropout:
                module.lora_dropout[adapter] = nn.Dropout(p=p)
                count += 1
    return count


def has_parameter_adapters(model: nn.Module) -> bool:
    """Whether a LoRA adapter sits on a parameter (peft ``target_parameters``) rather than on a module."""
    from peft.tuners.lora import ParamWrapper

    return any(isinstance(module, ParamWrapper) for module in model.modules())


def check_adapter_holds_trainables(model: nn.Module) -> None:
    """Every trainable tensor must be in what ``save_pretrained`` writes, or training would be silently lost.

    Raises:
        PreparationError: naming the first trainable parameter the adapter would drop.
    """
    from peft import get_peft_model_state_dict

    saved = {t.data_ptr() for t in get_peft_model_state_dict(model).values()}
    for name, param in model.named_parameters():
        if param.requires_grad and param.data_ptr() not in saved:
            raise PreparationError(
                f"{name} trains but would not be saved in the adapter; add its module to --modules_to_save"
            )


def summarize_trainable(model: nn.Module) -> dict[str, str]:
    """Per part, whether it is ``trainable``, ``frozen`` or ``partly`` trainable (for the start summary)."""
    seen: dict[str, set[bool]] = {}
    for name, param in model.named_parameters():
        seen.setdefault(part_of(name), set()).add(param.requires_grad)
    return {
        part: "trainable" if flags == {True} else "frozen" if flags == {False} else "partly"
        for part, flags in seen.items()
    }
