"""``qwenvl-train train --help`` without importing transformers (which takes seconds).

The option list comes from transformers' ``TrainingArguments`` (through ``HfArgumentParser``), so the text can
only be built with transformers imported. It is built once and kept in the cache folder
(``$QWENVL_TRAIN_CACHE`` or ``~/.cache/qwenvl-train``), under a key made of the transformers version and the
source of the argument definitions: any change builds it again. It is laid out for 100 columns, whatever the
terminal. A training run stores
it too (transformers is loaded then anyway), so ``--help`` after a first run answers at once.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

from ..outputs import write_output

#: Files that define the options of ``train`` (their text is part of the cache key).
_SOURCES = ("arguments.py", "../data/options.py")
#: Width the help is laid out for.
COLUMNS = 100


def help_key() -> str:
    """What the help text depends on: transformers' version and our argument sources."""
    digest = hashlib.sha256()
    digest.update(metadata.version("transformers").encode())
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def help_path() -> Path:
    """Where the help text for this key is kept."""
    from ..vocab import cache_dir

    return cache_dir() / "help" / f"train-{help_key()}.txt"


def build_help() -> str:
    """The full help text, as the parser prints it at a width of :data:`COLUMNS` (imports transformers)."""
    from .arguments import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(COLUMNS)  # argparse's width (shutil.get_terminal_size reads it first)
    try:
        return build_parser().format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def cached_help() -> str:
    """The help text: from the cache when it is there, else built and stored there."""
    path = help_path()
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        pass
    text = build_help()
    try:
        write_output(path, text)
    except OSError:
        pass  # a read-only cache folder only costs the next --help its speed
    return text


def print_train_help() -> int:
    """Print the help of ``train``; exit status 0."""
    sys.stdout.write(cached_help())
    return 0
