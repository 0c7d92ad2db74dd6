"""``python -m qwenvl_train.train [options]``: what the finetune/*.sh launchers run under torchrun.

See :mod:`qwenvl_train.training.run` (and ``--help``) for the options.
"""

from __future__ import annotations

from .training import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    raise SystemExit(main())
