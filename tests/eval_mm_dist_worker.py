"""One rank of ``torchrun ... tests/eval_mm_dist_worker.py BENCHMARK DATA MODEL SAVE OUT``: ``run_benchmark`` with
those options (batch size 2, pictures relative to the data file's folder); used by tests/test_eval_mm_runner.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qwenvl_train.eval_mm.runner import BenchmarkRun, run_benchmark

if __name__ == "__main__":
    name, data, model, save, out = sys.argv[1:6]
    result = run_benchmark(
        BenchmarkRun(
            name,
            Path(data),
            image_root=Path(data).parent,
            model=model,
            save_predictions=Path(save),
            out=Path(out),
            batch_size=2,
            device="cpu",
            dtype="fp32",
            progress=False,
        )
    )
    print(json.dumps(result))
