"""How a rank of a distributed run ends (training.distributed.end_process): everything a normal exit does before
the interpreter's finalization, then nothing of the finalization itself (where freeing communication objects could
abort the rank)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from qwenvl_train.training.distributed import end_process

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))

def late():
    time.sleep(0.3)
    (out / "thread").write_text("joined")

threading.Thread(target=late).start()

class FreedAtFinalization:
    def __del__(self):
        (out / "finalized").write_text("ran")

kept = FreedAtFinalization()  # a module global: freed only when the interpreter tears down
sys.stdout.write("last words, no newline, not flushed")
if sys.argv[2] == "end_process":
    end_process(3)
sys.exit(3)
"""


def run_script(tmp_path: Path, how: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), how], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("how", ["end_process", "sys.exit"])
def test_end_process_does_what_an_exit_does_before_finalization(tmp_path: Path, how: str) -> None:
    proc = run_script(tmp_path, how)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "last words, no newline, not flushed"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"  # a non-daemon thread is waited for
    # The one difference: end_process skips the interpreter's teardown (sys.exit shows the test can tell).
    assert (tmp_path / "finalized").exists() == (how == "sys.exit")


def test_leave_process_group_without_one_returns_zero() -> None:
    from qwenvl_train.training.distributed import leave_process_group

    assert leave_process_group(barrier=True) == 0


def test_end_process_stops_an_idle_thread_pool(tmp_path: Path) -> None:
    """An executor nobody shut down keeps idle non-daemon workers: they are told to stop, as at a normal exit,
    instead of being waited for forever."""
    script = tmp_path / "pool.py"
    script.write_text(
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from qwenvl_train.training.distributed import end_process\n"
        "pool = ThreadPoolExecutor(2)\n"
        "print(pool.submit(sum, [1, 2]).result())\n"
        "end_process(0)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "3\n"), proc.stderr
