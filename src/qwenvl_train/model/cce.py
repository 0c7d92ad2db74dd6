"""Optional loss backend: Apple's ``cut-cross-entropy`` (CCE) Triton kernels for the output layer + loss.

``--loss_backend auto`` uses CCE only where it can work: the package ``cut_cross_entropy`` imports, training runs
on a CUDA device, and a one-time tiny probe call (forward and backward) succeeds; its kernels have broken across
Triton versions, so the probe is what decides. Otherwise the chunked path of :mod:`.loss` runs and one log line says
why (a warning on CUDA, also when the package is simply not installed, so a user who expected CCE sees it is off; an
info line on CPU, where it never runs). ``cce`` asks for
CCE and stops with one clear error when it cannot run; ``chunked`` never tries it.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from transformers.utils import logging

from ..errors import UserError

logger = logging.get_logger(__name__)

LOSS_BACKENDS = ("auto", "chunked", "cce")
_probed: dict[str, str | None] = {}


class LossBackendError(UserError, RuntimeError):
    """``--loss_backend cce`` was asked for but cannot run here."""


def _load() -> Any:
    return importlib.import_module("cut_cross_entropy")


def device_unsuitable(device: torch.device) -> str | None:
    """Why ``device`` cannot run CCE's kernels at all (None for a CUDA device)."""
    if device.type != "cuda":
        return f"no CUDA device (training on {device.type})"
    return None


def probe_failure(device: torch.device) -> str | None:
    """Why CCE does not work on ``device`` (None when it does): import it and run a tiny call, once per device
    per process."""
    key = str(device)
    if key not in _probed:
        _probed[key] = _probe(device)
    return _probed[key]


def _probe(device: torch.device) -> str | None:
    try:
        module = _load()
    except ImportError as error:
        return f"the package cut_cross_entropy is not installed ({error})"
    try:
        g = torch.Generator(device=device).manual_seed(0)
        hidden = torch.randn(8, 64, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
        weight = torch.randn(128, 64, device=device, dtype=torch.bfloat16, generator=g).requires_grad_()
        targets = torch.randint(0, 128, (8,), device=device, generator=g)
        loss = module.linear_cross_entropy(hidden, weight, targets, reduction="sum")
        loss.backward()
        want = torch.nn.functional.cross_entropy((hidden @ weight.T).float(), targets, reduction="sum")
        if not torch.isfinite(loss) or not torch.allclose(loss.float(), want, rtol=2e-2, atol=1e-1):
            return f"its probe gave {loss.item():.4f} where {want.item():.4f} was expected"
    except Exception as error:  # noqa: BLE001 - any failure of the kernels means: do not use them
        return f"its probe call failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return None


def resolve_loss_backend(requested: str, device: torch.device) -> str:
    """The backend to use (``"cce"`` or ``"chunked"``) for ``--loss_backend requested`` on ``device``.

    Raises:
        ValueError: an unknown backend name.
        LossBackendError: ``cce`` was requested and cannot run (the reason is in the message).
    """
    if requested not in LOSS_BACKENDS:
        raise ValueError(f"--loss_backend must be one of {', '.join(LOSS_BACKENDS)}, got {requested!r}")
    if requested == "chunked":
        return "chunked"
    unsuitable = device_unsuitable(device)
    reason = unsuitable or probe_failure(device)
    if reason is None:
        return "cce"
    if requested == "cce":
        raise LossBackendError(f"--loss_backend cce cannot run: {reason}")
    # An info line where CCE never runs (CPU), a warning where it was plausible (a CUDA device).
    log = logger.info if unsuitable else logger.warning
    log(f"loss: chunked cross-entropy, not cut-cross-entropy: {reason}")
    return "chunked"


def cce_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets`` by CCE, in fp32."""
    return _load().linear_cross_entropy(hidden, weight, targets, reduction="sum").float()
