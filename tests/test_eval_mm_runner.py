"""The benchmark run: questions split over ranks, answers appended as they come, an interrupted run resumed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qwenvl_train.eval_mm.runner as runner
from eval_mm_fixtures import (
    caption_file,
    mme_folder,
    refcoco_file,
    scienceqa_file,
    seed_file,
    vqa_file,
    write_jsonl,
)
from qwenvl_train.errors import ConfigurationError
from qwenvl_train.eval_mm.catalog import get_benchmark
from qwenvl_train.eval_mm.prediction_log import (
    PredictionLog,
    PredictionLogError,
    merge_parts,
    part_path,
    read_records,
)
from qwenvl_train.eval_mm.questions import QuestionError
from qwenvl_train.eval_mm.runner import BenchmarkRun, run_benchmark
from qwenvl_train.eval_mm.sharding import shard
from train_fixtures import cpu_env, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("total", [0, 1, 2, 5, 7, 10, 11, 100])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shards_cover_every_question_exactly_once(total: int, world_size: int) -> None:
    shards = [shard(total, world_size, rank) for rank in range(world_size)]
    assert [i for s in shards for i in s] == list(range(total))  # contiguous, in order, nothing dropped
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_sizes_by_hand() -> None:
    assert [shard(7, 3, r) for r in range(3)] == [range(0, 3), range(3, 5), range(5, 7)]
    assert [shard(2, 3, r) for r in range(3)] == [range(0, 1), range(1, 2), range(2, 2)]
    with pytest.raises(ValueError):
        shard(5, 2, 2)


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    with PredictionLog(path) as log:
        log.write([{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}])
    with path.open("a") as fh:
        fh.write('{"question_id": 3, "ans')  # killed in the middle of a write
    assert read_records(path) == [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}]
    with PredictionLog(path) as log:
        log.write([{"question_id": 3, "answer": "c"}])
    assert path.read_text().splitlines()[-1] == '{"question_id": 3, "answer": "c"}'
    assert len(read_records(path)) == 3
    path.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(PredictionLogError, match=r"preds.jsonl:2: not a JSON object"):
        read_records(path)


def test_parts_are_merged_in_question_order_without_duplicates(tmp_path: Path) -> None:
    bench = get_benchmark("docvqa_val")
    path = tmp_path / "preds.jsonl"
    with PredictionLog(path) as log:
        log.write([{"questionId": 5, "answer": "e"}])
    with PredictionLog(part_path(path, 1)) as log:
        log.write([{"questionId": 9, "answer": "i"}, {"questionId": 5, "answer": "again"}])
    with PredictionLog(part_path(path, 0)) as log:
        log.write([{"questionId": 7, "answer": "g"}])
    assert merge_parts(path, bench, {"5": 0, "7": 1, "9": 2}) == 2
    assert [r["answer"] for r in read_records(path)] == ["e", "g", "i"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "pass either --predictions FILE or --model DIR"),
        ({"model": "m", "predictions": Path("p")}, "pass either --predictions FILE or --model DIR"),
        ({"model": "m", "resume": True}, "--resume needs --save-predictions"),
        ({"model": "m", "on_error": "ignore"}, "--on-error must be one of stop, skip"),
        ({"model": "m", "scoring": "mine"}, "--scoring must be one of original, official"),
        ({"model": "m", "batch_size": 0}, "--batch-size must be at least 1"),
    ],
)
def test_options_that_do_not_go_together(options: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        run_benchmark(BenchmarkRun("textvqa_val", Path("d.jsonl"), **options))


def server_run(data: Path, model: Path, save: Path, **options) -> BenchmarkRun:
    """A run of the server-scored VQAv2 test-dev split: generation and predictions only, nothing to score."""
    return BenchmarkRun(
        "vqav2_testdev",
        data,
        image_root=data.parent,
        model=str(model),
        save_predictions=save,
        batch_size=2,
        device="cpu",
        dtype="fp32",
        progress=False,
        **options,
    )


def test_a_run_killed_at_60_percent_and_resumed_ends_with_the_same_predictions(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    data = vqa_file(tmp_path)  # 11 questions: 6 batches of 2
    whole = tmp_path / "whole.jsonl"
    result = run_benchmark(server_run(data, tiny_model_dir, whole))
    assert (result["num_questions"], result["num_predictions"], result["num_skipped"]) == (11, 11, 0)
    expected = read_records(whole)
    assert [r["question_id"] for r in expected] == list(range(1000, 1011))

    resumed = tmp_path / "resumed.jsonl"
    real = runner.answer_batch
    batches: list[int] = []

    def dies_after_3_batches(*args, **kwargs):
        if len(batches) == 3:
            raise KeyboardInterrupt("killed")
        batches.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "answer_batch", dies_after_3_batches)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(server_run(data, tiny_model_dir, resumed))
    assert read_records(resumed) == expected[:6]  # each batch was on disk as soon as it was answered
    with resumed.open("a") as fh:
        fh.write('{"question_id": 1006, "answer": "tor')  # and the kill tore a line
    with pytest.raises(PredictionLogError, match="already holds 6 prediction"):
        run_benchmark(server_run(data, tiny_model_dir, resumed))

    asked: list[int] = []

    def counting(model, tokenizer, bench, batch, *rest):
        asked.extend(q.id for q in batch)
        return real(model, tokenizer, bench, batch, *rest)

    monkeypatch.setattr(runner, "answer_batch", counting)
    result = run_benchmark(server_run(data, tiny_model_dir, resumed, resume=True))
    assert asked == list(range(1006, 1011))  # only what was missing
    assert read_records(resumed) == expected
    assert result["num_predictions"] == 11


def test_bad_questions_stop_the_run_or_are_skipped_and_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = vqa_file(tmp_path, 3)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows.insert(1, {"image": "gone.png", "question": "q", "question_id": 7})
    write_jsonl(data, rows)
    with pytest.raises(QuestionError, match=r"vqa.jsonl:2: picture 'gone.png' not found"):
        run_benchmark(server_run(data, tiny_model_dir, tmp_path / "p.jsonl"))
    out = tmp_path / "m.json"
    result = run_benchmark(server_run(data, tiny_model_dir, tmp_path / "q.jsonl", on_error="skip", out=out))
    assert (result["num_questions"], result["num_predictions"], result["num_skipped"]) == (4, 3, 1)
    assert "vqa.jsonl:2: picture 'gone.png' not found" in result["skipped"][0]
    assert json.loads(out.read_text()) == result


def vqa_official_files(folder: Path, data: Path) -> tuple[Path, Path]:
    """The official questions and annotations JSON for the questions of ``data`` (ten human answers each)."""
    ids = [json.loads(line)["question_id"] for line in data.read_text().splitlines()]
    questions = folder / "questions.json"
    questions.write_text(json.dumps({"questions": [{"question_id": i, "question": "q"} for i in ids]}))
    annotations = folder / "annotations.json"
    annotations.write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "question_id": i,
                        "image_id": 0,
                        "answer_type": "other",
                        "question_type": "what",
                        "answers": [{"answer": "x", "answer_id": j + 1} for j in range(10)],
                    }
                    for i in ids
                ]
            }
        )
    )
    return questions, annotations


def four_vqa(folder: Path) -> Path:
    return vqa_file(folder, 4)


FAMILIES = [
    ("textvqa_val", vqa_file, 11),
    ("docvqa_val", four_vqa, 4),  # 100 new tokens each: fewer questions
    ("chartqa_test_augmented", four_vqa, 4),
    ("gqa_testdev", vqa_file, 11),
    ("ai2diagram_test", vqa_file, 11),
    ("ocrvqa_test", four_vqa, 4),
    ("scienceqa_test_img", scienceqa_file, 3),
    ("seed_bench_image", seed_file, 3),
    ("refcoco+_val", refcoco_file, 3),
    ("nocaps", caption_file, 3),
    ("mme", mme_folder, 8),
    ("vizwiz_test", vqa_file, 11),
]


@pytest.mark.parametrize(("name", "write", "count"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_generates_then_scores_end_to_end(
    name: str, write, count: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The tiny model answers every question and the scorer finds an answer for each: the ids line up."""
    if name == "nocaps":
        pytest.importorskip("pycocoevalcap")
    model = tiny_model_dir
    if (
        name == "mme"
    ):  # model.chat's settings: the chat generation_config's 512 new tokens would take minutes here
        model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
        config = json.loads((model / "generation_config.json").read_text())
        (model / "generation_config.json").write_text(json.dumps({**config, "max_new_tokens": 6}))
    data = write(tmp_path)
    questions = annotations = None
    if name == "textvqa_val":
        questions, annotations = vqa_official_files(tmp_path, data)
    out = tmp_path / "metrics.json"
    run = BenchmarkRun(
        name, data, questions=questions, annotations=annotations, image_root=tmp_path, model=str(model),
        out=out, batch_size=2, save_predictions=tmp_path / "preds.jsonl", device="cpu", dtype="fp32",
        progress=False,
    )  # fmt: skip
    result = run_benchmark(run)
    assert (result["benchmark"], result["num_questions"], result["num_missing"]) == (name, count, 0)
    assert result["num_predictions"] == count and result.get("num_unknown", 0) == 0
    bench = get_benchmark(name)
    if bench.metric is None:
        assert result["metrics"] == {}
    else:
        assert bench.metric in result["metrics"]
        assert all(value >= 0 for value in result["metrics"].values())
    assert json.loads(out.read_text())["metrics"] == result["metrics"]
    # Scoring the saved predictions again, without a model, gives the same numbers.
    again = run_benchmark(
        BenchmarkRun(
            name, data, questions=questions, annotations=annotations, predictions=tmp_path / "preds.jsonl"
        )
    )
    assert again["metrics"] == result["metrics"] and again["num_missing"] == 0


@pytest.mark.slow
def test_torchrun_two_ranks_answer_every_question_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m qwenvl_train eval --benchmark ...``, the command as a user runs it."""
    data = vqa_file(tmp_path)  # 11 questions: shards of 6 and 5, batches of 2 (the last one short)
    single = tmp_path / "single.jsonl"
    run_benchmark(server_run(data, tiny_model_dir, single))
    two, out = tmp_path / "two.jsonl", tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "qwenvl_train", "eval", "--benchmark", "vqav2_testdev", "--data", str(data), "--image-root",
           str(tmp_path), "--model", str(tiny_model_dir), "--save-predictions", str(two), "--out", str(out),
           "--batch-size", "2"]  # fmt: skip
    proc = subprocess.run(cmd, env=cpu_env(), cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert read_records(two) == read_records(single)
    assert not list(tmp_path.glob("two.jsonl.rank*.part"))  # merged, then removed
    result = json.loads(out.read_text())
    assert (result["num_questions"], result["num_predictions"], result["num_missing"]) == (11, 11, 0)
    # Rank 0 alone prints the table.
    assert proc.stdout.count("vqav2_testdev (original scoring): 11 question(s), 0 missing") == 1
