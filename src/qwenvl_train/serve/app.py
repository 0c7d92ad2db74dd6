"""The FastAPI application: routes, authentication, limits and the OpenAI error bodies.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (see :mod:`.schema` for what a
request may hold and :mod:`.stream` for ``stream: true``), and the chat page at ``GET /`` (static files of the
package under ``/static``). With an API key every ``/v1/`` route needs ``Authorization: Bearer KEY`` (401
otherwise); ``/health`` and the page do not (the page asks for the key).

Every refusal is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status; the request's work is
done off the event loop (images in worker threads, the model in the batcher's thread), so a slow image or a long
answer never holds up another client.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import fetch
from .answer_boxes import boxes_field
from .batcher import Batcher, Delta, Done, Event, Failed, Job
from .fetch import ImagePolicy
from .prompt import Prompt, render
from .request_log import RequestLog
from .sampling import settings
from .schema import APIError, ChatRequest, parse_json, parse_request
from .stream import DONE, chunk, sse, usage_chunk

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 32 << 20
DISCONNECT_POLL_S = 0.25


@dataclass
class ServerState:
    """What the routes need: the model's facts, the batcher and the options."""

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


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is over ``limit`` bytes."""
    too_large = APIError(
        f"the request body is larger than {limit} bytes", status=413, code="request_too_large"
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_large
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


def create_app(state: ServerState) -> FastAPI:
    """The application serving ``state``'s model."""
    app = FastAPI(title="qwenvl-train serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(str(exc.detail), status=exc.status_code, type=kind))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        error = APIError(f"internal error: {type(exc).__name__}: {exc}", status=500, type="server_error")
        return error_response(error)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.batcher
        return {
            "status": "ok",
            "model": state.name,
            "active": batcher.active_rows,
            "waiting": len(batcher.pending) + batcher.incoming.qsize(),
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request, state.api_key)
        card = {"id": state.name, "object": "model", "created": 0, "owned_by": "qwenvl-train"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_key(request, state.api_key)
        body = parse_json(await read_body(request, state.max_body_bytes))
        chat = parse_request(body)
        if chat.model is not None and chat.model != state.name:
            raise APIError(
                f"the model {chat.model!r} is not served here (this server serves {state.name!r})",
                status=404,
                type="not_found_error",
                param="model",
                code="model_not_found",
            )
        prompt = render(chat, state.tokenizer, state.n_queries, state.max_window_size)
        job, events, size = await prepare_job(state, chat, prompt)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if chat.stream:
            stream = stream_answer(state, chat, prompt, size, job, events, completion_id, created)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return await full_answer(state, request, chat, prompt, size, job, events, completion_id, created)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def prepare_job(
    state: ServerState, chat: ChatRequest, prompt: Prompt
) -> tuple[Job, asyncio.Queue[Event], tuple[int, int] | None]:
    """Load the pictures (worker threads), queue the job; returns it, its event queue and the latest picture's
    size (None when it is not in the prompt)."""
    import torch

    numbers = sorted(set(prompt.pictures))
    parts = [prompt.image_parts[k - 1] for k in numbers]
    loaded = await asyncio.gather(
        *(
            asyncio.to_thread(fetch.load, part.value, state.policy, part.param, state.image_size)
            for part in parts
        )
    )
    by_number = dict(zip(numbers, loaded, strict=True))
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
    )
    state.batcher.submit(job)
    return job, events, size


def usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


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
    request: Request,
    chat: ChatRequest,
    prompt: Prompt,
    size: tuple[int, int] | None,
    job: Job,
    events: asyncio.Queue[Event],
    completion_id: str,
    created: int,
) -> Response:
    """Wait for the whole answer (cancelling it if the client hangs up) and send it as one object."""
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    job.cancel()
                    return Response(status_code=499)
                continue
            if isinstance(event, Failed):
                raise APIError(event.message, status=500, type="server_error")
            if isinstance(event, Done):
                break
    finally:
        job.cancel()  # no-op once done; frees the row when the request ends any other way
    await log_answer(state, chat, event, completion_id, created)
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
) -> AsyncIterator[bytes]:
    """The SSE stream of one answer; the job is cancelled when the client goes away (the generator is closed)."""
    name = state.name
    try:
        yield sse(chunk(completion_id, created, name, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if isinstance(event, Delta):
                yield sse(chunk(completion_id, created, name, {"content": event.text}))
            elif isinstance(event, Failed):
                yield sse(APIError(event.message, status=500, type="server_error").body())
                break
            else:
                await log_answer(state, chat, event, completion_id, created)
                boxes = boxes_field(event.text, prompt.latest_picture, size)
                yield sse(chunk(completion_id, created, name, {"boxes": boxes}, event.finish_reason))
                if chat.include_usage:
                    yield sse(usage_chunk(completion_id, created, name, usage(event)))
                break
        yield DONE
    finally:
        job.cancel()
