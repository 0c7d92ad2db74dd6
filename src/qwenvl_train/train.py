"""``python -m qwenvl_train.train [options]``: the same as ``qwenvl-train train`` (the finetune/*.sh launchers run
``torchrun ... -m qwenvl_train train --config finetune/RECIPE.yaml``; this module path keeps older command lines working).

See :mod:`qwenvl_train.training.run` (and ``--help``) for the options; ``--verbose`` shows third-party messages.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .quiet import silence_third_party

__all__ = ["main", "train"]  # noqa: F822  (train: from training.run, on first access)


def main(argv: Sequence[str] | None = None) -> int:
    """Silence third-party import noise (unless ``--verbose``), then run :func:`qwenvl_train.commands.train.main`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    silence_third_party(verbose=True if "--verbose" in argv else None)
    from .commands.train import main as train_main

    return train_main([arg for arg in argv if arg != "--verbose"])


def __getattr__(name: str) -> Any:
    if name == "train":
        from .training.run import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
