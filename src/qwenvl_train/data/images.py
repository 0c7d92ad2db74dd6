"""The one image loader: training, ``check-data``, chat and evaluation all open images through :func:`load_image`.

- A local path is absolute or relative to the folder of the data file that names it (:func:`resolve_image`);
  an ``http://`` / ``https://`` URL is fetched within an overall deadline (``--image_timeout``, connection,
  headers and body together) and a size limit checked as it arrives, retried a few times with backoff when the
  failure may be transient (timeouts, connection errors, HTTP 5xx/408/429), and kept on disk
  under :func:`url_cache_dir` so that later epochs, other processes and later runs do not fetch it again
  (delete that folder to fetch afresh).
- A decompression-bomb guard refuses images with more than ``max_pixels`` pixels, judged from the header
  before anything is decoded. Pillow has its own limit (``PIL.Image.MAX_IMAGE_PIXELS``); a larger
  ``max_pixels`` raises it for the process (it is never lowered), so the limit asked for is the one applied.
- Pixels are the original Qwen-VL's: ``Image.open(...).convert("RGB")``. Alpha is dropped, not composited on
  a background (a transparent area shows whatever colour the encoder stored under it); palette, 16-bit,
  CMYK and the other modes go through Pillow's own conversion; EXIF orientation is not applied (the pixels
  are used as stored). A model fine-tuned here therefore sees the pixels it will see at inference in the
  original code and in serving stacks that copied it.
- The pixel transform (bicubic resize, CLIP normalisation) is the model's ``preprocess_image``.

- Only regular files are opened: a FIFO, a device or a socket is refused before it is opened (it would block or
  never end), and a URL of another scheme (``file://``, ``ftp://``) is refused as such.

Every failure raises :class:`ImageError` with a one-line message that names the image.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from .errors import ImageError
from .filekinds import not_regular
from .options import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT

if TYPE_CHECKING:  # torch only where pixels become a tensor: checking images (check-data) needs neither
    import torch

DEFAULT_MAX_DOWNLOAD_BYTES = 64 << 20
URL_SCHEMES = ("http://", "https://")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")  # file://, ftp://, s3://: not fetched
URL_ATTEMPTS = 3  # tries per URL, when the failure may be transient
URL_BACKOFF = 0.5  # seconds before the second try; doubled before each further one
_TRANSIENT_HTTP = {408, 429}


def is_url(ref: str) -> bool:
    """True for an ``http(s)://`` reference."""
    return ref.lower().startswith(URL_SCHEMES)


def unsupported_scheme(ref: str) -> str | None:
    """The scheme of a URL that is not fetched (``file``, ``ftp``, ``s3`` ...), else None."""
    match = _SCHEME.match(ref)
    return match.group(1) if match and not is_url(ref) else None


def resolve_image(ref: str, base_dir: str | Path | None) -> str:
    """A local path made absolute against ``base_dir`` (the data file's folder); URLs unchanged."""
    if is_url(ref) or base_dir is None or unsupported_scheme(ref):
        return ref
    path = os.path.expanduser(ref)
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def url_cache_dir() -> Path:
    """Where fetched images are kept: ``images/`` in the project's cache folder (``$QWENVL_TRAIN_CACHE``)."""
    from ..vocab import cache_dir

    return cache_dir() / "images"


def _cache_path(url: str) -> Path:
    return url_cache_dir() / hashlib.sha256(url.encode("utf-8")).hexdigest()


class Deadline:
    """The end of a download: at ``seconds`` from now the connections it watches are shut down, so that whatever
    they wait for (headers, a body trickling in a byte at a time, each read well under the socket timeout) ends.

    Attributes:
        expired: the deadline has passed.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._end = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        """Seconds left (0 once the deadline has passed)."""
        return 0.0 if self.expired else max(0.0, self._end - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (now, when it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()

    def end_now(self) -> None:
        """Shut the connections down now (what waits for them fails): the download is no longer wanted."""
        self._timer.cancel()
        self._expire()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[http.client.HTTPConnection], deadline: Deadline) -> type[http.client.HTTPConnection]:
    """``base`` whose connections ``deadline`` shuts down."""

    class Watched(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def fetch_url(
    url: str, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> bytes:
    """Download ``url`` once, within ``timeout`` seconds in all (connection, headers and body: a server that
    trickles its answer is cut off at the deadline) and ``max_bytes`` bytes (checked while reading); no retry, no
    cache.

    Raises:
        ImageError: HTTP error status, connection failure, timeout, or too large (``transient`` says whether
            trying again may help).
    """
    deadline = Deadline(timeout)
    received = [0]
    try:
        data = _download(url, timeout, max_bytes, deadline, received)
    except ImageError:
        if not deadline.expired:
            raise
        data = None
    finally:
        deadline.cancel()
    if deadline.expired:  # also a read that ended because the deadline shut the connection
        got = f" ({received[0]} bytes received)" if received[0] else ""
        raise ImageError(f"{url}: timed out after {timeout:g} s{got}", transient=True) from None
    assert data is not None
    return data


def _download(url: str, timeout: float, max_bytes: int, deadline: Deadline, received: list[int]) -> bytes:
    """:func:`fetch_url`'s work, its failures as :class:`ImageError` (``received[0]``: bytes so far)."""
    opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "qwenvl-train"})
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise ImageError(f"{url}: larger than {max_bytes} bytes ({length} bytes announced)")
            chunks: list[bytes] = []
            while chunk := response.read1(1 << 16):  # what has arrived: the size is checked as it grows
                received[0] += len(chunk)
                if received[0] > max_bytes:
                    raise ImageError(f"{url}: larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        transient = exc.code >= 500 or exc.code in _TRANSIENT_HTTP
        raise ImageError(f"{url}: HTTP {exc.code} {exc.reason}", transient) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise ImageError(f"{url}: timed out after {timeout:g} s", transient=True) from None
        raise ImageError(f"{url}: cannot fetch ({exc.reason})", transient=True) from None
    except TimeoutError:
        raise ImageError(f"{url}: timed out after {timeout:g} s", transient=True) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{url}: cannot fetch ({type(exc).__name__}: {exc})", transient=True) from None


def fetch_url_cached(url: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The bytes of ``url`` from the disk cache, or fetched (tried up to ``URL_ATTEMPTS`` times) and cached.

    Raises:
        ImageError: the last failure, saying how many attempts were made.
    """
    cached = _cache_path(url)
    try:
        return cached.read_bytes()
    except OSError:
        pass
    for attempt in range(1, URL_ATTEMPTS + 1):
        try:
            data = fetch_url(url, timeout)
            break
        except ImageError as exc:
            if not exc.transient or attempt == URL_ATTEMPTS:
                suffix = f" ({attempt} attempts)" if attempt > 1 else ""
                raise ImageError(f"{exc}{suffix}", exc.transient) from None
            time.sleep(URL_BACKOFF * 2 ** (attempt - 1))
    try:  # written under a temporary name, then renamed: other processes never read half a file
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".partial-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, cached)
    except OSError:
        pass  # an unwritable cache only costs another download next time
    return data


def _forget(url: str) -> None:
    """Drop a cached download that is not a usable image, so that the next epoch fetches it again."""
    try:
        _cache_path(url).unlink()
    except OSError:
        pass


def _allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's own bomb limit to ``max_pixels`` (never lower it: other callers may need more)."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(
    ref: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
) -> Image.Image:
    """Open an image lazily (header read, pixels not decoded) and apply the size guard.

    Args:
        ref: a resolved local path or an http(s) URL.
        max_pixels: refuse images with more pixels than this.
        timeout: seconds for a URL.

    Raises:
        ImageError: missing, a directory, unreadable, not an image, or too many pixels.
    """
    url = is_url(ref)
    if url:
        source: str | io.BytesIO = io.BytesIO(fetch_url_cached(ref, timeout))
    else:
        scheme = unsupported_scheme(ref)
        if scheme is not None:
            raise ImageError(
                f"{ref}: unsupported URL scheme '{scheme}://' (http:// and https:// are fetched; give a local "
                "image as a path)"
            )
        if os.path.isdir(ref):
            raise ImageError(f"{ref}: is a directory, not an image")
        if not os.path.exists(ref):
            raise ImageError(f"{ref}: no such file")
        kind = not_regular(ref)  # checked before opening: a FIFO would block, a device never end
        if kind is not None:
            raise ImageError(f"{ref}: is {kind}, not an image file")
        source = ref
    return _guarded_open(source, ref, max_pixels, forget=url)


def _guarded_open(
    source: str | io.BytesIO, ref: str, max_pixels: int, forget: bool, formats: tuple[str, ...] | None = None
) -> Image.Image:
    """``Image.open(source)`` with the size guards; errors name ``ref`` (``forget``: a cached URL is dropped;
    ``formats``: the only decoders tried)."""
    _allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=list(formats) if formats else None)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{ref}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        if forget:
            _forget(ref)
        raise ImageError(f"{ref}: not a recognised image file") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types; all mean "unreadable"
        if forget:
            _forget(ref)
        raise ImageError(f"{ref}: cannot open ({type(exc).__name__}: {exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageError(
            f"{ref}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(possible decompression bomb)"
        )
    if width == 0 or height == 0:
        image.close()
        raise ImageError(f"{ref}: empty image ({width}x{height})")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """``image.convert("RGB")``, as the original: alpha dropped, every other mode by Pillow's conversion.

    Raises:
        ImageError: a mode Pillow cannot convert.
    """
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"cannot convert mode {image.mode} to RGB ({exc})") from None


def load_image(
    ref: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
) -> Image.Image:
    """Open, fully decode and convert an image to RGB: the one loader every command uses.

    Args:
        ref: a resolved local path (see :func:`resolve_image`) or an http(s) URL.
        max_pixels: refuse images with more pixels than this.
        timeout: seconds for the whole download of a URL (each try).

    Raises:
        ImageError: anything :func:`open_image` refuses, or a truncated / corrupt file.
    """
    return _decoded(open_image(ref, max_pixels=max_pixels, timeout=timeout), ref, forget=is_url(ref))


def decode_image(
    data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, formats: tuple[str, ...] | None = None
) -> Image.Image:
    """:func:`load_image` for bytes already in memory (a picture a server received or downloaded): the same guards
    (decompression bomb, pixel limit, empty image), fully decoded, RGB; errors name the picture ``name``.
    ``formats`` (Pillow's names, e.g. ``("JPEG", "PNG")``) limits the decoders tried: any other format is "not a
    recognised image file" (a server reaches no other decoder: EPS, for one, runs Ghostscript).

    Raises:
        ImageError: not an image, too many pixels, a truncated or corrupt file.
    """
    return _decoded(
        _guarded_open(io.BytesIO(data), name, max_pixels, forget=False, formats=formats), name, forget=False
    )


def _decoded(image: Image.Image, ref: str, forget: bool) -> Image.Image:
    """Decode an opened image fully and convert it to RGB; errors name ``ref`` (``forget``: drop a cached URL)."""
    try:
        with image:
            image.load()
            return to_rgb(image)
    except ImageError as exc:
        raise ImageError(f"{ref}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError, SyntaxError, zlib errors...
        if forget:
            _forget(ref)
        raise ImageError(f"{ref}: cannot decode ({type(exc).__name__}: {exc})") from None


def check_image_header(ref: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """Cheap up-front check of a local image: exists, not a directory, recognised format, size guard.

    URLs are not fetched here (returns None); they are checked by ``check-data`` and when loaded.

    Returns:
        ``(width, height)`` for a local file, None for a URL.

    Raises:
        ImageError: as :func:`open_image`.
    """
    if is_url(ref):
        return None
    image = open_image(ref, max_pixels=max_pixels)
    with image:
        return image.size


def image_tensor(
    ref: str,
    image_size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
) -> torch.Tensor:
    """Load one image and turn it into the model's input ``[3, image_size, image_size]`` float32."""
    from ..model.image_processing import preprocess_image

    return preprocess_image(load_image(ref, max_pixels=max_pixels, timeout=timeout), image_size)
