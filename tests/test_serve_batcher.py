"""The batching engine: batched rows answer as they would alone (greedy ids equal ``generation.generate``'s), late
requests join a running batch, at most ``max_batch_size`` rows run together, a cancelled or finished row leaves
at once, a failure touches only its own rows; and over HTTP, concurrent streams each get their own answer while
the event loop stays free."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from serve_fixtures import running_server

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    from qwenvl_train.inference.loading import load_for_inference

    return load_for_inference(str(tiny_model_dir), device="cpu")


def prompt_for(tokenizer, n_queries: int, text: str, pictures: int = 0) -> list[int]:
    from qwenvl_train.format.render import make_context
    from qwenvl_train.serve.prompt import picture

    query = "".join(picture(k + 1) for k in range(pictures)) + text
    return make_context(tokenizer, query, n_queries=n_queries).input_ids


class Collector:
    """A job's events, gathered from the engine thread."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.deltas: list[str] = []

    def emit(self, event) -> None:
        self.events.put(event)

    def wait(self):
        from qwenvl_train.serve.batcher import Delta

        deadline = time.monotonic() + TIMEOUT_S
        while True:
            event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(event, Delta):
                self.deltas.append(event.text)
            else:
                return event


def job(prompt, pixels=None, max_new_tokens=12, collector=None):
    from qwenvl_train.serve.batcher import Job
    from qwenvl_train.serve.sampling import Sampling

    collector = collector or Collector()
    return Job(prompt, pixels, Sampling(greedy=True), max_new_tokens, collector.emit), collector


def solo_ids(model, prompt, pixels, max_new_tokens) -> list[int]:
    from qwenvl_train.inference.generation import chat_generation_config, generate

    config = chat_generation_config(model, do_sample=False, max_new_tokens=max_new_tokens)
    (ids,) = generate(model, [prompt], pixels, config)
    return ids


@pytest.fixture(scope="module")
def prompts(loaded):
    model, tokenizer = loaded
    n = model.config.n_queries
    size = model.config.image_size
    gen = torch.Generator().manual_seed(0)
    return [
        (prompt_for(tokenizer, n, "Hello"), None),
        (
            prompt_for(tokenizer, n, "Where is the red square in this picture?", 1),
            torch.randn(1, 3, size, size, generator=gen),
        ),
        (
            prompt_for(tokenizer, n, "Compare them, please, in a few words.", 2),
            torch.randn(2, 3, size, size, generator=gen),
        ),
        (prompt_for(tokenizer, n, "A much longer question " * 12), None),
        (prompt_for(tokenizer, n, "Short", 1), torch.randn(1, 3, size, size, generator=gen)),
    ]


@pytest.fixture(scope="module")
def expected(loaded, prompts):
    model, tokenizer = loaded
    return [solo_ids(model, p, px, 12) for p, px in prompts]


def decoded(tokenizer, ids) -> str:
    from qwenvl_train.inference.generation import decode_answer

    return decode_answer(tokenizer, ids)


def test_batched_rows_answer_as_alone(loaded, prompts, expected) -> None:
    from qwenvl_train.serve.batcher import Batcher, Done

    model, tokenizer = loaded
    engine = Batcher(model, tokenizer, max_batch_size=8)
    try:
        jobs = [job(p, px) for p, px in prompts]
        for j, _ in jobs:
            engine.submit(j)
        results = [c.wait() for _, c in jobs]
    finally:
        engine.close()
    for (j, collector), done, ids in zip(jobs, results, expected, strict=True):
        assert isinstance(done, Done)
        assert done.text == decoded(tokenizer, ids)
        assert "".join(collector.deltas) == done.text
        assert done.prompt_tokens == len(j.prompt) and done.completion_tokens >= len(ids)


def test_late_requests_join_the_running_batch(loaded, prompts, expected, monkeypatch) -> None:
    """Rows prefilled at different times share one cache (left-padded) and still answer as alone; never more
    than max_batch_size rows in a forward."""
    from qwenvl_train.serve.batcher import Batcher

    model, tokenizer = loaded
    widths: list[int] = []
    forward = model.forward

    def counting(*args, **kwargs):
        widths.append(int(kwargs["input_ids"].shape[0]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    engine = Batcher(model, tokenizer, max_batch_size=3)
    try:
        first = [job(p, px, max_new_tokens=12) for p, px in prompts[:2]]
        for j, _ in first:
            engine.submit(j)
        deadline = time.monotonic() + TIMEOUT_S
        while engine.steps < 2 and time.monotonic() < deadline:  # the first batch is running
            time.sleep(0.001)
        rest = [job(p, px, max_new_tokens=12) for p, px in prompts[2:]]
        for j, _ in rest:
            engine.submit(j)
        results = [c.wait() for _, c in first + rest]
    finally:
        engine.close()
    for done, ids in zip(results, expected, strict=True):
        assert done.text == decoded(tokenizer, ids)
    assert max(widths) == 3  # batches were joined, up to the limit and never beyond
    assert engine.steps < sum(len(ids) for ids in expected)  # rows were stepped together


def test_cancelled_row_leaves_at_once_and_others_finish(loaded, prompts, expected) -> None:
    from qwenvl_train.serve.batcher import Batcher

    model, tokenizer = loaded
    engine = Batcher(model, tokenizer, max_batch_size=4)
    try:
        long_job, long_events = job(prompts[0][0], max_new_tokens=10_000)
        engine.submit(long_job)
        long_events.events.get(timeout=TIMEOUT_S)
        other, other_events = job(*prompts[1])
        engine.submit(other)
        long_job.cancel()
        done = other_events.wait()
        assert done.text == decoded(tokenizer, expected[1])
        deadline = time.monotonic() + 5
        while engine.active_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.active_rows == 0
        assert engine.steps < 1000
    finally:
        engine.close()


def test_a_failure_fails_only_its_own_rows(loaded, prompts, expected) -> None:
    from qwenvl_train.serve.batcher import Batcher, Done, Failed

    model, tokenizer = loaded
    engine = Batcher(model, tokenizer, max_batch_size=4)
    try:
        size = model.config.image_size
        broken, broken_events = job(prompts[1][0], torch.randn(2, 3, size, size))  # one span, two pictures
        engine.submit(broken)
        assert isinstance(broken_events.wait(), Failed)
        fine, fine_events = job(*prompts[0])
        engine.submit(fine)
        done = fine_events.wait()
        assert isinstance(done, Done) and done.text == decoded(tokenizer, expected[0])
    finally:
        engine.close()


def test_stop_strings_end_the_answer(loaded, prompts, expected) -> None:
    from qwenvl_train.serve.batcher import Batcher

    model, tokenizer = loaded
    full = decoded(tokenizer, expected[3])
    assert len(full) > 4
    stop = full[2:4]
    engine = Batcher(model, tokenizer)
    try:
        j, collector = job(prompts[3][0])
        j.stop = [stop]
        engine.submit(j)
        done = collector.wait()
    finally:
        engine.close()
    assert done.finish_reason == "stop"
    assert done.text == full[: full.find(stop)].rstrip()
    assert "".join(collector.deltas) == done.text


def stream(url: str, text: str, max_tokens: int, hang_up_after: int | None = None) -> tuple[str, float]:
    """The streamed answer's text and the time to its first content; hangs up after that many chunks."""
    body = {
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.monotonic()
    first = None
    parts: list[str] = []
    import json

    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT_S) as response:
        assert response.status_code == 200
        for n, line in enumerate(response.iter_lines()):
            if hang_up_after is not None and n >= hang_up_after:
                break
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                first = first or time.monotonic() - start
                parts.append(choices[0]["delta"]["content"])
    return "".join(parts), first or 0.0


def test_concurrent_streams_each_get_their_own_answer(loaded) -> None:
    model, tokenizer = loaded
    questions = [f"Question number {i}: what is {'very ' * i}big?" for i in range(6)]
    with running_server(model, tokenizer, max_batch_size=4) as url:
        alone = [stream(url, q, 8)[0] for q in questions[:3]]
        results: dict[int, str] = {}
        hung = threading.Thread(target=stream, args=(url, "Hang up on me", 100_000, 3))
        hung.start()

        def ask(i: int) -> None:
            results[i] = stream(url, questions[i], 8)[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        health = httpx.get(f"{url}/health", timeout=5)  # answered while the model works
        assert health.status_code == 200
        for thread in threads + [hung]:
            thread.join(TIMEOUT_S)
        assert [results[i] for i in range(3)] == alone
        assert len(results) == 6
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = httpx.get(f"{url}/health", timeout=5).json()
            if state["active"] == 0 and state["waiting"] == 0:
                break
            time.sleep(0.05)
        assert state["active"] == 0 and state["waiting"] == 0  # the hung-up stream freed its row
