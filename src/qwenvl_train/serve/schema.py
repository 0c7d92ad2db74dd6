"""The Chat Completions request: read, checked, and every bad input turned into an OpenAI-style error.

An error is answered as ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status
(:class:`APIError`); the checks here need only the request body (the prompt length, the images and the model's
window are checked later, in :mod:`.prompt` and :mod:`.fetch`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..format.rules import expected_role
from ..format.sample import ROLES as TURN_ROLES

ROLES = ("system", *TURN_ROLES)
PART_TYPES = ("text", "image_url")
MAX_STOP = 4


class APIError(Exception):
    """A request the server refuses; rendered as the OpenAI error body with ``status``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",  # noqa: A002 - the OpenAI field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Part:
    """One piece of a message: ``kind`` ``"text"`` (``value`` the text) or ``"image"`` (``value`` the URL)."""

    kind: str
    value: str
    param: str


@dataclass
class Message:
    """A checked message: its role and its parts in order."""

    role: str
    parts: list[Part]
    param: str

    @property
    def text(self) -> str:
        """The text parts joined (what a system or assistant message says)."""
        return "".join(p.value for p in self.parts if p.kind == "text")


@dataclass
class ChatRequest:
    """A checked ``POST /v1/chat/completions`` body (None: the model's generation_config decides)."""

    messages: list[Message]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


def parse_json(body: bytes) -> Any:
    """The request body as JSON.

    Raises:
        APIError: not UTF-8 JSON.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise APIError("the request body is JSON nested too deeply", code="invalid_json") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(f"the request body is not valid JSON ({exc})", code="invalid_json") from None


#: Parameters of the Chat Completions API this server does not implement, and the value that means "not asked
#: for" (a client may send the default): anything else is a 400 naming the parameter, not silently ignored.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None,),
}


def _unsupported(body: dict[str, Any]) -> None:
    for name, defaults in UNSUPPORTED.items():
        if name in body and not any(
            body[name] == value and type(body[name]) is type(value) or (value is None and body[name] is None)
            for value in defaults
        ):
            raise APIError(
                f"'{name}' is not supported by this server (leave it out)",
                param=name,
                code="unsupported_parameter",
            )


def _number(body: dict[str, Any], name: str, low: float, high: float, *, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        raise APIError(f"'{name}' must be {kind}, got {json.dumps(value)}", param=name, code="invalid_type")
    if not math.isfinite(value) or not low <= value <= high:
        raise APIError(
            f"'{name}' must be between {low:g} and {high:g}, got {value}", param=name, code="invalid_value"
        )
    return value


def _parts(content: Any, param: str, role: str) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", content, param)]
    if not isinstance(content, list):
        raise APIError(
            f"'{param}' must be a string or a list of content parts", param=param, code="invalid_type"
        )
    parts: list[Part] = []
    for j, item in enumerate(content):
        where = f"{param}[{j}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in PART_TYPES:
            raise APIError(
                f"'{where}': unknown content part type {json.dumps(kind)} (expected 'text' or 'image_url')",
                param=where,
                code="invalid_value",
            )
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise APIError(f"'{where}.text' must be a string", param=f"{where}.text", code="invalid_type")
            parts.append(Part("text", text, where))
            continue
        if role != "user":
            raise APIError(
                f"'{where}': only user messages may hold images ({role} messages are text)",
                param=where,
                code="invalid_value",
            )
        image = item.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise APIError(
                f"'{where}.image_url.url' must be a non-empty string",
                param=f"{where}.image_url",
                code="invalid_type",
            )
        parts.append(Part("image", url, f"{where}.image_url"))
    return parts


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list):
        raise APIError("'messages' must be a list of messages", param="messages", code="invalid_type")
    if not value:
        raise APIError("'messages' is empty: send at least one user message", param="messages", code="empty")
    out: list[Message] = []
    for i, item in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(item, dict):
            raise APIError(f"'{param}' must be an object", param=param, code="invalid_type")
        role = item.get("role")
        if role not in ROLES:
            raise APIError(
                f"'{param}.role': unknown role {json.dumps(role)} (expected system, user or assistant)",
                param=f"{param}.role",
                code="invalid_value",
            )
        if "content" not in item or item["content"] is None:
            raise APIError(f"'{param}' has no content", param=f"{param}.content", code="invalid_value")
        parts = _parts(item["content"], f"{param}.content", role)
        message = Message(role, parts, param)
        if not parts or all(p.kind == "text" and not p.value.strip() for p in parts):
            raise APIError(f"'{param}' is empty", param=f"{param}.content", code="empty")
        out.append(message)
    return out


def _conversation(messages: list[Message]) -> None:
    """System first (at most once), then user / assistant alternating as :func:`format.rules.expected_role` says,
    ending with the user (a prompt: the question to answer)."""
    turns = messages[1:] if messages[0].role == "system" else messages
    for message in turns:
        if message.role == "system":
            raise APIError(
                f"'{message.param}': a system message is accepted only as the first message",
                param=message.param,
                code="invalid_value",
            )
    if not turns:
        raise APIError("'messages' has no user message", param="messages", code="invalid_value")
    for position, message in enumerate(turns):
        expected = expected_role(position)
        if message.role != expected:
            raise APIError(
                f"'{message.param}': expected a {expected} message here (after the system message, messages "
                "alternate user / assistant, starting with the user)",
                param=message.param,
                code="invalid_value",
            )
    if turns[-1].role != "user":
        raise APIError(
            "the conversation must end with a user message (the question to answer)",
            param=turns[-1].param,
            code="invalid_value",
        )


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise APIError(
            "'stop' must be a non-empty string or a list of them", param="stop", code="invalid_type"
        )
    if len(stops) > MAX_STOP:
        raise APIError(f"'stop' holds at most {MAX_STOP} strings", param="stop", code="invalid_value")
    return list(stops)


def parse_request(body: Any) -> ChatRequest:
    """Check a Chat Completions body (already JSON-decoded).

    Raises:
        APIError: the first problem found, naming the field (``param``).
    """
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object", code="invalid_type")
    if "messages" not in body:
        raise APIError("'messages' is required", param="messages", code="missing")
    _unsupported(body)
    messages = _messages(body["messages"])
    _conversation(messages)
    n = _number(body, "n", 1, 128, integer=True)
    if n is not None and n != 1:
        raise APIError("'n' > 1 is not supported: ask once per answer", param="n", code="unsupported_value")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError("'model' must be a string", param="model", code="invalid_type")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise APIError("'stream' must be true or false", param="stream", code="invalid_type")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError("'stream_options' must be an object", param="stream_options", code="invalid_type")
    max_tokens = _number(body, "max_completion_tokens", 1, 1 << 20, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, 1 << 20, integer=True)
    return ChatRequest(
        messages=messages,
        model=model,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0),
        seed=_number(body, "seed", -(1 << 63), (1 << 63) - 1, integer=True),
        stop=_stop(body.get("stop")),
    )
