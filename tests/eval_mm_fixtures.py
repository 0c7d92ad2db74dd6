"""Benchmark files in the original eval_mm layouts, for the tests/test_eval_mm_*.py files (not collected itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference_fixtures import write_image

COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220)]
QUESTIONS = [
    "What colour is the square?",
    "Is it red?",
    "What is written on the sign in the top left corner of the picture?",
    "How many?",
    "Which brand is the camera, and what model is it exactly?",
    "What?",
    "Where was this taken?",
    "Is the light on or off in the room on the right?",
    "Why?",
    "Who holds the umbrella?",
    "What time is it?",
]


def write_images(folder: Path, n: int = 3) -> list[str]:
    """``img0.png``... in ``folder`` (sizes differ: non-square pictures); returns their names."""
    names = []
    for i in range(n):
        write_image(folder / f"img{i}.png", (80 + 10 * i, 60), COLOURS[i % len(COLOURS)])
        names.append(f"img{i}.png")
    return names


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def vqa_file(folder: Path, n: int = len(QUESTIONS)) -> Path:
    """An eval_mm VQA file (``image``, ``question``, ``question_id``, ``answer``), pictures relative to
    ``folder``."""
    images = write_images(folder)
    rows = [
        {
            "image": images[i % 3],
            "question": QUESTIONS[i % len(QUESTIONS)],
            "question_id": 1000 + i,
            "answer": "x",
        }
        for i in range(n)
    ]
    return write_jsonl(folder / "vqa.jsonl", rows)


def refcoco_file(folder: Path) -> Path:
    images = write_images(folder)
    sents = ["the red square", "left dog", "the man in the middle wearing a hat"]
    rows = [
        {"image": images[i], "sent": s, "bbox": [1.0, 2.0, 30.0, 40.0], "width": 80 + 10 * i, "height": 60}
        for i, s in enumerate(sents)
    ]
    return write_jsonl(folder / "refcoco.jsonl", rows)


def scienceqa_file(folder: Path) -> Path:
    images = write_images(folder)
    rows = [
        {"image": images[0], "hint": "", "question": "Which is red?", "choices": ["a", "b"], "answer": 0},
        {
            "image": images[1],
            "hint": "Look closely.",
            "question": "Pick",
            "choices": ["x", "y", "z"],
            "answer": 2,
        },
        {
            "image": images[2],
            "hint": None,
            "question": "Q",
            "choices": ["1", "2", "3", "4", "5"],
            "answer": 4,
        },
    ]
    return write_jsonl(folder / "scienceqa.jsonl", rows)


def seed_file(folder: Path) -> Path:
    images = write_images(folder)
    rows = [
        {
            "question_id": f"q{i}",
            "prompt": f"<img>{folder / images[i]}</img>\nQuestion: What is shown?\nOptions: A. a\nB. b\nC. c\nD. d"
            "\nAnswer:",
            "answer": "B",
        }
        for i in range(3)
    ]
    return write_jsonl(folder / "seed.jsonl", rows)


def caption_file(folder: Path) -> Path:
    images = write_images(folder)
    data = {
        "images": [{"id": 40 + i, "image": name} for i, name in enumerate(images)],
        "annotations": [{"image_id": 40 + i, "id": i, "caption": "a square"} for i in range(3)],
    }
    path = folder / "captions.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def mme_folder(folder: Path) -> Path:
    """MME's layout: ``Your_Results/<task>.txt`` and ``images/<task>/<image>``, relative to ``folder``."""
    results = folder / "Your_Results"
    results.mkdir(parents=True, exist_ok=True)
    for task in ("color", "count"):
        write_images(folder / "images" / task, 2)
        lines = [
            f"img{i}.png\tIs there a {word} square? Please answer yes or no.\t{gt}"
            for i in range(2)
            for word, gt in (("red", "Yes"), ("blue", "No"))
        ]
        (results / f"{task}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results
