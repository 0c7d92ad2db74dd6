"""The one decoder of ``data:image/<type>;base64,<data>`` URLs: pictures sent inline to ``serve`` (and stored by
its request log) and pictures inside OpenAI-format records (``convert --from openai``) are read by
:func:`data_url_bytes`; each caller turns :class:`DataURLError` into its own error (an HTTP 400, a skipped
record) with the reason's one line."""

from __future__ import annotations

import base64
import binascii


class DataURLError(ValueError):
    """A data URL that is not an inline base64 picture: ``str()`` is the one-line reason, ``code`` names it
    (``invalid_url``, ``invalid_image``, ``image_too_large``, ``invalid_base64``; the API's error codes)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def data_url_bytes(url: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a ``data:image/<type>;base64,<data>`` URL (the scheme, the media type and ``;base64`` in any
    case), refused before decoding when its base64 holds more than ``max_bytes`` bytes.

    Raises:
        DataURLError: not of that form, not an image media type, over the size limit, or invalid base64.
    """
    header, comma, data = url.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise DataURLError("a data URL must be 'data:image/<type>;base64,<data>'", "invalid_url")
    media = header[len("data:") : -len(";base64")].split(";")[0].strip().lower()
    if not media.startswith("image/"):
        raise DataURLError(f"the data URL holds {media or 'no media type'!r}, not an image", "invalid_image")
    if max_bytes is not None and len(data) > max_bytes * 4 // 3 + 4:
        raise DataURLError(f"the image is larger than {max_bytes} bytes", "image_too_large")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise DataURLError("the data URL is not valid base64", "invalid_base64") from None
