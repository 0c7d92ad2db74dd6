"""``import_hooks.after_import``: a call-back once a module is imported, and with ``settle`` only once no module of
the given packages is half-imported (what registration needs: transformers imports its Auto modules from the
middle of other modules). Each case runs in a fresh interpreter on a small generated package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: A package whose `layers` module imports `auto` before it defines `Layer`, as transformers.modeling_layers does.
PACKAGE = {
    "fakelib/__init__.py": "",
    "fakelib/auto.py": "NAME = 'auto'\n",
    "fakelib/layers.py": "from fakelib import auto\n\n\nclass Layer:\n    pass\n",
}

CODE = """
{before}
from qwenvl_train.import_hooks import after_import

calls = []


def use_layer(module):
    from fakelib.layers import Layer  # needs fakelib.layers complete
    calls.append((module.__name__, Layer.__name__))


after_import("fakelib.auto", use_layer, settle={settle})
{first_import}
print(calls)
"""


def run(
    tmp_path: Path, settle: tuple[str, ...], first_import: str, before: str = ""
) -> subprocess.CompletedProcess[str]:
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    code = CODE.format(settle=settle, first_import=first_import, before=before)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(tmp_path)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("first_import", ["import fakelib.layers", "import fakelib.auto", "import fakelib"])
def test_settle_waits_until_the_package_is_idle(tmp_path: Path, first_import: str) -> None:
    proc = run(tmp_path, ("fakelib",), first_import)
    assert proc.returncode == 0, proc.stderr
    expected = "[]" if first_import == "import fakelib" else "[('fakelib.auto', 'Layer')]"
    assert proc.stdout.strip() == expected


def test_without_settle_the_call_back_meets_a_half_imported_module(tmp_path: Path) -> None:
    """The case ``settle`` is for: called as soon as ``auto`` is imported, inside ``layers``' import."""
    proc = run(tmp_path, (), "import fakelib.layers")
    assert proc.returncode != 0 and "partially initialized module 'fakelib.layers'" in proc.stderr


def test_module_already_imported_calls_at_once(tmp_path: Path) -> None:
    proc = run(tmp_path, ("fakelib",), "print(len(calls))", before="import fakelib.layers")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "[('fakelib.auto',", "'Layer')]"]
