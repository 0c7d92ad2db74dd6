"""The pieces of benchmarks/hires_grounding.py that its figures rest on (the run itself takes half an hour and is
not a test): the small shapes sit where their boxes say, the centre error is the distance it claims, and the cell
ranking compares the 64 candidate answers in the order it says, with the true answer among them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import hires_grounding as hg  # noqa: E402

from qwenvl_train.demo.data import draw_shape, grounding_answer  # noqa: E402
from qwenvl_train.format.markup import image_markup  # noqa: E402


def test_grid_shapes_are_drawn_inside_their_cell_and_the_answer_is_their_box(tmp_path: Path) -> None:
    train, heldout = hg.write_small_shapes(tmp_path, n_train=12, n_heldout=4, seed=3)
    samples = json.loads(train.read_text()) + json.loads(heldout.read_text())
    assert len(samples) == 16
    for sample in samples:
        answer = sample["conversations"][1]["value"]
        picture = Image.open(tmp_path / f"images/{sample['id']}.png").convert("RGB")
        background = (
            picture.getpixel((0, 0)) if picture.getpixel((0, 0)) == picture.getpixel((223, 223)) else None
        )
        drawn = [(x, y) for x in range(224) for y in range(224) if picture.getpixel((x, y)) != background]
        xs, ys = [x for x, _ in drawn], [y for _, y in drawn]
        col, row = min(xs) // 28, min(ys) // 28
        # 8 px wide and high, centred in its 28 px cell (offset 10), and the answer boxes exactly that cell's shape
        assert (min(xs) - 28 * col, max(xs) - 28 * col, min(ys) - 28 * row, max(ys) - 28 * row) == (
            10,
            17,
            10,
            17,
        )
        ref = answer[len("<ref>") : answer.index("</ref>")]
        colour, kind = ref.split()[1:]
        assert answer == grounding_answer(hg.grid_cell_shape(colour, kind, col, row), False)


def test_free_placement_keeps_the_first_runs_sizes(tmp_path: Path) -> None:
    _, heldout = hg.write_small_shapes(tmp_path, n_train=0, n_heldout=20, seed=0, placement="free")
    for sample in json.loads(heldout.read_text()):
        answer = sample["conversations"][1]["value"]
        x1, _, x2, _ = (
            int(v) for v in answer.split("<box>(")[1].replace("),(", ",").rstrip(")</box>").split(",")
        )
        assert 6 / 224 * 1000 - 5 <= x2 - x1 <= 12 / 224 * 1000 + 5


def test_centre_errors_are_distances_between_box_centres() -> None:
    samples = [
        {"boxes": [{"reference": [100, 100, 200, 200], "predicted": [130, 140, 230, 240]}]},
        {"boxes": [{"reference": [0, 0, 10, 10], "predicted": None}]},
        {"boxes": []},
    ]
    assert hg.centre_errors(samples) == [50.0]


def write_questions(folder: Path, cells: list[tuple[int, int]]) -> Path:
    (folder / "images").mkdir(parents=True)
    samples = []
    for i, (col, row) in enumerate(cells):
        shape = hg.grid_cell_shape("red", "circle", col, row)
        draw_shape(shape, (250, 250, 250)).save(folder / f"images/q{i}.png")
        samples.append({"id": f"q{i}", "conversations": [
            {"from": "user", "value": image_markup(1, f"images/q{i}.png") + "Where is the red circle?"},
            {"from": "assistant", "value": grounding_answer(shape, False)}]})  # fmt: skip
    path = folder / "heldout.json"
    path.write_text(json.dumps(samples))
    return path


def test_cell_ranking_counts_the_questions_whose_true_cell_has_the_lowest_answer_loss(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qwenvl_train.eval_mm.choice as choice
    from qwenvl_train.eval_mm.generation import prompt_ids
    from qwenvl_train.inference.loading import load_for_inference

    heldout = write_questions(tmp_path, [(0, 0), (3, 5), (7, 7)])
    _, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")

    def ids(col: int, row: int) -> list[int]:
        return prompt_ids(
            tokenizer, grounding_answer(hg.grid_cell_shape("red", "circle", col, row), False), 16
        )

    favoured = [ids(5, 5), ids(3, 5), ids(7, 7)]  # question k's lowest loss: wrong, right, right
    real = choice.option_losses
    calls = []

    def lowest_for_the_favoured(model, prompts, targets, pixel_values, images_per_prompt):  # noqa: ANN001, ANN202
        losses = real(model, prompts, targets, pixel_values, images_per_prompt)  # the real scoring runs too
        calls.append((len(targets[0]), tuple(pixel_values.shape), len(losses[0])))
        return [[0.0 if list(t) == favoured[len(calls) - 1] else 1.0 for t in options] for options in targets]

    monkeypatch.setattr(choice, "option_losses", lowest_for_the_favoured)
    # 64 candidates per question, one picture at the model's 56 px, the favoured answer among the candidates
    assert hg.cell_ranking(tiny_model_dir, heldout, n_queries=16) == pytest.approx(2 / 3)
    assert calls == [(64, (1, 3, 56, 56), 64)] * 3
