"""``serve --log-requests FILE.jsonl``: every completed chat request appended as one line of OpenAI's chat format,
what ``qwenvl-train convert --from openai`` reads back unchanged (correct the answers, convert, train again).

Off by default. One line per request whose answer was completed (``stop`` or ``length``; a request cancelled by
its client or failed is not logged)::

    {"id": "chatcmpl-...", "created": 1767225600, "model": "NAME", "finish_reason": "stop",
     "usage": {"prompt_tokens": ..., "completion_tokens": ..., "total_tokens": ...},
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "requests_images/<sha256>.png"}},
                                               {"type": "text", "text": "What is it?"}]},
                  {"role": "assistant", "content": "THE ANSWER, markup as the model wrote it"}]}

What is stored: the request's messages as the server read them (text as sent; a picture sent as a ``data:`` URL, or
as a local path under ``--allow-local-images``, is written once, named by the SHA-256 of its bytes, into the folder
``<FILE stem>_images`` next to the log, and the message names it relative to the log's folder; an ``http(s)`` URL
is kept as it was), the answer as the model wrote it (``<ref>``/``<box>`` markup included), the model name, the
time (``created``, Unix seconds), ``finish_reason`` and token counts. Never the API key nor any request header
(nor the client's address), and none of the generation settings.

Each line is written with one ``write()`` on a file opened for appending, under a lock, after the pictures it names
are in place (each through a temporary file and ``os.replace``): a killed server leaves only whole lines, and
every picture a line names exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from .fetch import ImagePolicy, decode_data_url, local_path
from .schema import APIError, ChatRequest, Message, Part


class RequestLog:
    """The log file, open for appending, and its pictures' folder.

    The log is a file (or a FIFO) whose folder can hold its pictures: ``-`` and anything under ``/dev`` or
    ``/proc`` (``/dev/stdout``) are refused, since the pictures would land beside a system entry; a directory or a
    socket is :mod:`qwenvl_train.outputs`' one line. Nothing is ever renamed over the log: lines are appended.

    Raises:
        OutputError: the path is not a file to append to (at construction: the server does not start).
        OSError: the file cannot be opened for appending.
    """

    def __init__(self, path: Path, policy: ImagePolicy | None = None) -> None:
        from ..outputs import OutputError, output_target, through_system_folder

        if output_target(path, "--log-requests") == "stdout" or through_system_folder(path):
            raise OutputError(
                f"--log-requests {path}: the pictures are stored beside the log, so it must be a file outside "
                "/dev and /proc"
            )
        self.path = Path(path)
        self.images = self.path.parent / f"{self.path.stem}_images"
        self.policy = policy or ImagePolicy()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def append(self, chat: ChatRequest, answer: str, **facts: Any) -> bool:
        """Log one completed request (``facts``: ``id``, ``created``, ``model``, ``finish_reason``, ``usage``).

        A failure (a full disk...) is printed as one line on stderr and the request is answered all the same: the
        log is a copy, not the service. Returns whether the line was written.
        """
        try:
            messages = [self._message(m) for m in chat.messages]
            messages.append({"role": "assistant", "content": answer})
            line = json.dumps({**facts, "messages": messages}, ensure_ascii=False) + "\n"
            self._write_line(line.encode("utf-8"))
            return True
        except (OSError, ValueError, APIError) as exc:
            print(
                f"serve: --log-requests {self.path}: request {facts.get('id')} not logged: {exc}",
                file=sys.stderr,
            )
            return False

    def _write_line(self, data: bytes) -> None:
        """One ``write()`` of the whole line; a short write (a full disk) is cut back off, so no partial line stays."""
        with self._lock:
            if self._fd < 0:
                raise ValueError("the log is closed")
            start = os.fstat(self._fd).st_size
            written = os.write(self._fd, data)
            if written != len(data):
                os.ftruncate(self._fd, start)
                raise OSError(f"wrote {written} of {len(data)} bytes")

    def _message(self, message: Message) -> dict[str, Any]:
        """A checked message back in OpenAI's shape: a string when it is one text part, else its parts."""
        if all(p.kind == "text" for p in message.parts) and len(message.parts) == 1:
            return {"role": message.role, "content": message.parts[0].value}
        return {"role": message.role, "content": [self._part(p) for p in message.parts]}

    def _part(self, part: Part) -> dict[str, Any]:
        if part.kind == "text":
            return {"type": "text", "text": part.value}
        return {"type": "image_url", "image_url": {"url": self._picture(part)}}

    def _picture(self, part: Part) -> str:
        """What the log names a picture by: a URL as it is, else the stored copy of its bytes."""
        url = part.value
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme in ("http", "https"):
            return url
        if scheme == "data":
            data = decode_data_url(url, self.policy, part.param)
        else:  # a local path: the request was answered, so it is inside --allow-local-images
            data = local_path(url, self.policy, part.param).read_bytes()
        return self._store(data)

    def _store(self, data: bytes) -> str:
        """Write ``data`` once as ``<sha256>.<format>`` in the pictures' folder; its path from the log's folder."""
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "bin").lower()
        name = f"{hashlib.sha256(data).hexdigest()}.{ {'jpeg': 'jpg'}.get(fmt, fmt) }"
        path = self.images / name
        if not path.exists():
            self.images.mkdir(parents=True, exist_ok=True)
            tmp = self.images / f".{name}.{os.getpid()}.{threading.get_ident()}.partial"
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return f"{self.images.name}/{name}"
