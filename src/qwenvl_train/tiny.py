"""Tiny random Qwen-VL checkpoints in the ORIGINAL on-disk layout, for tests and smoke runs::

    python -c "from qwenvl_train.tiny import make_tiny; make_tiny('runs/tiny')"

The directory looks like a downloaded Qwen-VL-Chat (``config.json`` with ``model_type: "qwen"``, ``auto_map`` and
a ``visual`` dict, ``generation_config.json``, ``tokenizer_config.json``, the genuine ``qwen.tiktoken``) but the
model is small: hidden 128, 2 layers, a 2-layer 64-wide vision tower on 56 px images (4 x 4 patches) and 16
resampler queries. The vocabulary keeps its 151,936 rows because the special tokens go up to id 151,859.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .outputs import ordinary_mode

#: config.json of the tiny model, in the original format (keys and auto_map as Qwen-VL-Chat ships them).
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["QWenLMHeadModel"],
    "auto_map": {
        "AutoConfig": "configuration_qwen.QWenConfig",
        "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
    },
    "attn_dropout_prob": 0.0,
    "bf16": False,
    "emb_dropout_prob": 0.0,
    "fp16": False,
    "fp32": False,
    "hidden_size": 128,
    "initializer_range": 0.02,
    "intermediate_size": 256,
    "kv_channels": 32,
    "layer_norm_epsilon": 1e-06,
    "max_position_embeddings": 8192,
    "model_type": "qwen",
    "no_bias": True,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "onnx_safe": None,
    "rotary_emb_base": 10000,
    "rotary_pct": 1.0,
    "scale_attn_weights": True,
    "seq_length": 2048,
    "tie_word_embeddings": False,
    "tokenizer_type": "QWenTokenizer",
    "torch_dtype": "float32",
    "transformers_version": "4.31.0",
    "use_cache": True,
    "use_dynamic_ntk": True,
    "use_flash_attn": False,
    "use_logn_attn": True,
    "visual": {
        "heads": 4,
        "image_size": 56,
        "image_start_id": 151857,
        "layers": 2,
        "mlp_ratio": 2.0,
        "n_queries": 16,
        "output_dim": 128,
        "patch_size": 14,
        "width": 64,
    },
    "vocab_size": 151936,
}

#: generation_config.json of Qwen-VL-Chat.
GENERATION_CONFIG: dict[str, Any] = {
    "chat_format": "chatml",
    "do_sample": True,
    "eos_token_id": 151643,
    "max_new_tokens": 512,
    "max_window_size": 6144,
    "pad_token_id": 151643,
    "top_k": 0,
    "top_p": 0.3,
    "transformers_version": "4.31.0",
}

#: tokenizer_config.json of Qwen-VL-Chat, with the tiny model's shorter context.
TOKENIZER_CONFIG: dict[str, Any] = {
    "model_max_length": 2048,
    "tokenizer_class": "QWenTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]},
}


#: Overrides of the ``demo`` preset (``make-tiny --preset demo``): the model ``make demo`` trains from random
#: weights. Its vision tower sees 56 px pictures as 4 x 4 patches, one per cell of the demo data's 4 x 4 grid,
#: and the resampler keeps one query per patch; the language model is 2 layers of width 128 (the resampler's
#: minimum); its 151,936-row output layer is what costs most on a CPU.
DEMO_OVERRIDES: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 512,
    "kv_channels": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "visual": {"image_size": 56, "width": 128, "layers": 2, "heads": 4, "n_queries": 16, "output_dim": 128},
}

#: Named sets of overrides for ``make_tiny(preset=...)`` and ``qwenvl-train make-tiny --preset``.
PRESETS: dict[str, dict[str, Any]] = {"tiny": {}, "demo": DEMO_OVERRIDES}

#: Weights a preset draws again after the model's own random init, from a normal of the given std. The demo
#: model's vision tower starts from random weights, and the language model can only tell where a shape is from
#: the position embedding carried in the tower's features (the resampler's values hold no position, and the
#: language model reads its image tokens through attention, which keeps no order). At the original's std
#: (width ** -0.5, about 0.09, further shrunk by resizing the 16 x 16 table to the 4 x 4 grid) that signal is a
#: few percent of the features and training learns to ignore it. Measured on the demo data, batch 16: an
#: attention-pooling reader of the tower learns the 25 box positions in about 100 steps at std 0.9 but reaches
#: only 0.22 in 600 at the original std; the whole demo model (language model lr 3e-3, tower 1e-3) gets every
#: box digit right (teacher-forced, held out) on 0.2 of the samples after 275 steps at std 0.9 and on 0.95 at
#: std 2.65; make demo's held-out Acc@0.5 stayed at 0.0-0.16 at the original std in every recipe tried.
#: A pretrained tower has strong positions in its features; only a tower trained from scratch needs this.
PRESET_INIT_STD: dict[str, dict[str, float]] = {
    "tiny": {},
    "demo": {"transformer.visual.positional_embedding": 2.5},
}


def tiny_config_dict(**overrides: Any) -> dict[str, Any]:
    """The tiny ``config.json`` content with ``overrides`` applied (a ``visual`` override is merged key by key)."""
    config = copy.deepcopy(TINY_CONFIG)
    visual = overrides.pop("visual", None)
    config.update(overrides)
    if visual:
        config["visual"].update(visual)
    return config


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def make_tiny(out_dir: str | Path, seed: int = 0, preset: str = "tiny", **overrides: Any) -> Path:
    """Write a tiny random Qwen-VL checkpoint (original layout, weights as ``model.safetensors``) to ``out_dir``.

    Args:
        out_dir: folder to create (or fill).
        seed: RNG seed; the same seed and overrides give identical weights.
        preset: a key of ``PRESETS`` (``tiny``, or ``demo``: the model ``make demo`` trains); ``overrides`` apply
            on top of it.
        **overrides: config.json keys to change, e.g. ``seq_length=16`` or ``visual={"n_queries": 4}``.

    Returns:
        ``out_dir`` as a Path.
    """
    from qwenvl_train.model import QwenVLConfig, QwenVLForCausalLM
    from qwenvl_train.outputs import check_output_folder
    from qwenvl_train.vocab import ensure_vocab

    check_output_folder(out_dir)  # a file or a device named DIR: one line, nothing written over it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preset_overrides = copy.deepcopy(PRESETS[preset])
    visual = {**preset_overrides.pop("visual", {}), **overrides.pop("visual", {})}
    config_dict = tiny_config_dict(**preset_overrides, **overrides, visual=visual)
    config = QwenVLConfig(
        **{k: v for k, v in config_dict.items() if k not in ("model_type", "transformers_version")}
    )

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = QwenVLForCausalLM(config).float()
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, std in PRESET_INIT_STD[preset].items():
                parameters[name].normal_(mean=0.0, std=std)
    finally:
        torch.random.set_rng_state(generator_state)

    save_file(
        {name: t.contiguous() for name, t in model.state_dict().items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (out / "model.safetensors").chmod(ordinary_mode())  # safetensors creates it 0600
    _write_json(out / "config.json", config_dict)
    _write_json(out / "generation_config.json", GENERATION_CONFIG)
    _write_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)
    ensure_vocab(dest=out)
    return out


def save_original_bin_shards(model: nn.Module, out_dir: str | Path, n_shards: int) -> Path:
    """Write ``model``'s weights as the original sharded ``pytorch_model-0000k-of-0000n.bin`` files plus
    ``pytorch_model.bin.index.json`` (pickled torch files: for tests of the legacy layout only; the project
    itself always saves safetensors). Returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    names = list(state)
    per_shard = -(-len(names) // n_shards)
    weight_map: dict[str, str] = {}
    total_size = 0
    for k in range(n_shards):
        shard_name = f"pytorch_model-{k + 1:05d}-of-{n_shards:05d}.bin"
        shard = {name: state[name] for name in names[k * per_shard : (k + 1) * per_shard]}
        torch.save(shard, out / shard_name)
        for name, tensor in shard.items():
            weight_map[name] = shard_name
            total_size += tensor.numel() * tensor.element_size()
    _write_json(
        out / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": total_size}, "weight_map": weight_map},
    )
    return out
