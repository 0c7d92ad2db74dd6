"""The benchmark catalog: the original eval_mm names, prompts and generation lengths."""

from __future__ import annotations

import pytest

from qwenvl_train.eval_mm.catalog import BENCHMARKS, UnknownBenchmarkError, get_benchmark

ISSUE_NAMES = (
    "vqav2_val okvqa_val textvqa_val vizwiz_val docvqa_val chartqa_test_human chartqa_test_augmented "
    "gqa_testdev ocrvqa_val ocrvqa_test ai2diagram_test scienceqa_test_img seed_bench_image refcoco_val "
    "refcoco_testA refcoco_testB refcoco+_val refcoco+_testA refcoco+_testB refcocog_val refcocog_test "
    "flickr nocaps mme vqav2_testdev vizwiz_test docvqa_test"
).split()


def test_every_original_name_is_there_and_nothing_else() -> None:
    assert sorted(BENCHMARKS) == sorted(ISSUE_NAMES)


def test_server_splits_have_no_local_metric() -> None:
    server = {name for name, b in BENCHMARKS.items() if b.metric is None}
    assert server == {"vqav2_testdev", "vizwiz_test", "docvqa_test"}
    assert all(BENCHMARKS[n].family == "server" for n in server)


def test_generation_lengths_are_the_originals() -> None:
    assert (get_benchmark("textvqa_val").max_new_tokens, get_benchmark("textvqa_val").min_new_tokens) == (
        10,
        1,
    )
    assert get_benchmark("docvqa_val").max_new_tokens == 100
    assert get_benchmark("chartqa_test_human").max_new_tokens == 100
    assert get_benchmark("ai2diagram_test").max_new_tokens == 10
    refcoco = get_benchmark("refcoco+_testB")
    assert (refcoco.max_new_tokens, refcoco.min_new_tokens, refcoco.strip) == (28, 10, False)
    assert (get_benchmark("nocaps").max_new_tokens, get_benchmark("nocaps").min_new_tokens) == (30, 8)


def test_prompts_are_the_original_strings() -> None:
    assert get_benchmark("vqav2_val").prompt.format("a.jpg", "What?") == "<img>a.jpg</img>What? Answer:"
    assert (
        get_benchmark("refcoco_val").prompt.format("a.jpg", "the dog")
        == "<img>a.jpg</img><ref>the dog</ref><box>"
    )
    assert get_benchmark("flickr").prompt.format("a.jpg") == "<img>a.jpg</img>Describe the image in English:"
    assert (
        get_benchmark("scienceqa_test_img").prompt.format("a.jpg", "N/A", "Q?", "A. x\nB. y")
        == "<img>a.jpg</img>Context: N/A\nQuestion: Q?\nOptions: A. x\nB. y\nAnswer:"
    )


def test_unknown_and_video_names_are_one_line_errors() -> None:
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'textvqa'; known: vqav2_val"):
        get_benchmark("textvqa")
    with pytest.raises(UnknownBenchmarkError, match="Qwen-VL takes pictures"):
        get_benchmark("seed_bench_video")
