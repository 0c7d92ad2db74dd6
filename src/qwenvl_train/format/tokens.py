"""Special tokens of the Qwen(-VL) vocabulary and the ids the chat format relies on.

Ids start right after the 151,643 BPE ranks of ``qwen.tiktoken``; see the spec's tokenizer section.
"""

from __future__ import annotations

NUM_BPE_RANKS = 151_643

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EXTRAS = tuple(f"<|extra_{i}|>" for i in range(205))
REF_START, REF_END = "<ref>", "</ref>"
BOX_START, BOX_END = "<box>", "</box>"
QUAD_START, QUAD_END = "<quad>", "</quad>"
IMG_START, IMG_END = "<img>", "</img>"
IMG_PAD = "<imgpad>"

SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    *EXTRAS,
    REF_START,
    REF_END,
    BOX_START,
    BOX_END,
    QUAD_START,
    QUAD_END,
    IMG_START,
    IMG_END,
    IMG_PAD,
)
SPECIAL_IDS: dict[str, int] = {tok: NUM_BPE_RANKS + i for i, tok in enumerate(SPECIAL_TOKENS)}

ENDOFTEXT_ID = SPECIAL_IDS[ENDOFTEXT]  # 151643, also the training pad id
IM_START_ID = SPECIAL_IDS[IM_START]  # 151644
IM_END_ID = SPECIAL_IDS[IM_END]  # 151645
REF_START_ID = SPECIAL_IDS[REF_START]  # 151851
REF_END_ID = SPECIAL_IDS[REF_END]
BOX_START_ID = SPECIAL_IDS[BOX_START]
BOX_END_ID = SPECIAL_IDS[BOX_END]
QUAD_START_ID = SPECIAL_IDS[QUAD_START]
QUAD_END_ID = SPECIAL_IDS[QUAD_END]
IMG_START_ID = SPECIAL_IDS[IMG_START]  # 151857
IMG_END_ID = SPECIAL_IDS[IMG_END]  # 151858
IMG_PAD_ID = SPECIAL_IDS[IMG_PAD]  # 151859
PAD_ID = ENDOFTEXT_ID

# Pre-tokenizer of Qwen (cl100k-like with single digits).
PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
