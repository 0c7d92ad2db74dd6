"""The picture reports in a real headless Chromium: each page loads from the disk, shows the expected number of
pictures (every one decoded) and logs no console error. Skipped, with the reason, without Chromium.

The data is the demo's generator (coloured shapes with their boxes), English samples only (a machine without a CJK
font would show its Chinese as empty boxes), one broken on purpose; the eval answers are its held-out references,
every other one shifted right. The benchmark report (``eval --benchmark --report``) is a RefCOCO result scored by
``score_benchmark`` on generated pictures: one missing on disk, so its card shows a note instead.
``QWENVL_TRAIN_SCREENSHOT=DIR`` saves both pages as PNG there (how docs/report-check-data.png and
docs/report-eval.png were made).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest

from browser_cdp import Browser, find_chromium

PICTURES = "document.querySelectorAll('img.picture').length"
DECODED = "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
ALL_IMAGES = "document.images.length"


@pytest.fixture(scope="module")
def reports(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, int, int]]:
    """The reports: ``name -> (index.html, pictures expected, plots expected)``."""
    from qwenvl_train.cli import main
    from qwenvl_train.format.markup import grounding_markup, parse_groundings
    from qwenvl_train.inference.evaluate import EvalResult, read_eval_samples
    from qwenvl_train.inference.metrics import score_answer, summarize
    from qwenvl_train.reports.evaluation import write_eval_report

    root = tmp_path_factory.mktemp("reports")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["demo-data", str(root / "data"), "--n", "30", "--n-heldout", "8", "--seed", "1"]) == 0
    train = root / "data" / "train.json"
    samples = [
        s
        for s in json.loads(train.read_text(encoding="utf-8"))
        if json.dumps(s, ensure_ascii=False).isascii()
    ]
    samples[1]["conversations"][1]["value"] = "<ref>the shape</ref><box>(1200,10),(30,40)</box>"  # an error
    train.write_text(json.dumps(samples, ensure_ascii=False, indent=1), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()):
        main(["check-data", str(train), "--model", str(tiny_model_dir), "--model_max_length", "120",
              "--report", str(root / "check"), "--report-samples", "3", "--on_error", "skip"])  # fmt: skip

    heldout, _ = read_eval_samples(root / "data" / "heldout.json")
    results = []
    heldout = [s for s in heldout if (s.query + s.reference).isascii()]
    for i, sample in enumerate(heldout):  # a model that is right on half, off by a shift on the others
        prediction = sample.reference
        if i % 2:
            shift = 90 * (i % 4) // 2
            boxes = [g.box for g in parse_groundings(prediction)]
            moved = [(min(x1 + shift, 998), y1, min(x2 + shift, 999), y2) for x1, y1, x2, y2 in boxes]
            prediction = "".join(
                grounding_markup(g.ref, [b]) for g, b in zip(parse_groundings(prediction), moved, strict=True)
            )
        results.append(EvalResult(sample, prediction, score_answer(prediction, sample.reference)))
    metrics = {**summarize(r.score for r in results), "skipped": 0}
    write_eval_report(results, metrics, [], root / "eval")
    check_page = (root / "check" / "index.html").read_text(encoding="utf-8")
    assert check_page.count('<div class="card') == 3 + 3 + ("Samples with errors" in check_page)
    return {
        "check-data": (root / "check" / "index.html", check_page.count('class="picture"'), 1),
        "eval": (root / "eval" / "index.html", len(results), 0),
        "benchmark": (benchmark_report(root / "benchmark"), 7, 1),
    }


def benchmark_report(root: Path) -> Path:
    """A RefCOCO report of eight answers on 320x240 pictures of four colours, the box shifted right a little more
    each time; the last picture is missing (its card has a note): 7 pictures and the IoU chart."""
    from PIL import Image

    from qwenvl_train.eval_mm.scoring import score_benchmark
    from qwenvl_train.reports.benchmark import write_benchmark_report

    root.mkdir()
    colours = [(250, 250, 250), (200, 220, 255), (255, 230, 200), (220, 255, 220)]
    lines, predictions = [], []
    for i in range(8):
        image = f"p{i}.png"
        if i < 7:
            Image.new("RGB", (320, 240), colours[i % 4]).save(root / image)
        lines.append(
            {"image": image, "sent": f"shape {i}", "bbox": [40, 30, 200, 180], "width": 320, "height": 240}
        )
        x = 125 + 60 * i
        predictions.append({"answer": f"<ref>shape {i}</ref><box>({x},125),({x + 500},750)</box>"})
    data = root / "refcoco_val.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = score_benchmark("refcoco_val", data, predictions)
    return write_benchmark_report(result, root / "report", image_root=root)


@pytest.mark.parametrize("name", ["check-data", "eval", "benchmark"])
def test_report_in_chromium(reports: dict[str, tuple[Path, int, int]], name: str, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "no Chromium: install Debian's `chromium` (apt-get install chromium) to run the report test"
        )
    page, expected, plots = reports[name]
    assert expected >= 6
    browser = Browser(binary, tmp_path / "profile", width=1100, height=1500)
    try:
        browser.watch_console()
        browser.navigate(page.as_uri())
        pictures = browser.evaluate(PICTURES)
        assert pictures == expected
        browser.wait_for(f"{DECODED} === {ALL_IMAGES}", timeout=20)
        assert browser.evaluate(ALL_IMAGES) == pictures + plots
        assert browser.console_errors() == []
        if os.environ.get("QWENVL_TRAIN_SCREENSHOT"):
            folder = Path(os.environ["QWENVL_TRAIN_SCREENSHOT"])
            folder.mkdir(parents=True, exist_ok=True)
            browser.screenshot(folder / f"report-{name}.png")
    finally:
        browser.close()
