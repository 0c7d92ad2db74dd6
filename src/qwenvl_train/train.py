"""``python -m qwenvl_train.train [options]``: the same as ``qwenvl-train train`` (the finetune/*.sh launchers run
``torchrun ... -m qwenvl_train train --config finetune/RECIPE.yaml``; this module path keeps older command lines working).

See :mod:`qwenvl_train.training.run` (and ``--help``) for the options.
"""

from __future__ import annotations

from .training import main, train

__all__ = ["main", "train"]

if __name__ == "__main__":
    raise SystemExit(main())
