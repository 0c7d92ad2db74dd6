"""``qwenvl-train train --help`` without importing transformers (which takes seconds).

The option list comes from transformers' ``TrainingArguments`` (through ``HfArgumentParser``), so the text can
only be built with transformers imported. It is built once and kept in the cache folder
(``$QWENVL_TRAIN_CACHE`` or ``~/.cache/qwenvl-train``), under a key made of the transformers version, the
source of the argument definitions and the terminal width: any change builds it again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

#: Files that define the options of ``train`` (their text is part of the cache key).
_SOURCES = ("arguments.py", "../data/options.py")


def help_key() -> str:
    """What the help text depends on: transformers' version, our argument sources, the terminal width."""
    digest = hashlib.sha256()
    digest.update(metadata.version("transformers").encode())
    digest.update(str(shutil.get_terminal_size().columns).encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def help_path() -> Path:
    """Where the help text for this key is kept."""
    from ..vocab import cache_dir

    return cache_dir() / "help" / f"train-{help_key()}.txt"


def build_help() -> str:
    """The full help text, as the parser prints it (imports transformers)."""
    from .arguments import build_parser

    return build_parser().format_help()


def print_train_help() -> int:
    """Print the help of ``train`` (from the cache when it is there, else built and cached); exit status 0."""
    path = help_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = build_help()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache folder only costs the next --help its speed
    sys.stdout.write(text)
    return 0
