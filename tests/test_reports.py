"""Picture reports (``check-data --report``, ``eval --report``, the plots): what the page holds, where the boxes
are drawn (pixel colours on a picture of known size), escaping, and that bad input gives a one-line note, never
a crash. The browser test is tests/test_reports_browser.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from qwenvl_train.format.boxes import to_pixels
from qwenvl_train.format.markup import groundings_by_picture
from qwenvl_train.inference.draw import PALETTE
from qwenvl_train.reports.pictures import PREDICTED, REFERENCE

WHITE = (255, 255, 255)
W, H = 200, 100  # the known picture size: boxes map to pixels by hand


def pictures_in(page: str) -> list[str]:
    return re.findall(r'<img class="picture" src="([^"]+)"', page)


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 0) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def write_grounding_data(root: Path) -> Path:
    """Five samples: a box on a white 200x100 picture (with markup-looking text to escape), a text sample, a box
    outside [0, 1000) (an error, with a picture), a missing picture (an error), two pictures with a box each."""
    Image.new("RGB", (W, H), WHITE).save(root / "white.png")
    Image.new("RGB", (W, H), (0, 0, 0)).save(root / "black.png")
    conv = lambda q, a: [{"from": "user", "value": q}, {"from": "assistant", "value": a}]  # noqa: E731
    samples = [
        {"id": "boxed", "conversations": conv(
            "Picture 1: <img>white.png</img>\nWhere is it? <script>alert('x')</script> & co",
            "<ref>the thing</ref><box>(100,200),(500,800)</box>")},
        {"id": "text", "conversations": conv("Hi", "Hello.")},
        {"id": "outside", "conversations": conv(
            "Picture 1: <img>white.png</img>\nWhere?", "<ref>far</ref><box>(1200,10),(30,40)</box>")},
        {"id": "missing", "conversations": conv("Picture 1: <img>nowhere.png</img>\nWhere?", "Nowhere.")},
        {"id": "two", "conversations": [
            {"from": "user", "value": "Picture 1: <img>white.png</img>\nPicture 2: <img>black.png</img>\nFind it"},
            {"from": "assistant", "value": "<ref>it</ref><box>(0,0),(500,500)</box>"},
        ]},
    ]  # fmt: skip
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    return path


def test_groundings_by_picture_follow_the_latest_picture_and_the_question_ref() -> None:
    placed = groundings_by_picture(
        [
            "Picture 1: <img>a.png</img>\nPicture 2: <img>b.png</img>\nWhere is <ref>the cat</ref>?",
            "<box>(1,2),(3,4)</box> and <ref>a dog</ref><box>(5,6),(7,8)</box>",
            "Picture 3: <img>c.png</img>\n<box>(9,9),(10,10)</box>",
        ]
    )
    got = [(image, g.ref, g.follows_ref, g.points) for image, g in placed]
    assert got == [
        ("b.png", "the cat", True, ((1, 2), (3, 4))),
        ("b.png", "a dog", True, ((5, 6), (7, 8))),
        ("c.png", None, False, ((9, 9), (10, 10))),
    ]


@pytest.fixture(scope="module")
def check_report(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    from qwenvl_train.cli import main

    root = tmp_path_factory.mktemp("check-report")
    data = write_grounding_data(root)
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        code = main(["check-data", str(data), "--model", str(tiny_model_dir), "--report", str(root / "report"),
                     "--report-samples", "1", "--on_error", "skip"])  # fmt: skip
    assert code == 0, out.getvalue()
    page = (root / "report" / "index.html").read_text(encoding="utf-8")
    return root / "report", page, out.getvalue()


def test_check_data_report_lists_counts_errors_and_pictures(check_report: tuple[Path, str, str]) -> None:
    folder, page, printed = check_report
    assert f"report: {folder / 'index.html'}" in printed
    assert "samples: 5 read, 3 ok, 2 with errors" in page
    errors = re.findall(r"<li>(.*?)</li>", page)
    assert len(errors) == 2
    assert (
        "sample &#x27;outside&#x27;: turn 1: &lt;box&gt;(1200,10),(30,40)&lt;/box&gt;: coordinate 1200"
        in errors[0]
    )
    assert "sample &#x27;missing&#x27;" in errors[1] and "nowhere.png: no such file" in errors[1]
    assert "lengths.png" in page and (folder / "images" / "lengths.png").stat().st_size > 1000
    # first 1 (boxed), random 1 of the one other without error (two: 2 pictures), errors: outside (1 picture),
    # missing (no picture: a note instead)
    assert page.count('class="card') == 3 + 1
    assert len(pictures_in(page)) == 4
    assert "nowhere.png: no such file" in page.split("Samples with errors")[1]
    for src in pictures_in(page):
        assert (folder / src).is_file()
    assert not re.search(r"(?:https?:)?//", page)  # nothing fetched from elsewhere


def test_check_data_report_escapes_the_conversation(check_report: tuple[Path, str, str]) -> None:
    _, page, _ = check_report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "&lt;ref&gt;the thing&lt;/ref&gt;&lt;box&gt;(100,200),(500,800)&lt;/box&gt;" in page


def test_check_data_report_draws_boxes_at_their_pixels(check_report: tuple[Path, str, str]) -> None:
    folder, page, _ = check_report
    first = Image.open(folder / pictures_in(page)[0]).convert("RGB")
    assert first.size == (W, H)
    (x1, y1), (x2, y2) = to_pixels([(100, 200), (500, 800)], W, H)
    assert (x1, y1, x2, y2) == (20, 20, 100, 80)
    mid_y = (y1 + y2) // 2
    assert first.getpixel((x1, mid_y)) == PALETTE[0]  # left edge
    assert first.getpixel((x2, mid_y)) == PALETTE[0]  # right edge
    assert first.getpixel(((x1 + x2) // 2, y2)) == PALETTE[0]  # bottom edge
    assert first.getpixel((x1 - 3, mid_y)) == WHITE and first.getpixel(((x1 + x2) // 2, mid_y)) == WHITE
    assert first.getpixel((x2 + 3, mid_y)) == WHITE
    # two pictures: the box is on the latest one (black), the first stays as it was
    two = [Image.open(folder / src).convert("RGB") for src in pictures_in(page)[1:3]]
    assert two[0].getcolors() == [(W * H, WHITE)]
    assert two[1].getpixel((0, 25)) == PALETTE[0] and two[1].getpixel((150, 75)) == (0, 0, 0)


def eval_result(root: Path, sample_id: str, query: str, reference: str, prediction: str):
    from qwenvl_train.inference.evaluate import EvalResult, EvalSample
    from qwenvl_train.inference.metrics import score_answer

    sample = EvalSample(sample_id, str(root / "data.json"), query, [], None, reference)
    return EvalResult(sample, prediction, score_answer(prediction, reference))


def test_eval_report_sorts_worst_first_and_draws_both_boxes(tmp_path: Path) -> None:
    from qwenvl_train.inference.metrics import summarize
    from qwenvl_train.reports.evaluation import write_eval_report

    Image.new("RGB", (W, H), WHITE).save(tmp_path / "white.png")
    q = "Picture 1: <img>white.png</img>\nWhere is <ref>the <b>thing</b></ref>?"
    results = [
        eval_result(tmp_path, "good", q, "<box>(100,200),(500,800)</box>", "<box>(100,200),(500,800)</box>"),
        eval_result(tmp_path, "text", "Say hi", "Hi.", "Bye <script>"),
        eval_result(tmp_path, "bad", q, "<box>(100,200),(500,800)</box>", "<box>(600,100),(900,900)</box>"),
        eval_result(
            tmp_path, "lost", "Picture 1: <img>gone.png</img>\nWhere?", "<box>(1,1),(2,2)</box>", "no"
        ),
    ]
    metrics = {**summarize(r.score for r in results), "skipped": 1}
    path = write_eval_report(
        results, metrics, ["data.json: sample 'x': an <img> that is bad"], tmp_path / "r"
    )
    page = path.read_text(encoding="utf-8")
    titles = re.findall(r"<b>sample &#x27;(\w+)&#x27;", page)
    assert titles == ["bad", "lost", "good", "text"]  # IoU 0, 0, 1, then the text answer
    assert "IoU 0.000" in page and "IoU 1.000" in page and "exact match: no" in page
    assert "<td>mean_iou</td>" in page and "an &lt;img&gt; that is bad" in page
    assert "<script>" not in page and "Bye &lt;script&gt;" in page
    assert "gone.png: no such file" in page
    pictures = pictures_in(page)
    assert len(pictures) == 2
    bad = Image.open(path.parent / pictures[0]).convert("RGB")
    (rx1, ry1), (rx2, ry2) = to_pixels([(100, 200), (500, 800)], W, H)
    (px1, py1), (px2, py2) = to_pixels([(600, 100), (900, 900)], W, H)
    assert bad.getpixel((rx1, (ry1 + ry2) // 2)) == REFERENCE
    assert bad.getpixel((px2, (py1 + py2) // 2)) == PREDICTED
    assert bad.getpixel(((rx1 + rx2) // 2, (ry1 + ry2) // 2)) == WHITE


def test_eval_command_writes_its_report(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from qwenvl_train.cli import main

    Image.new("RGB", (W, H), WHITE).save(tmp_path / "white.png")
    sample = {"id": "one", "conversations": [
        {"from": "user", "value": "Picture 1: <img>white.png</img>\nWhere is <ref>it</ref>?"},
        {"from": "assistant", "value": "<box>(100,200),(500,800)</box>"}]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps([sample]), encoding="utf-8")
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path / "data.json"), "--device", "cpu",
                 "--max-new-tokens", "2", "--report", str(tmp_path / "report")])  # fmt: skip
    assert code == 0
    assert f"report: {tmp_path / 'report' / 'index.html'}" in capsys.readouterr().err
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert len(pictures_in(page)) == 1 and "<td>samples</td>" in page


def test_check_data_report_survives_a_lost_file_and_refuses_an_unwritable_folder(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    from qwenvl_train.cli import main

    data = write_grounding_data(tmp_path)
    (tmp_path / "broken.json").write_text('[{"id": "a", "conversations": [', encoding="utf-8")
    args = ["check-data", str(data), str(tmp_path / "broken.json"), str(tmp_path / "absent.json"),
            "--model", str(tiny_model_dir), "--on_error", "skip", "--report-samples", "0"]  # fmt: skip
    assert main([*args, "--report", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    assert "absent.json: no such file" in page and "broken.json" in page
    assert page.count('<div class="card') == 2  # --report-samples 0: only the samples with errors
    capsys.readouterr()
    (tmp_path / "taken").write_text("a file, not a folder", encoding="utf-8")
    assert main([*args, "--report", str(tmp_path / "taken")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [  # said before the scan, nothing written over the file
        f"error: --report {tmp_path / 'taken'} is a regular file, not a folder: give a folder to write into"
    ]
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "a file, not a folder"


def test_gallery_pick_is_first_n_then_a_seeded_random_n_then_the_errors(tmp_path: Path) -> None:
    from qwenvl_train.format.sample import DataProblem
    from qwenvl_train.reports.check_data import pick_samples

    Image.new("RGB", (W, H), WHITE).save(tmp_path / "white.png")
    lines = []
    for i in range(40):
        user = "Hi" if i % 10 == 9 else "Picture 1: <img>white.png</img>\nWhere?"  # every 10th: no picture
        sample = {
            "id": f"s{i}",
            "conversations": [{"from": "user", "value": user}, {"from": "assistant", "value": "x"}],
        }
        lines.append(json.dumps(sample) + "\n")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(lines), encoding="utf-8")
    errors = [DataProblem(str(data), "bad", f"s{i}", 1, i + 1) for i in (1, 20, 29, 33)]
    gallery = pick_samples([data], errors, n=3, seed=0)
    ids = lambda shown: [s.sample.id for s in shown]  # noqa: E731
    assert ids(gallery.first) == ["s0", "s1", "s2"] and gallery.first[1].errors == [str(errors[0])]
    assert ids(gallery.errors) == ["s20", "s33"]  # s29 has no picture
    assert gallery.with_pictures == 36 and gallery.error_samples == 3
    picked = ids(gallery.random)
    assert len(picked) == 3 and not set(picked) & {"s0", "s1", "s2", "s9", "s19", "s20", "s29", "s33", "s39"}
    assert ids(pick_samples([data], errors, n=3, seed=0).random) == picked  # seeded: the same pick again
    assert len({tuple(ids(pick_samples([data], errors, n=3, seed=s).random)) for s in range(5)}) > 1
