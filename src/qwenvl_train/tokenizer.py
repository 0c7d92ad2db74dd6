"""Native tiktoken-based tokenizer for Qwen-VL checkpoints.

It reads ``qwen.tiktoken`` from a model directory and reproduces the original ``QWenTokenizer``: NFC
normalisation, Qwen's pre-tokenizer pattern, and the 217 special tokens from id 151643 upwards. It is a
transformers ``PreTrainedTokenizer`` so, after ``import qwenvl_train``, ``AutoTokenizer.from_pretrained(dir)``
loads an original checkpoint directory (whose tokenizer_config.json names ``QWenTokenizer`` with an
``auto_map``) without ``trust_remote_code``.

Tokens are ``bytes`` for the BPE ranks and ``str`` for special tokens, as in the original.
"""

from __future__ import annotations

import base64
import os
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

import tiktoken
from transformers import AddedToken, PreTrainedTokenizer

from .format import markup
from .format import tokens as st

VOCAB_FILES_NAMES = {"vocab_file": "qwen.tiktoken"}
COUNT_PIECE = 1 << 20  # characters :meth:`QwenVLTokenizer.count_text` counts at a time


def load_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not a 'base64 rank' line") from exc
    return ranks


class QwenVLTokenizer(PreTrainedTokenizer):
    """Qwen(-VL) tokenizer on tiktoken.

    Args:
        vocab_file: path of ``qwen.tiktoken``.
        errors: how ``bytes.decode`` treats invalid UTF-8 when decoding (``"replace"`` as the original).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        errors: str = "replace",
        pad_token: str | None = st.ENDOFTEXT,
        **kwargs: Any,
    ) -> None:
        # Everything the base class may call back into is set BEFORE super().__init__ (the original
        # set it afterwards, which is the `AttributeError: IMAGE_ST` on newer transformers).
        self.vocab_file = str(vocab_file)
        self.errors = errors
        self.mergeable_ranks = load_tiktoken_ranks(vocab_file)
        if len(self.mergeable_ranks) != st.NUM_BPE_RANKS:
            raise ValueError(
                f"{vocab_file}: {len(self.mergeable_ranks)} BPE ranks, expected {st.NUM_BPE_RANKS} "
                "(is this the genuine qwen.tiktoken? run `qwenvl-train vocab`)"
            )
        self.special_tokens = dict(st.SPECIAL_IDS)
        self.encoding = tiktoken.Encoding(
            "Qwen",
            pat_str=st.PAT_STR,
            mergeable_ranks=self.mergeable_ranks,
            special_tokens=self.special_tokens,
        )
        self.decoder: dict[int, bytes | str] = {v: k for k, v in self.mergeable_ranks.items()}
        self.decoder.update({v: k for k, v in self.special_tokens.items()})
        self.eod_id = st.ENDOFTEXT_ID
        self.im_start_id = st.IM_START_ID
        self.im_end_id = st.IM_END_ID
        self.img_start_id = st.IMG_START_ID
        self.img_end_id = st.IMG_END_ID
        self.img_pad_id = st.IMG_PAD_ID
        self._added_tokens_decoder = {
            idx: AddedToken(tok, lstrip=False, rstrip=False, normalized=False, special=True)
            for tok, idx in self.special_tokens.items()
        }
        kwargs.pop("added_tokens_decoder", None)  # always rebuilt from the spec above
        super().__init__(errors=errors, pad_token=pad_token, **kwargs)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids (BPE ranks plus special tokens): 151,860."""
        return len(self.decoder)

    def __len__(self) -> int:
        return len(self.decoder)

    def get_vocab(self) -> dict[bytes | str, int]:
        """Token -> id for every BPE rank (``bytes`` keys) and special token (``str`` keys)."""
        vocab: dict[bytes | str, int] = dict(self.mergeable_ranks)
        vocab.update(self.special_tokens)
        return vocab

    def _convert_token_to_id(self, token: bytes | str) -> int:
        if token in self.special_tokens:
            return self.special_tokens[token]  # type: ignore[index]
        if isinstance(token, str):
            token = token.encode("utf-8")
        if token in self.mergeable_ranks:
            return self.mergeable_ranks[token]
        raise ValueError(f"unknown token {token!r}")

    def _convert_token_to_id_with_added_voc(self, token: bytes | str) -> int:
        return self._convert_token_to_id(token)

    def convert_tokens_to_ids(self, tokens: bytes | str | Iterable[bytes | str]) -> int | list[int]:
        """Map tokens (bytes for BPE pieces, str for special tokens) to ids."""
        if isinstance(tokens, (bytes, str)):
            return self._convert_token_to_id(tokens)
        return [self._convert_token_to_id(t) for t in tokens]

    def _convert_id_to_token(self, index: int) -> bytes | str:
        if index in self.decoder:
            return self.decoder[index]
        raise ValueError(f"unknown id {index}")

    def convert_ids_to_tokens(
        self, ids: int | list[int], skip_special_tokens: bool = False
    ) -> bytes | str | list[bytes | str]:
        """Map ids to tokens (bytes for BPE pieces, str for special tokens)."""
        if isinstance(ids, int):
            return self._convert_id_to_token(ids)
        return [
            self._convert_id_to_token(int(i))
            for i in ids
            if not (skip_special_tokens and int(i) >= self.eod_id)
        ]

    def convert_tokens_to_string(self, tokens: list[bytes | str]) -> str:
        """Join tokens into text, decoding byte pieces as UTF-8 across token boundaries."""
        text = ""
        buffer = b""
        for token in tokens:
            if isinstance(token, str):
                if buffer:
                    text += buffer.decode("utf-8", errors=self.errors)
                    buffer = b""
                text += token
            else:
                buffer += token
        if buffer:
            text += buffer.decode("utf-8", errors=self.errors)
        return text

    # ------------------------------------------------------------------ encoding
    def tokenize(
        self,
        text: str,
        allowed_special: Literal["all"] | Collection[str] = "all",
        disallowed_special: Literal["all"] | Collection[str] = (),
        **kwargs: Any,
    ) -> list[bytes | str]:
        """Split ``text`` into tokens. Special-token strings become special tokens (as the original)."""
        ids = self.encoding.encode(
            unicodedata.normalize("NFC", text),
            allowed_special=allowed_special,
            disallowed_special=disallowed_special,
        )
        return [self.decoder[i] for i in ids]

    def _tokenize(self, text: str, **kwargs: Any) -> list[bytes | str]:
        return self.tokenize(text, **kwargs)

    def encode_text(self, text: str) -> list[int]:
        """Encode ``text`` with every special-token string treated as plain text.

        This is what the data pipeline uses for user-provided content: a literal ``<|im_start|>`` in a
        conversation can never become a control id.
        """
        return self.encoding.encode(
            unicodedata.normalize("NFC", text), allowed_special=set(), disallowed_special=()
        )

    def count_text(self, text: str) -> int:
        """``len(self.encode_text(text))`` without the list of ids: how the scan measures a text too long to keep.

        The text is counted in pieces of about :data:`COUNT_PIECE` characters, each into a buffer of 4 bytes per id,
        so that measuring a 50 MB text costs about a megabyte. A piece ends only before a space between two letters,
        where the pre-tokenizer's pattern always ends a piece too (a word, then `` word``) and NFC never composes
        across, so the sum is exactly the whole text's count; a text without such a place is counted whole.
        """
        total, start = 0, 0
        while start < len(text):
            end = _piece_end(text, start + COUNT_PIECE)
            normal = unicodedata.normalize("NFC", text[start:end])
            total += len(self.encoding.encode_to_numpy(normal, allowed_special=set(), disallowed_special=()))
            start = end
        return total

    @staticmethod
    def from_list_format(items: Iterable[dict[str, Any]]) -> str:
        """Render ``[{"image": path}, {"text": ...}, {"ref": ..., "box": [(x1, y1, x2, y2), ...]}]`` as query text,
        as the original tokenizer did: ``Picture N: <img>path</img>\\n`` per image (numbered from 1), text as is,
        ``<ref>..</ref>`` then one ``<box>(x1,y1),(x2,y2)</box>`` per box. Nothing is checked; an item with none
        of those keys is a ``ValueError``. See ``qwenvl_train.format.markup.from_list_format``.
        """
        return markup.from_list_format(items)

    @staticmethod
    def to_list_format(text: str) -> list[dict[str, str]]:
        """Split text into ``{"text"|"image"|"ref"|"box"|"quad": value}`` items, as the original tokenizer did.

        Values are strings as written (a box is ``"(x1,y1),(x2,y2)"``); joining the items back with their tags
        gives the text again. Malformed markup never raises (see ``qwenvl_train.format.markup``).
        """
        return markup.to_list_format(text)

    @staticmethod
    def draw_bbox_on_latest_picture(response: str, history: list[tuple[str, str]] | None = None) -> Any:
        """The latest picture of the conversation with the response's boxes drawn (a Pillow image), or None
        when there is no picture or no box. See ``qwenvl_train.inference.draw``."""
        from .inference.draw import draw_bbox_on_latest_picture

        return draw_bbox_on_latest_picture(response, history)

    # ------------------------------------------------------------------ decoding
    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        errors: str | None = None,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        ids = [int(i) for i in token_ids]
        if skip_special_tokens:
            ids = [i for i in ids if i < self.eod_id]
        return self.encoding.decode(ids, errors=errors or self.errors)

    # ------------------------------------------------------------------ saving
    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write ``qwen.tiktoken`` (ranks as ``base64 rank`` lines) into ``save_directory``."""
        name = (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = Path(save_directory) / name
        with open(path, "wb") as fh:
            for token, rank in sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1]):
                fh.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
        return (str(path),)


def _piece_end(text: str, at: int) -> int:
    """The first place from ``at`` on where :meth:`QwenVLTokenizer.count_text` may cut ``text`` (before a space
    between two letters), or its end."""
    i = text.find(" ", max(at, 1))
    while i != -1 and i + 1 < len(text):
        if text[i - 1].isalpha() and text[i + 1].isalpha():
            return i
        i = text.find(" ", i + 1)
    return len(text)


class QWenTokenizer(QwenVLTokenizer):
    """Alias under the original class name, so tokenizer_config.json files of the original load as is."""
