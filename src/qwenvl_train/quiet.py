"""Keep third-party import noise off the terminal: banners, optional compiled parts that fail to load,
deprecation notices. They say nothing the user can act on, and bury what qwenvl-train prints.

Silenced in normal runs, and in a user's own program from ``import qwenvl_train`` on (the package calls
:func:`silence_third_party` when imported); shown with ``qwenvl-train --verbose ...`` or ``QWENVL_TRAIN_VERBOSE=1``
(the flag sets the variable, so torchrun's ranks and worker processes follow it). Errors are never silenced. Cheap
to import.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from types import ModuleType
from typing import Any

from .import_hooks import after_import

VERBOSE_ENV = "QWENVL_TRAIN_VERBOSE"

#: Loggers of libraries that talk at import time (below ERROR, they are dropped unless verbose):
#: torchao "Failed to load ..._C_*.so", torch's pytree deprecation, bitsandbytes' optional CPU kernels,
#: DeepSpeed's "Setting accelerator to CPU". (gptqmodel prints through logbar, handled by :func:`_quiet_logbar`.)
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes", "DeepSpeed")
#: Warnings (DeprecationWarning, FutureWarning, UserWarning) attributed to these packages are dropped.
NOISY_PACKAGES = (
    r"(torch|torchao|transformers|peft|accelerate|deepspeed|bitsandbytes|gptqmodel|optimum|logbar)"
)
#: Environment switches the libraries themselves honour.
QUIET_ENV = {"GPTQMODEL_DISABLE_GIL_WARNING": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def is_verbose() -> bool:
    """True when the user asked for third-party messages (``--verbose`` or ``QWENVL_TRAIN_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes", "on")


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def silence_third_party(verbose: bool | None = None) -> None:
    """Drop the import-time chatter of the heavy libraries; call before importing them.

    Args:
        verbose: True to keep everything (and pass it on to child processes); None reads ``QWENVL_TRAIN_VERBOSE``.
    """
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    if verbose or (verbose is None and is_verbose()):
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    errors_only = _ErrorsOnly()
    for name in NOISY_LOGGERS:
        # The level covers the child loggers (bitsandbytes.backends.cpu.ops, ...); the filter stays when torch
        # resets its loggers' levels as it initializes its logging.
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        if not any(isinstance(f, _ErrorsOnly) for f in logger.filters):
            logger.addFilter(errors_only)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_PACKAGES + r"(\.|$)")
    after_import("logbar.logbar", _quiet_logbar)  # the module defining LogBar, before the package uses it
    after_import("transformers", _quiet_loading_bars)


def _quiet_loading_bars(module: ModuleType) -> None:
    """transformers draws a "Loading weights" bar for every model it loads: kept on a terminal, where it is drawn
    and erased, dropped where stderr is a file or a pipe (logs, a program capturing the output), where it is only
    noise."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _quiet_logbar(module: ModuleType) -> None:
    """gptqmodel logs through logbar's own shared logger, which prints directly (its banner, "GIL is enabled",
    "Auto setting ..." lines) and sets itself to INFO when created: keep it at ERROR whenever it is handed out."""
    logbar_class = getattr(module, "LogBar", None)
    if logbar_class is None or getattr(logbar_class, "_qwenvl_quiet", False):
        return
    shared = logbar_class.shared

    inner = sys.modules.get(logbar_class.__module__)
    printer = getattr(inner, "_print", None)

    def quiet_shared(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if printer is not None:  # creating the shared logger prints an empty line on stdout
            inner._print = lambda *_, **__: None  # type: ignore[union-attr]
        try:
            instance = shared(*args, **kwargs)
        finally:
            if printer is not None:
                inner._print = printer  # type: ignore[union-attr]
        instance.setLevel(logging.ERROR)
        return instance

    logbar_class.shared = classmethod(quiet_shared)
    logbar_class._qwenvl_quiet = True
