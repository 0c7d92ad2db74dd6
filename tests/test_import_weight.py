"""Each command imports only what it uses: ``check-data`` tokenizes and scans, so after a run the model, the
transformers modeling stack and the training libraries are not in ``sys.modules``.

The run is a fresh interpreter (``python -c``) calling the CLI's ``main`` in-process, then printing the modules
loaded and, for each module watched, the line of this package that first imported it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"

#: Never imported by check-data: torch, the model and what only building or training a model needs.
HEAVY = (
    "torch",
    "qwenvl_train.model.modeling",
    "transformers.modeling_utils",
    "peft",
    "accelerate",
    "deepspeed",
)
#: The model's configuration (transformers' config stack): check-data reads config.json as JSON.
CONFIGURATION = "qwenvl_train.model.configuration"

DRIVER = """
import contextlib, io, json, sys

WATCH = set(json.loads(sys.argv[3]))
first_import = {}


class Witness:
    '''Records which line of qwenvl_train first imports a watched module (finds nothing itself).'''

    def find_spec(self, name, path=None, target=None):
        if name in WATCH and name not in first_import:
            frame = sys._getframe(1)
            while frame is not None and (
                "qwenvl_train" not in frame.f_code.co_filename
                or frame.f_code.co_filename.endswith("import_hooks.py")
            ):
                frame = frame.f_back
            first_import[name] = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"
        return None


sys.meta_path.insert(0, Witness())
from qwenvl_train.cli import main

out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(["check-data", sys.argv[1], "--model", sys.argv[2]])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "report": out.getvalue(), "modules": sorted(sys.modules), "by": first_import}))
"""


@pytest.fixture(scope="module")
def check_data_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """check-data on a small file (text, an image, a grounding answer) with the tiny model's folder."""
    root = tmp_path_factory.mktemp("weight")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "red.png")
    samples = [
        {
            "id": "text",
            "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello."}],
        },
        {
            "id": "image",
            "conversations": [
                {"from": "user", "value": "Picture 1: <img>red.png</img>\nWhere is it?"},
                {"from": "assistant", "value": "<ref>red</ref><box>(0,0),(999,999)</box>"},
            ],
        },
    ]
    data = root / "data.json"
    data.write_text(json.dumps(samples), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "QWENVL_TRAIN_CACHE": str(root / "cache")}
    env.pop("QWENVL_TRAIN_VERBOSE", None)
    watch = json.dumps([*HEAVY, CONFIGURATION])
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(data), str(tiny_model_dir), watch],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0, result["report"]
    assert "samples: 2 read, 2 ok, 0 with errors" in result["report"], result["report"]
    return result


def loaded(run: dict, names: tuple[str, ...]) -> list[str]:
    modules = set(run["modules"])
    return [f"{name} (first imported at {run['by'].get(name, '?')})" for name in names if name in modules]


def test_check_data_leaves_the_model_and_training_stack_out(check_data_run: dict) -> None:
    assert not loaded(check_data_run, HEAVY), "\n".join(loaded(check_data_run, HEAVY))


def test_check_data_reads_the_model_folder_without_the_model_configuration(check_data_run: dict) -> None:
    found = loaded(check_data_run, (CONFIGURATION,))
    assert not found, "\n".join(found)
