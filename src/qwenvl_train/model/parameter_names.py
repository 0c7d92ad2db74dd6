"""The parts of the model by parameter name, as the original checkpoints name them (pure Python: the preparation,
the pre-flight memory check, the vision cache and the Trainer's optimizer groups all read names, not modules).

- ``vit``: the vision transformer, ``transformer.visual.*`` except the resampler;
- ``resampler``: ``transformer.visual.attn_pool.*`` (what the original unfroze on top of a frozen ViT);
- ``llm``: everything else (``transformer.wte``, ``transformer.h.N``, ``transformer.ln_f``, ``lm_head``).
"""

from __future__ import annotations

from collections.abc import Iterable

VIT_PREFIX = "transformer.visual."
RESAMPLER_PREFIX = "transformer.visual.attn_pool."
#: Prefix peft puts in front of the base model's parameter names.
PEFT_PREFIX = "base_model.model."


def part_of(name: str) -> str:
    """Which part (``vit``, ``resampler`` or ``llm``) a parameter belongs to; peft prefixes are ignored."""
    name = name.removeprefix(PEFT_PREFIX)
    if name.startswith(RESAMPLER_PREFIX):
        return "resampler"
    if name.startswith(VIT_PREFIX):
        return "vit"
    return "llm"


def matches_target(name: str, targets: Iterable[str]) -> bool:
    """Whether a module or parameter ``name`` is named by one of ``targets`` (``--lora_target``,
    ``--modules_to_save``): the name itself, or a dotted suffix of it (``attn.c_proj`` names
    ``transformer.h.0.attn.c_proj``, not ``transformer.h.0.mlp.c_proj``). The one place this rule is written."""
    return any(name == target or name.endswith("." + target) for target in targets)
