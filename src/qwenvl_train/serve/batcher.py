"""The batcher: one worker thread generates every queued request, together, in left-padded batches.

Requests wait in a queue. Whenever rows are free (at most ``max_batch_size`` in all), the waiting requests are
prefilled together (left-padded, :func:`qwenvl_train.inference.generation.left_pad`) and join the running batch
at the next step, so a request never waits for the others to finish. Each step feeds every row its last token;
a row that finishes (a stop id, a stop string, ``max_tokens``) or whose client went away leaves the batch at
once (its cache rows are dropped, and the pad columns no row needs any more are cut off).

Positions: every row carries its own positions (``position_ids``), counted from its first real token, so a
row computes what it would alone whatever its padding, and batches prefilled at different times can be joined
by padding the shorter cache on the left. Batches are joined only while the result stays within the model's
``seq_length`` and their dynamic-NTK scale is the same (always 1 within ``seq_length``); otherwise they run side
by side, each stepped in turn with its own scale.

The engine thread is the only one that touches the model. Clients hear from it through ``emit`` (a thread-safe
callable, e.g. ``loop.call_soon_threadsafe``-based): :class:`Delta` events with new text, then one
:class:`Done` (or :class:`Failed`). The event loop never waits for the model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from ..inference.generation import STOP_IDS, left_pad, undecodable_ids
from .detok import AnswerText
from .sampling import Sampling, pick
from .vision_cache import VisionCache

log = logging.getLogger(__name__)


@dataclass
class Delta:
    """New answer text for one client."""

    text: str


@dataclass
class Done:
    """The answer is complete."""

    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    """Generation failed for this request (the engine goes on serving the others)."""

    message: str
    code: str | None = None


SHUTTING_DOWN = "the server is shutting down"

Event = Delta | Done | Failed


@dataclass
class Job:
    """One request for the engine."""

    prompt: list[int]
    pixels: torch.Tensor | None
    sampling: Sampling
    max_new_tokens: int
    emit: Callable[[Event], None]
    stop: list[str] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    queued_bytes: int = 0  # the picture memory counted while it waits (0 once it left the queue)
    digests: list[str | None] | None = (
        None  # each picture's bytes' SHA-256 (the vision cache's key), if known
    )

    def cancel(self) -> None:
        """The client went away: the row is freed at the next step (or never started)."""
        self.cancelled.set()

    @property
    def pixel_bytes(self) -> int:
        """The memory its decoded pictures hold."""
        return 0 if self.pixels is None else self.pixels.nelement() * self.pixels.element_size()


class Row:
    """A job being generated: its answer so far and its position."""

    def __init__(self, job: Job, tokenizer: Any) -> None:
        self.job = job
        self.answer: list[int] = []
        self.generated = 0
        self.text = AnswerText(tokenizer, job.stop)
        self.finish_reason: str | None = None

    def seen(self) -> list[int]:
        return self.job.prompt + self.answer

    def add(self, token: int) -> None:
        """Take the token picked for this row; sets ``finish_reason`` when the answer is complete."""
        self.generated += 1
        if token in STOP_IDS:
            self.finish_reason = "stop"
            return
        self.answer.append(token)
        delta = self.text.update(self.answer)
        if self.text.stopped:
            self.finish_reason = "stop"
        elif self.generated >= self.job.max_new_tokens:
            self.finish_reason = "length"
            delta += self.text.finish(self.answer)
        if delta:
            self.job.emit(Delta(delta))

    def done(self) -> Done:
        if not self.text.stopped:
            tail = self.text.finish(self.answer)
            if tail:
                self.job.emit(Delta(tail))
        return Done(self.text.shown, self.finish_reason or "stop", len(self.job.prompt), self.generated)


class Batch:
    """Rows generated together: their KV cache, attention mask, next positions and last tokens."""

    def __init__(
        self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor, alpha: Any
    ) -> None:
        self.rows = rows
        self.cache = cache
        self.mask = mask
        self.positions = positions
        self.alpha = alpha

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows, then cut the pad columns no row needs."""
        if len(indices) != len(self.rows):
            index = torch.as_tensor(indices, dtype=torch.long, device=self.mask.device)
            self.rows = [self.rows[i] for i in indices]
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.positions = self.positions[index]
        if not self.rows:
            return
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]


def _cacheable(job: Job) -> bool:
    """Every picture of the job has a digest (a local file has none: it is encoded afresh)."""
    return job.digests is not None and all(job.digests) and len(job.digests) == len(job.pixels)


def _pad_left(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def join(a: Batch, b: Batch) -> Batch:
    """One batch holding the rows of both (the shorter cache padded on the left)."""
    length = max(a.length, b.length)
    layers = []
    for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
        keys = torch.cat([_pad_left(la.keys, length - a.length, 2), _pad_left(lb.keys, length - b.length, 2)])
        values = torch.cat(
            [_pad_left(la.values, length - a.length, 2), _pad_left(lb.values, length - b.length, 2)]
        )
        layers.append((keys, values))
    mask = torch.cat([_pad_left(a.mask, length - a.length, 1), _pad_left(b.mask, length - b.length, 1)])
    positions = torch.cat([a.positions, b.positions])
    return Batch(a.rows + b.rows, DynamicCache(ddp_cache_data=layers), mask, positions, a.alpha)


class Batcher:
    """The worker thread and its queue (see the module docstring).

    Args:
        model: a ``QwenVLForCausalLM`` in eval mode.
        tokenizer: its tokenizer.
        max_batch_size: rows generated together at most.
        vision_cache: where the vision tower's output for a picture is kept and reused (None: always run it).
    """

    def __init__(
        self, model: Any, tokenizer: Any, max_batch_size: int = 8, vision_cache: VisionCache | None = None
    ) -> None:
        self.model = model
        self.vision_cache = vision_cache
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.seq_length = int(getattr(model.config, "seq_length", 2048))
        self.suppress = torch.as_tensor(undecodable_ids(model), dtype=torch.long)
        self.device = model.device
        self.incoming: queue.Queue[Job | None] = queue.Queue()
        self.pending: deque[Job] = deque()
        self.batches: list[Batch] = []
        self.steps = 0
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._queued_lock = threading.Lock()
        self._queued_bytes = 0
        self._thread = threading.Thread(target=self._run, name="qwenvl-serve-engine", daemon=True)
        self._thread.start()

    # The client side -------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job (any thread)."""
        with self._queued_lock:
            job.queued_bytes = job.pixel_bytes
            self._queued_bytes += job.queued_bytes
        self.incoming.put(job)

    @property
    def waiting(self) -> int:
        """Jobs queued, not yet generating."""
        return len(self.pending) + self.incoming.qsize()

    @property
    def queued_pixel_bytes(self) -> int:
        """The memory the pictures of the queued jobs hold (what ``--max-queued-image-mb`` bounds)."""
        return self._queued_bytes

    def _dequeued(self, job: Job) -> None:
        """The job leaves the queue (prefilled or dropped): its pictures no longer count."""
        with self._queued_lock:
            self._queued_bytes -= job.queued_bytes
            job.queued_bytes = 0

    def abort(self) -> None:
        """End every queued and running job now, each told :data:`SHUTTING_DOWN` (any thread; the end of a
        graceful shutdown). The worker goes on, for nothing more comes."""
        self._abort.set()
        self.incoming.put(None)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker; jobs still queued or running are told so."""
        self._stop.set()
        self.incoming.put(None)
        self._thread.join(timeout)

    @property
    def active_rows(self) -> int:
        return sum(len(b.rows) for b in self.batches)

    # The worker ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take(block=not self.batches and not self.pending)
            if self._stop.is_set():
                break
            if self._abort.is_set():
                self._abort.clear()
                self._fail_all()
                continue
            self._admit()
            self._join()
            for batch in list(self.batches):
                self._guarded(batch.rows, self._step, batch)
        self._take(block=False)
        self._fail_all()

    def _fail_all(self) -> None:
        for job in list(self.pending) + [r.job for b in self.batches for r in b.rows]:
            job.emit(Failed(SHUTTING_DOWN, "server_shutting_down"))
        for job in self.pending:
            self._dequeued(job)
        self.pending.clear()
        self.batches = []

    def _take(self, block: bool) -> None:
        try:
            item = self.incoming.get(timeout=0.5) if block else self.incoming.get_nowait()
            while True:
                if item is not None:
                    self.pending.append(item)
                item = self.incoming.get_nowait()
        except queue.Empty:
            pass
        for job in [job for job in self.pending if job.cancelled.is_set()]:  # a client left while it waited
            self.pending.remove(job)
            self._dequeued(job)

    def _admit(self) -> None:
        free = self.max_batch_size - self.active_rows
        jobs: list[Job] = []
        while self.pending and len(jobs) < free:
            job = self.pending.popleft()
            if not job.cancelled.is_set():
                jobs.append(job)
            else:
                self._dequeued(job)
        if jobs:
            rows = [Row(job, self.tokenizer) for job in jobs]
            try:
                self._guarded(rows, self._prefill, rows)
            finally:
                for job in jobs:
                    self._dequeued(job)

    def _guarded(self, rows: list[Row], action: Callable[..., None], *args: Any) -> None:
        """Run ``action``; if it fails, only ``rows`` fail (their batch is dropped), the engine goes on."""
        try:
            action(*args)
        except Exception as exc:  # noqa: BLE001 - reported to the clients of these rows
            log.exception("generation failed")
            failed = {id(row) for row in rows}
            self.batches = [b for b in self.batches if not failed & {id(row) for row in b.rows}]
            for row in rows:
                row.job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))

    def _alpha(self) -> Any:
        return getattr(self.model.transformer, "_ntk_alpha", None)

    def _set_alpha(self, alpha: Any) -> None:
        if alpha is not None:  # the dynamic-NTK scale is chosen at prefill and kept on the model
            self.model.transformer._ntk_alpha = alpha

    def _logits(self, hidden_logits: torch.Tensor) -> torch.Tensor:
        """The last position's logits of every row, float32 on the CPU (where each row's generator lives)."""
        logits = hidden_logits[:, -1, :].float().cpu()
        if len(self.suppress):
            logits[:, self.suppress] = float("-inf")
        return logits

    @torch.no_grad()
    def _prefill(self, rows: list[Row]) -> None:
        prompts = [row.job.prompt for row in rows]
        input_ids, mask = left_pad(prompts, 0)
        positions = (mask.cumsum(dim=1) - 1).clamp_min(0)
        jobs = [row.job for row in rows if row.job.pixels is not None]
        pictures: dict[str, Any] = {}
        if jobs and self.vision_cache is not None and all(_cacheable(job) for job in jobs):
            pictures["image_features"] = self._features(jobs)
        elif jobs:
            pictures["pixel_values"] = torch.cat([job.pixels for job in jobs]).to(
                self.device, self.model.dtype
            )
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            **pictures,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = self._logits(out.logits)
        batch = Batch(
            rows, out.cache, mask.to(self.device), positions[:, -1].to(self.device) + 1, self._alpha()
        )
        self._advance(batch, logits)
        if batch.rows:
            self.batches.append(batch)

    def _features(self, jobs: list[Job]) -> torch.Tensor:
        """The vision features of the jobs' pictures in order: from the cache, the tower run once on the rest."""
        cache = self.vision_cache
        assert cache is not None
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, torch.Tensor] = {}
        order: list[str] = []
        for job in jobs:
            for digest, pixels in zip(job.digests or [], job.pixels, strict=True):
                order.append(digest)
                if digest in found or digest in missing:
                    continue
                features = cache.get(digest)
                if features is None:
                    missing[digest] = pixels
                else:
                    found[digest] = features
        if missing:
            batch = torch.stack(list(missing.values())).to(self.device, self.model.dtype)
            computed = self.model.transformer.visual(batch)
            for digest, features in zip(missing, computed, strict=True):
                found[digest] = features
                cache.put(digest, features)
        return torch.stack([found[digest] for digest in order])

    def _join(self) -> None:
        """Join the batches that can share a cache (see the module docstring)."""
        joined: list[Batch] = []
        for batch in self.batches:
            last = joined[-1] if joined else None
            if (
                last is not None
                and last.alpha == batch.alpha
                and max(last.length, batch.length) < self.seq_length
            ):
                joined[-1] = join(last, batch)
            else:
                joined.append(batch)
        self.batches = joined

    @torch.no_grad()
    def _step(self, batch: Batch) -> None:
        live = [i for i, row in enumerate(batch.rows) if not row.job.cancelled.is_set()]
        batch.keep(live)
        if not batch.rows:
            self.batches.remove(batch)
            return
        self._set_alpha(batch.alpha)
        last = torch.as_tensor(
            [[row.answer[-1] if row.answer else 0] for row in batch.rows], device=self.device
        )
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
        out = self.model(
            input_ids=last,
            attention_mask=batch.mask,
            position_ids=batch.positions[:, None],
            cache=batch.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch.positions = batch.positions + 1
        self.steps += 1
        self._advance(batch, self._logits(out.logits))
        if not batch.rows:
            self.batches.remove(batch)

    def _advance(self, batch: Batch, logits: torch.Tensor) -> None:
        """Give each row its next token; rows that are complete or cancelled leave the batch."""
        keep: list[int] = []
        for i, row in enumerate(batch.rows):
            if row.job.cancelled.is_set():
                continue
            row.add(pick(logits[i], row.job.sampling, row.seen()))
            if row.finish_reason is None:
                keep.append(i)
            else:
                row.job.emit(row.done())
        batch.keep(keep)
