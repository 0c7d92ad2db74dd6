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


#: ``--lora_target llm``: the language model's attention and gated MLP (the default targets).
LLM_LORA_TARGETS = ("c_attn", "attn.c_proj", "w1", "w2")
#: ``--lora_target resampler``: the cross-attention's fused q/k/v (a parameter, like ``nn.MultiheadAttention``'s,
#: so a parameter LoRA), its output projection and the projection of the ViT's output to the keys/values.
RESAMPLER_LORA_TARGETS = ("attn_pool.attn.in_proj_weight", "attn_pool.attn.out_proj", "attn_pool.kv_proj")
#: ``--lora_target vit``: in every ViT block, the attention's fused in_proj and out_proj and the MLP.
VIT_LORA_SUFFIXES = (".attn.in_proj", ".attn.out_proj", ".mlp.c_fc", ".mlp.c_proj")
#: The part names ``--lora_target`` accepts beside module and parameter names.
LORA_PARTS = ("llm", "resampler", "vit")


def expand_lora_targets(targets: Iterable[str], adaptable: Iterable[str]) -> list[str]:
    """``--lora_target`` with its part names replaced by what they stand for; other names are kept as given.

    ``llm`` becomes :data:`LLM_LORA_TARGETS` (suffixes, as the default); ``resampler`` becomes those of
    :data:`RESAMPLER_LORA_TARGETS` the model has (a resampler whose widths agree has no ``kv_proj``); ``vit``
    becomes the full names of the ViT blocks' modules ending in :data:`VIT_LORA_SUFFIXES` (full names, because
    the LLM's MLP has a ``c_proj`` too and the resampler an ``attn.out_proj``).

    Args:
        targets: ``--lora_target`` as given.
        adaptable: names of the modules that can hold an adapter (linear layers) and of the parameters.
    """
    names = [name.removeprefix(PEFT_PREFIX) for name in adaptable]
    expanded: list[str] = []
    for target in targets:
        if target == "llm":
            found = list(LLM_LORA_TARGETS)
        elif target == "resampler":
            found = [t for t in RESAMPLER_LORA_TARGETS if any(matches_target(n, [t]) for n in names)]
        elif target == "vit":
            found = [n for n in names if part_of(n) == "vit" and n.endswith(VIT_LORA_SUFFIXES)]
        else:
            found = [target]
        expanded += [t for t in found if t not in expanded]
    return expanded
