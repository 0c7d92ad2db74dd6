"""The FastAPI application: routes, authentication, limits and the OpenAI error bodies.

Routes: ``GET /health``, ``GET /metrics`` (:mod:`.metrics`), ``GET /v1/models``, ``POST /v1/chat/completions``
(see :mod:`.schema` for what a request may hold and :mod:`.stream` for ``stream: true``), and the chat page at
``GET``/``HEAD /`` (static files of the package under ``/static``). With an API key every ``/v1/`` route and
``/metrics`` need ``Authorization: Bearer KEY`` (401 otherwise); ``/health`` and the page do not (the page asks
for the key). In front of them all, :mod:`.hosts` checks ``Host`` and ``Origin``.

A chat request: the body is read within ``body_timeout`` (:func:`read_body`), parsed and rendered in a worker
thread, admitted or refused at once (:func:`admit`: 429 / 503 with ``Retry-After``), its pictures loaded in the
fetch pool (:func:`load_pictures`), then queued for the batcher. A hang-up at any point cancels what is left
(the downloads, the job) and is one quiet log line.

Every refusal is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status (5xx: an internal error,
whose text goes to the log, never to the client); the request's work is done off the event loop, so a slow
image, a huge prompt or a long answer never holds up another client.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..data.images import Deadline
from . import fetch
from .answer_boxes import boxes_field
from .batcher import Batcher, Delta, Done, Event, Failed, Job
from .fetch import ImagePolicy, LoadedImage
from .hosts import HostRules, install_guards
from .http_guard import HttpLimits
from .limits import RETRY_AFTER_S, Limits
from .metrics import Metrics
from .prompt import Prompt, render
from .request_log import RequestLog
from .sampling import settings
from .schema import APIError, ChatRequest, parse_json, parse_request
from .stream import DONE, chunk, sse, usage_chunk

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 32 << 20
#: Threads fetching and decoding pictures, for all requests (each request uses at most
#: ``Limits.max_concurrent_fetches`` of them at once).
FETCH_THREADS = 16

log = logging.getLogger("qwenvl_train.serve")


@dataclass
class ServerState:
    """What the routes need: the model's facts, the batcher and the options; ``draining``, ``preparing`` and
    ``reserved_image_bytes`` are the app's own bookkeeping (event loop only)."""

    name: str
    tokenizer: Any
    batcher: Batcher
    generation_config: Any
    image_size: int
    n_queries: int
    max_window_size: int
    policy: ImagePolicy
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_log: RequestLog | None = None
    limits: Limits = field(default_factory=Limits)
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    hosts: HostRules = field(default_factory=HostRules)
    metrics: Metrics | None = None
    draining: bool = False
    preparing: int = 0
    reserved_image_bytes: int = 0
    fetch_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="qwenvl-serve-image")
    )

    @property
    def waiting(self) -> int:
        """Requests accepted and not yet generating (loading their pictures, or queued for a row)."""
        return self.preparing + self.batcher.waiting

    def picture_bytes(self, count: int) -> int:
        """The memory ``count`` decoded pictures hold while queued (float32, 3 x size x size)."""
        return count * 3 * self.image_size * self.image_size * 4


def error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class Busy(APIError):
    """The server cannot take the request now (429 / 503); ``Retry-After`` goes with it."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(
            message, status=status, type="server_error" if status == 503 else "rate_limit_error", code=code
        )


class ClientGone(Exception):
    """The client hung up before its answer was complete (logged as one quiet line, answered with nothing)."""


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it is over ``limit`` bytes, and with 408 when it has not all come
    within ``timeout`` seconds (a client that sends part of a body and stops).

    Raises:
        ClientGone: the client hung up during the upload.
    """
    too_large = APIError(
        f"the request body is larger than {limit} bytes", status=413, code="request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()

    async def receive_all() -> None:
        async for piece in request.stream():
            body.extend(piece)
            if len(body) > limit:
                raise too_large

    try:
        await asyncio.wait_for(receive_all(), timeout)
    except TimeoutError:
        raise APIError(
            f"the request body did not arrive within {timeout:g} s", status=408, code="request_timeout"
        ) from None
    except ClientDisconnect:
        raise ClientGone() from None
    return bytes(body)


def check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise APIError(
            "missing or incorrect API key: send 'Authorization: Bearer KEY'",
            status=401,
            type="authentication_error",
            code="invalid_api_key",
        )


def parse_and_render(state: ServerState, raw: bytes) -> tuple[ChatRequest, Prompt]:
    """The checked request and its prompt (CPU work on a large body: run it in a worker thread)."""
    chat = parse_request(parse_json(raw))
    if chat.model is not None and chat.model != state.name:
        raise APIError(
            f"the model {chat.model!r} is not served here (this server serves {state.name!r})",
            status=404,
            type="not_found_error",
            param="model",
            code="model_not_found",
        )
    images = sum(part.kind == "image" for message in chat.messages for part in message.parts)
    if images > state.limits.max_images:
        raise APIError(
            f"the request holds {images} pictures, at most {state.limits.max_images} are accepted",
            param="messages",
            code="too_many_images",
        )
    return chat, render(chat, state.tokenizer, state.n_queries, state.max_window_size)


def admit(state: ServerState, pictures: int) -> int:
    """Take a place among the waiting requests, with memory for ``pictures`` decoded pictures; returns the bytes
    reserved (give them back with :func:`release`).

    Raises:
        Busy: 503 while shutting down, 429 when ``max_waiting`` requests wait, 503 when the pictures would take
            the queued picture memory over its bound.
    """
    limits = state.limits
    if state.draining:
        raise Busy("the server is shutting down", 503, "server_shutting_down")
    if state.waiting >= limits.max_waiting:
        raise Busy(
            f"the server is busy: {state.waiting} requests are waiting (at most {limits.max_waiting}); retry later",
            429,
            "server_busy",
        )
    reserved = state.picture_bytes(pictures)
    if reserved > limits.max_queued_image_bytes:
        raise APIError(
            f"the request's {pictures} pictures need more memory than the server sets aside for waiting "
            "pictures: send fewer",
            param="messages",
            code="too_many_images",
        )
    queued = state.reserved_image_bytes + state.batcher.queued_pixel_bytes
    if reserved and queued + reserved > limits.max_queued_image_bytes:
        raise Busy(
            "the server is busy: the pictures of the waiting requests fill the memory set aside for them; "
            "retry later",
            503,
            "server_busy",
        )
    state.preparing += 1
    state.reserved_image_bytes += reserved
    return reserved


def release(state: ServerState, reserved: int) -> None:
    state.reserved_image_bytes -= reserved


async def until_disconnected(request: Request) -> None:
    """Returns when the client has hung up (the body must have been read: what comes now is only that news)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(state: ServerState) -> FastAPI:
    """The application serving ``state``'s model."""
    app = FastAPI(title="qwenvl-train serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    if state.metrics is None:
        state.metrics = Metrics(state)
    metrics = state.metrics
    install_guards(app, state)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        if request.url.path == "/v1/chat/completions":
            metrics.requests.labels(str(exc.status)).inc()
        headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, Busy) else None
        if exc.status in (408, 413):
            headers = {"Connection": "close"}  # the rest of the body is not read: the connection cannot go on
        return error_response(exc, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(
            APIError(str(exc.detail), status=exc.status_code, type=kind), dict(exc.headers or {})
        )

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, _: ClientGone) -> Response:
        client = request.client
        log.info("client %s hung up before its answer", f"{client.host}:{client.port}" if client else "?")
        metrics.requests.labels("499").inc()
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error answering a request", exc_info=exc)
        metrics.requests.labels("500").inc()
        error = APIError("internal error (the server's log has the details)", status=500, type="server_error")
        return error_response(error)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "draining" if state.draining else "ok",
            "model": state.name,
            "active": state.batcher.active_rows,
            "waiting": state.waiting,
        }

    @app.get("/metrics")
    async def metrics_page(request: Request) -> Response:
        check_key(request, state.api_key)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request, state.api_key)
        card = {"id": state.name, "object": "model", "created": 0, "owned_by": "qwenvl-train"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_key(request, state.api_key)
        if state.draining:
            raise Busy("the server is shutting down", 503, "server_shutting_down")
        started = time.monotonic()
        raw = await read_body(request, state.max_body_bytes, state.limits.body_timeout)
        chat, prompt = await asyncio.to_thread(parse_and_render, state, raw)
        reserved = admit(state, len(set(prompt.pictures)))
        watcher = asyncio.create_task(until_disconnected(request))
        job: Job | None = None
        try:
            work = asyncio.create_task(prepare_job(state, chat, prompt))
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                raise ClientGone()
            job, events, size = work.result()
        finally:
            state.preparing -= 1
            release(state, reserved)  # once queued, the batcher counts the job's pixels
            if job is None:
                watcher.cancel()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if chat.stream:
            watcher.cancel()  # the streaming response watches for the hang-up itself
            stream = stream_answer(state, chat, prompt, size, job, events, completion_id, created, started)
            return StreamingResponse(
                stream,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
                background=BackgroundTask(job.cancel),  # also when the client left before the stream began
            )
        try:
            return await full_answer(
                state, chat, prompt, size, job, events, completion_id, created, watcher, started
            )
        finally:
            watcher.cancel()
            job.cancel()

    @app.api_route("/", methods=["GET", "HEAD"])
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")  # hosts.HostGuard adds the page's security headers

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def load_pictures(state: ServerState, prompt: Prompt) -> dict[int, LoadedImage]:
    """The pictures the prompt kept, by number: at most ``max_concurrent_fetches`` at once, in the fetch pool;
    when one fails or the request is cancelled, the others' downloads are ended at once."""
    numbers = sorted(set(prompt.pictures))
    gate = asyncio.Semaphore(state.limits.max_concurrent_fetches)
    deadlines = [Deadline(state.policy.timeout) for _ in numbers]
    loop = asyncio.get_running_loop()

    async def one(number: int, deadline: Deadline) -> LoadedImage:
        part = prompt.image_parts[number - 1]
        async with gate:
            return await loop.run_in_executor(
                state.fetch_pool, fetch.load, part.value, state.policy, part.param, state.image_size, deadline
            )

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(n, d)) for n, d in zip(numbers, deadlines, strict=True)]
    except BaseExceptionGroup as group_error:
        for deadline in deadlines:
            deadline.end_now()
        first = group_error.exceptions[0]
        raise first from None
    except BaseException:
        for deadline in deadlines:
            deadline.end_now()
        raise
    finally:
        for deadline in deadlines:
            deadline.cancel()
    return {n: t.result() for n, t in zip(numbers, tasks, strict=True)}


async def prepare_job(
    state: ServerState, chat: ChatRequest, prompt: Prompt
) -> tuple[Job, asyncio.Queue[Event], tuple[int, int] | None]:
    """Load the pictures (worker threads), queue the job; returns it, its event queue and the latest picture's
    size (None when it is not in the prompt)."""
    import torch

    by_number = await load_pictures(state, prompt)
    pixels = torch.stack([by_number[k].pixels for k in prompt.pictures]) if prompt.pictures else None
    latest = by_number.get(prompt.latest_picture or 0)
    size = (latest.width, latest.height) if latest is not None else None

    window_left = state.max_window_size - len(prompt.input_ids)
    budget = chat.max_tokens or int(state.generation_config.max_new_tokens or 512)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is stopping
            pass

    job = Job(
        prompt=prompt.input_ids,
        pixels=pixels,
        sampling=settings(state.generation_config, chat.temperature, chat.top_p, chat.seed),
        max_new_tokens=max(1, min(budget, window_left)),
        emit=emit,
        stop=chat.stop,
        digests=[by_number[k].digest for k in prompt.pictures] if prompt.pictures else None,
    )
    if state.draining:
        raise Busy("the server is shutting down", 503, "server_shutting_down")
    state.batcher.submit(job)
    return job, events, size


def usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def answered(state: ServerState, done: Done, started: float, count: bool = True) -> None:
    """Count a completed answer in the metrics (``count``: also as a 200 request)."""
    metrics = state.metrics
    metrics.prompt_tokens.inc(done.prompt_tokens)
    metrics.generated_tokens.inc(done.completion_tokens)
    metrics.latency.observe(time.monotonic() - started)
    if count:
        metrics.requests.labels("200").inc()


async def log_answer(
    state: ServerState, chat: ChatRequest, done: Done, completion_id: str, created: int
) -> None:
    """Append the completed request to ``--log-requests`` (when given), off the event loop."""
    if state.request_log is not None:
        facts = {"id": completion_id, "created": created, "model": state.name}
        facts |= {"finish_reason": done.finish_reason, "usage": usage(done)}
        await asyncio.to_thread(state.request_log.append, chat, done.text, **facts)


async def full_answer(
    state: ServerState,
    chat: ChatRequest,
    prompt: Prompt,
    size: tuple[int, int] | None,
    job: Job,
    events: asyncio.Queue[Event],
    completion_id: str,
    created: int,
    watcher: asyncio.Task[None],
    started: float,
) -> Response:
    """Wait for the whole answer and send it as one object; a hang-up (``watcher`` ends) cancels the job at once."""
    first_text = True
    while True:
        getting = asyncio.ensure_future(events.get())
        await asyncio.wait({getting, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not getting.done():
            getting.cancel()
            job.cancel()
            raise ClientGone()
        event = getting.result()
        if isinstance(event, Delta) and first_text:
            first_text = False
            state.metrics.ttft.observe(time.monotonic() - started)
        if isinstance(event, Failed):
            status = 503 if event.code == "server_shutting_down" else 500
            raise APIError(event.message, status=status, type="server_error", code=event.code)
        if isinstance(event, Done):
            break
    await log_answer(state, chat, event, completion_id, created)
    answered(state, event, started)
    message = {
        "role": "assistant",
        "content": event.text,
        "boxes": boxes_field(event.text, prompt.latest_picture, size),
    }
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": state.name,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": event.finish_reason}
            ],
            "usage": usage(event),
        }
    )


async def stream_answer(
    state: ServerState,
    chat: ChatRequest,
    prompt: Prompt,
    size: tuple[int, int] | None,
    job: Job,
    events: asyncio.Queue[Event],
    completion_id: str,
    created: int,
    started: float,
) -> AsyncIterator[bytes]:
    """The SSE stream of one answer; the job is cancelled when the client goes away (the generator is closed)."""
    name = state.name
    first_text = True
    status = "499"  # unless the stream ends otherwise
    try:
        yield sse(chunk(completion_id, created, name, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if isinstance(event, Delta) and first_text:
                first_text = False
                state.metrics.ttft.observe(time.monotonic() - started)
            if isinstance(event, Delta):
                yield sse(chunk(completion_id, created, name, {"content": event.text}))
            elif isinstance(event, Failed):
                yield sse(APIError(event.message, status=500, type="server_error", code=event.code).body())
                status = "503" if event.code == "server_shutting_down" else "500"
                break
            else:
                await log_answer(state, chat, event, completion_id, created)
                status = "200"
                answered(state, event, started, count=False)
                boxes = boxes_field(event.text, prompt.latest_picture, size)
                yield sse(chunk(completion_id, created, name, {"boxes": boxes}, event.finish_reason))
                if chat.include_usage:
                    yield sse(usage_chunk(completion_id, created, name, usage(event)))
                break
        yield DONE
    finally:
        job.cancel()
        state.metrics.requests.labels(status).inc()
