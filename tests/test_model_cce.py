"""``--loss_backend``: cut-cross-entropy is used only when it imports, the device is CUDA and a probe call works;
otherwise the chunked path with one log line. The package is not installed here: fake modules stand in for it and
the CUDA check is patched where a test needs the probe to run."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from qwenvl_train.model import cce, register
from qwenvl_train.training.arguments import parse_args
from qwenvl_train.training.prepare import PreparationError, set_loss_backend

CPU = torch.device("cpu")
register()


@pytest.fixture()
def log_lines(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(level, message) of every line the cce module logs; a fresh probe memo."""
    lines: list[tuple[str, str]] = []
    monkeypatch.setattr(cce.logger, "warning", lambda msg, *a, **k: lines.append(("warning", msg)))
    monkeypatch.setattr(cce.logger, "info", lambda msg, *a, **k: lines.append(("info", msg)))
    monkeypatch.setattr(cce, "_probed", {})
    return lines


def fake_cce(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[int]:
    """Install a fake ``cut_cross_entropy`` (working, or raising like a broken Triton build); returns its calls."""
    calls: list[int] = []

    def linear_cross_entropy(e, c, targets, reduction="mean", **kwargs):
        calls.append(e.shape[0])
        if fail:
            raise RuntimeError("triton: PassManager::run failed\nmore detail")
        return F.cross_entropy((e @ c.T).float(), targets, reduction=reduction)

    module = types.ModuleType("cut_cross_entropy")
    module.linear_cross_entropy = linear_cross_entropy
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", module)
    monkeypatch.setattr(cce, "device_unsuitable", lambda device: None)  # as on a CUDA device
    return calls


def test_chunked_never_probes(monkeypatch: pytest.MonkeyPatch, log_lines) -> None:
    calls = fake_cce(monkeypatch)
    assert cce.resolve_loss_backend("chunked", CPU) == "chunked"
    assert calls == [] and log_lines == []


def test_auto_on_cpu_is_chunked_with_one_info_line(log_lines) -> None:
    assert cce.resolve_loss_backend("auto", CPU) == "chunked"
    assert log_lines == [
        ("info", "loss: chunked cross-entropy, not cut-cross-entropy: no CUDA device (training on cpu)")
    ]


def test_auto_without_the_package_is_chunked_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, log_lines
) -> None:
    monkeypatch.setitem(sys.modules, "cut_cross_entropy", None)  # import fails as if not installed
    monkeypatch.setattr(cce, "device_unsuitable", lambda device: None)
    assert cce.resolve_loss_backend("auto", CPU) == "chunked"
    assert len(log_lines) == 1 and log_lines[0][0] == "warning"
    assert "cut_cross_entropy is not installed" in log_lines[0][1]


def test_auto_with_a_broken_kernel_falls_back_once(monkeypatch: pytest.MonkeyPatch, log_lines) -> None:
    calls = fake_cce(monkeypatch, fail=True)
    assert cce.resolve_loss_backend("auto", CPU) == "chunked"
    assert cce.resolve_loss_backend("auto", CPU) == "chunked"
    assert calls == [8]  # probed once per process and device
    assert [level for level, _ in log_lines] == ["warning", "warning"]  # one line per resolution
    assert log_lines[0][1] == (
        "loss: chunked cross-entropy, not cut-cross-entropy: its probe call failed "
        "(RuntimeError: triton: PassManager::run failed)"
    )
    with pytest.raises(cce.LossBackendError, match="--loss_backend cce cannot run: its probe call failed"):
        cce.resolve_loss_backend("cce", CPU)


def test_a_wrong_result_is_a_failed_probe(monkeypatch: pytest.MonkeyPatch, log_lines) -> None:
    fake_cce(monkeypatch)
    sys.modules["cut_cross_entropy"].linear_cross_entropy = lambda e, c, t, **kw: (e @ c.T).sum() * 0.0 + 1.0
    assert cce.resolve_loss_backend("auto", CPU) == "chunked"
    assert "its probe gave 1.0000 where" in log_lines[0][1]


def test_working_cce_computes_the_models_loss(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, log_lines
) -> None:
    calls = fake_cce(monkeypatch)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    assert model.loss_backend == "chunked"
    args = parse_args(["--output_dir", "unused", "--loss_backend", "auto"])
    assert set_loss_backend(model, args.training.loss_backend, CPU) == "cce" and model.loss_backend == "cce"
    assert log_lines == []
    ids = torch.tensor([[872, 198, 40, 1079, 5, 6, 7, 8]])
    labels = ids.clone()
    labels[:, :3] = -100
    loss_cce = model(input_ids=ids, labels=labels).loss
    assert calls == [8, 5]  # the probe, then the 5 positions whose next token is labelled
    model.loss_backend = "chunked"
    loss_chunked = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(loss_cce, loss_chunked, rtol=1e-5, atol=1e-6)


def test_explicit_cce_that_cannot_run_stops_preparation(tiny_model_dir: Path, log_lines) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(PreparationError, match="^--loss_backend cce cannot run: no CUDA device"):
        set_loss_backend(model, "cce", CPU)


def test_loss_backend_option(tmp_path: Path) -> None:
    assert parse_args(["--output_dir", str(tmp_path)]).training.loss_backend == "auto"
    assert (
        parse_args(["--output_dir", str(tmp_path), "--loss_backend", "chunked"]).training.loss_backend
        == "chunked"
    )
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", str(tmp_path), "--loss_backend", "fast"])
