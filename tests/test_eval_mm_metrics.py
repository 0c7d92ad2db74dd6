"""The metric functions of eval_mm: each value below is worked out by hand from the original scripts' formulas
(``vqa_eval.py``, ``infographicsvqa_eval.py``, ``evaluate_vqa.py``, ``evaluate_grounding.py``, MME's
``calculation.py``); the comment beside a case shows the arithmetic."""

from __future__ import annotations

import math

import pytest

from qwenvl_train.eval_mm.metrics import (
    anls_score,
    choice_index,
    choice_score,
    exact_match_score,
    gqa_clean_answer,
    grounding_iou,
    grouped_percent,
    is_hit,
    mme_task_scores,
    normalize_answer,
    parse_original_box,
    parse_yes_no,
    percent,
    relaxed_score,
    vqa_score,
)
from qwenvl_train.eval_mm.metrics.grounding import box_iou, grid_to_pixels
from qwenvl_train.eval_mm.metrics.vqa import CONTRACTIONS, process_digits_articles, process_punctuation

# ---- VQA score (vqa_eval.py) ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two dogs.", "2 dogs"),  # number word, period at the end removed
        ("dont know", "don't know"),  # contraction restored
        ("An Apple", "apple"),  # article dropped, lower case
        ("none", "0"),
        ("the  cat \n sat", "cat sat"),  # newline to space, whitespace runs collapse on split
        ("somebody'd", "somebodyd"),  # the table's odd entry, kept
        ("1.5", "1.5"),  # a period before a digit stays
        ("5.", "5"),  # "(?!<=\d)" is a lookahead that always holds: a period after a digit goes
        ("yes-no", "yes no"),  # "-" not next to a space: becomes a space
        ("1,000 (approx)", "1000 approx"),  # a digit comma anywhere: every punctuation char is deleted
    ],
)
def test_prediction_normalisation(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_contraction_table_size_and_entries() -> None:
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["wont"] == "won't" and CONTRACTIONS["y'all'dve"] == "y'all'd've"


def test_punctuation_step_keeps_case_and_spaces_and_removes_at_most_32_periods() -> None:
    assert process_punctuation("Hi - Fi") == "Hi  Fi"  # "-" next to a space: deleted, both spaces stay
    assert process_punctuation("Hi-Fi") == "Hi Fi"
    assert process_punctuation("." * 40) == "." * 8  # re.UNICODE (32) passed as re.sub's count
    assert process_punctuation("a.b") == "ab"
    assert process_digits_articles("The Three") == "3"


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        # all ten agree: each annotator's nine others all match -> min(1, 9/3) = 1
        ("Two", ["2"] * 10, 1.0),
        # 2 of 10 said red: a red annotator sees 1 other red (1/3), a blue one 2 (2/3): (2/3 + 16/3) / 10
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6),
        # 1 of 10: the red annotator sees none, the nine others see 1: 9 * (1/3) / 10
        ("red", ["red"] + ["blue"] * 9, 0.3),
        # 3 of 10: the three see 2 (2/3 each), the seven see 3 (1 each): (2 + 7) / 10
        ("red", ["red"] * 3 + ["blue"] * 7, 0.9),
        # 4 of 10: everyone sees at least 3
        ("red", ["red"] * 4 + ["blue"] * 6, 1.0),
        ("dont", ["don't"] * 5 + ["no"] * 5, 1.0),
    ],
)
def test_vqa_score_answers_some_humans_gave(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_score(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_human_answers_get_punctuation_only_and_only_when_they_differ() -> None:
    # All ten "yes.": the humans are not processed, the prediction loses its period: no match.
    assert vqa_score("yes.", ["yes."] * 10) == 0.0
    assert vqa_score("yes.", ["yes."] * 10, "official") == 1.0
    # Nine "yes." and one "no": now the humans' periods go too, so all nine match.
    assert vqa_score("yes", ["yes."] * 9 + ["no"]) == 1.0
    # Humans are never lower-cased in the original: "Yes" never equals the prediction's "yes".
    assert vqa_score("yes", ["Yes"] * 5 + ["no"] * 5) == 0.0
    # Official: "Yes" -> "yes"; a yes-annotator sees 4 other yes (1), a no-annotator 5 (1).
    assert vqa_score("yes", ["Yes"] * 5 + ["no"] * 5, "official") == 1.0
    # Official also maps the humans' number words: "two" x 3 vs prediction "2".
    assert vqa_score("2", ["two"] * 3 + ["3"] * 7) == pytest.approx(0.0)
    assert vqa_score("2", ["two"] * 3 + ["3"] * 7, "official") == pytest.approx(0.9)


def test_vqa_others_are_the_annotation_dicts_that_differ() -> None:
    # Official annotations carry answer_id: leave-one-out. Without one, equal dicts drop out together.
    with_ids = [{"answer": "red", "answer_id": i} for i in range(3)] + [
        {"answer": "blue", "answer_id": i} for i in range(3, 10)
    ]
    assert vqa_score("red", with_ids) == pytest.approx(0.9)
    without_ids = [{"answer": "red"}] * 3 + [{"answer": "blue"}] * 7
    # a red annotator now sees no "other" red (the equal dicts are all excluded); a blue one sees 3: 7 / 10
    assert vqa_score("red", without_ids) == pytest.approx(0.7)


# ---- ANLS (infographicsvqa_eval.py) ----


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Hello ", ["hello"], 1.0),  # normalised strings equal
        ("abxx", ["abcd"], 0.5),  # 2 edits / 4 = 0.5 -> 1 - 0.5 = 0.5, not below the threshold: kept
        ("abcxy", ["abcde"], 0.6),  # 2 / 5 -> 0.6
        ("abxyz", ["abcde"], 0.0),  # 3 / 5 -> 0.4 < 0.5 -> 0
        ("abxx", ["abcd   "], 1 - 2 / 7),  # the raw gold (7 chars) is the denominator: 0.714, not 0.5
        ("strasse", ["straße"], 1 - 2 / 7),  # len("straße".upper()) == 7; 2 edits
        ("abxyz", ["zzzzz", "abcdz"], 0.6),  # the best gold answer counts: 2 / 5
        ("", ["a"], 0.0),
    ],
)
def test_anls(prediction: str, answers: list[str], expected: float) -> None:
    assert anls_score(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_anls_just_below_and_above_half() -> None:
    # 10 chars, 5 edits -> exactly 0.5 kept; 6 edits -> 0.4 dropped; 4 edits -> 0.6.
    assert anls_score("abcdeVWXYZ", ["abcdefghij"]) == 0.5
    assert anls_score("abcdUVWXYZ", ["abcdefghij"]) == 0.0
    assert anls_score("abcdefWXYZ", ["abcdefghij"]) == pytest.approx(0.6)


# ---- ChartQA relaxed accuracy ----


@pytest.mark.parametrize(
    ("prediction", "gold", "original", "official"),
    [
        ("100", "95.1", 1.0, 0.0),  # 4.9 / 100 = 4.9 % of the prediction; 4.9 / 95.1 = 5.15 % of the gold
        ("100", "94.9", 0.0, 0.0),  # 5.1 % / 5.37 %
        ("100", "104.9", 1.0, 1.0),  # 4.9 % / 4.67 %
        ("100", "105.1", 0.0, 1.0),  # 5.1 % of the prediction; 4.85 % of the gold
        ("12%", "0.12", 1.0, 1.0),  # x% reads as x / 100
        ("12%", "12", 0.0, 0.0),
        ("1,234", "1234", 0.0, 0.0),  # not a number: compared as strings
        ("1,234", "1,234", 1.0, 1.0),
        (" Yes ", "yes", 1.0, 1.0),  # stripped, lower-cased string compare
        ("0", "0.0", 0.0, 0.0),  # a zero target falls back to the string compare
        ("0.01", "0", 0.0, 0.0),
    ],
)
def test_relaxed_accuracy(prediction: str, gold: str, original: float, official: float) -> None:
    assert relaxed_score(prediction, [gold]) == original
    assert relaxed_score(prediction, [gold], "official") == official


def test_relaxed_any_gold_answer() -> None:
    assert relaxed_score("7", ["six", "7"]) == 1.0


# ---- GQA clean-up and exact match ----


@pytest.mark.parametrize(
    ("answer", "cleaned"),
    [
        ("The answer is a red car.", "red car"),
        ("tea cup", "cup"),  # "a " inside "tea cup": split there, as the script does
        ("Yes, it is.", "yes"),
        ("the color of the sky", "color"),
        ("Left!", "left"),
    ],
)
def test_gqa_clean_answer(answer: str, cleaned: str) -> None:
    assert gqa_clean_answer(answer) == cleaned


def test_exact_match_strip_lower() -> None:
    assert exact_match_score(" Paris ", ["paris"]) == 1.0
    assert exact_match_score("Paris.", ["paris"]) == 0.0
    assert exact_match_score("b", ["a", " B"]) == 1.0


# ---- multiple choice ----


def test_choice() -> None:
    assert [choice_index(v) for v in ("B", "b", 1, "2", "B.", "", None, True)] == [
        1,
        1,
        1,
        2,
        None,
        None,
        None,
        None,
    ]
    assert choice_score("B", 1) == 1.0 and choice_score(1, "B") == 1.0
    assert choice_score("C", "B") == 0.0 and choice_score(None, "A") == 0.0


# ---- grounding ----


def test_original_box_parsing() -> None:
    assert parse_original_box("<ref>dog</ref><box>(100,200),(500,600)</box>") == (100, 200, 500, 600)
    assert parse_original_box("The dog is at (10,20),(30,40) in the picture") == (10, 20, 30, 40)
    assert parse_original_box("(1,2),(3,4) and (100,200),(500,600)") == (1, 2, 3, 4)  # the first only
    assert parse_original_box("( 1, 2),(3 ,4 )") == (1, 2, 3, 4)  # float() takes surrounding spaces
    for malformed in ("(10,20,30),(40,50)", "(a,b),(c,d)", "(10 20),(30,40)", "no box", "(10,20) (30,40)"):
        assert parse_original_box(malformed) is None, malformed
    # The lazy pattern starts at the first "(": here group 1 is "x) then (10,20", which is not two numbers.
    assert parse_original_box("(x) then (10,20),(30,40)") is None


def test_grounding_scales_by_width_and_height() -> None:
    # (0,0),(999,999) on a 640x480 picture is the whole picture.
    iou, box, parsed = grounding_iou("(0,0),(999,999)", [0, 0, 640, 480], 640, 480)
    assert (iou, box, parsed) == (1.0, (0.0, 0.0, 640.0, 480.0), True)
    # Half the width: inter 320*480, union 640*480 -> 0.5, a hit at the threshold.
    iou, box, _ = grounding_iou("(0,0),(999,999)", [0, 0, 320, 480], 640, 480)
    assert iou == 0.5 and is_hit(iou)
    # Non-square: x scales by 640, y by 480 (x 499.5/999*640 = 320).
    _, box, _ = grounding_iou("(499.5,0),(999,999)", [0, 0, 1, 1], 640, 480)
    assert box == (320.0, 0.0, 640.0, 480.0)


def test_grounding_malformed_is_zero_box_and_unsorted_corners() -> None:
    iou, box, parsed = grounding_iou("a dog", [10, 10, 20, 20], 100, 100)
    assert (iou, box, parsed) == (0.0, (0.0, 0.0, 0.0, 0.0), False)
    # Two empty boxes: 0 / 0 is NaN, which the original counts as a miss.
    iou, _, _ = grounding_iou("a dog", [0, 0, 0, 0], 100, 100)
    assert math.isnan(iou) and not is_hit(iou)
    # Corners given right-to-left: area (-400)*(-400) > 0 but no overlap in the original; sorted when official.
    answer = "(500,600),(100,200)"
    assert grounding_iou(answer, [100, 200, 500, 600], 999, 999)[0] == 0.0
    assert grounding_iou(answer, [100, 200, 500, 600], 999, 999, "official")[0] == 1.0


def test_grounding_float32_matches_torch_arithmetic() -> None:
    torch = pytest.importorskip("torch")
    import random

    rng = random.Random(0)
    for _ in range(300):
        w, h = rng.randint(50, 1000), rng.randint(50, 1000)
        grid = [rng.uniform(0, 999) for _ in range(4)]
        gt = [rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)]
        # The original's arithmetic in torch: float32 tensors, / 999, * w and * h, torchvision's box_iou.
        p = torch.tensor(grid, dtype=torch.float32).view(-1, 4) / 999
        p[:, 0::2] *= w
        p[:, 1::2] *= h
        g = torch.tensor(gt, dtype=torch.float32).view(-1, 4)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        lt = torch.max(p[:, None, :2], g[:, :2])
        rb = torch.min(p[:, None, 2:], g[:, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[:, :, 0] * wh[:, :, 1]
        expected = (inter / (area(p)[:, None] + area(g) - inter)).item()
        assert grid_to_pixels(tuple(grid), w, h) == tuple(p[0].tolist())
        got = box_iou(grid_to_pixels(tuple(grid), w, h), gt)
        assert got == expected or (math.isnan(got) and math.isnan(expected))


# ---- MME ----


def test_mme_yes_no_reading() -> None:
    assert [
        parse_yes_no(a) for a in ("Yes", "no", "Yes, there is.", "Not at all", "None", "I think yes", "")
    ] == [
        "yes",
        "no",
        "yes",
        "no",
        "no",
        "other",
        "other",
    ]


def test_mme_acc_plus_on_pairs() -> None:
    gold = ["yes", "no", "yes", "no"]
    # all right: acc 100 + acc+ 100
    assert mme_task_scores(gold, ["Yes", "No", "Yes, there is", "Not at all"])["score"] == 200.0
    # right, wrong, right, right: acc 3/4 = 75, acc+ 1/2 pictures = 50
    assert mme_task_scores(gold, ["Yes", "Yes", "Yes", "No"]) == {
        "acc": 75.0,
        "acc_plus": 50.0,
        "score": 125.0,
    }
    # "other" is never right
    assert mme_task_scores(gold, ["maybe", "No", "Yes", "No"]) == {
        "acc": 75.0,
        "acc_plus": 50.0,
        "score": 125.0,
    }
    with pytest.raises(ValueError):
        mme_task_scores(["yes"], ["yes"])


def test_mme_fraction_then_times_100() -> None:
    # 5 of 6 right: calculation.py computes 5/6*100 (83.33333333333334), not 100*5/6 (83.33333333333333);
    # acc+ 2 of 3 pictures: 2/3*100 = 66.66666666666666.
    gold = ["yes", "no"] * 3
    answers = ["yes", "no", "yes", "no", "yes", "yes"]
    assert 5 / 6 * 100 != 100 * 5 / 6
    scores = mme_task_scores(gold, answers)
    assert scores == {"acc": 5 / 6 * 100, "acc_plus": 2 / 3 * 100, "score": 5 / 6 * 100 + 2 / 3 * 100}


# ---- aggregation ----


def test_percent_and_groups() -> None:
    assert percent([1.0, 0.0, 0.5, 0.5]) == 50.0
    assert percent([]) == 0.0
    assert grouped_percent([1.0, 0.0, 1.0], ["a", "b", None]) == {"a": 100.0, "b": 0.0}
