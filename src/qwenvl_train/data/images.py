"""Open, check and preprocess the images named by ``<img>PATH</img>``.

- A local path is absolute or relative to the folder of the data file that names it; an ``http://`` /
  ``https://`` URL is fetched with a timeout (and a size limit) and fails with a one-line reason.
- A decompression-bomb guard refuses images with more than ``max_pixels`` pixels, judged from the header
  before anything is decoded; PIL's own ``DecompressionBombWarning``/``Error`` are caught and reported too.
- :func:`to_rgb` turns every mode into 8-bit RGB: palette (with or without transparency), alpha (composited
  on white, so transparent areas do not turn into whatever colour the encoder left under them), 16-bit and
  32-bit integer or float greyscale (scaled, not clipped), CMYK, 1-bit.
- The pixel transform (bicubic resize, CLIP normalisation) is the model's ``preprocess_image``. EXIF
  orientation is not applied, as in the original (the pixels are used as stored).

Every failure raises :class:`ImageError` with a one-line message.
"""

from __future__ import annotations

import io
import os
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..model.image_processing import preprocess_image

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit (about 0.25 GiB of 24-bit pixels)
DEFAULT_TIMEOUT = 10.0  # seconds, per network operation and for the whole download
DEFAULT_MAX_DOWNLOAD_BYTES = 64 << 20
URL_SCHEMES = ("http://", "https://")


class ImageError(ValueError):
    """An image cannot be used; the message is one line."""


def is_url(ref: str) -> bool:
    """True for an ``http(s)://`` reference."""
    return ref.lower().startswith(URL_SCHEMES)


def resolve_image(ref: str, base_dir: str | Path | None) -> str:
    """A local path made absolute against ``base_dir`` (the data file's folder); URLs unchanged."""
    if is_url(ref) or base_dir is None:
        return ref
    path = Path(os.path.expanduser(ref))
    return str(path if path.is_absolute() else Path(base_dir) / path)


def fetch_url(
    url: str, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
) -> bytes:
    """Download ``url`` within ``timeout`` seconds and ``max_bytes`` bytes.

    Raises:
        ImageError: HTTP error status, connection failure, timeout, or too large.
    """
    deadline = time.monotonic() + timeout
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "qwenvl-train"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise ImageError(f"{url}: larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ImageError(f"{url}: download took longer than {timeout:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ImageError(f"{url}: timed out after {timeout:g} s") from None
        raise ImageError(f"{url}: cannot fetch ({reason})") from None
    except TimeoutError:
        raise ImageError(f"{url}: timed out after {timeout:g} s") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"{url}: cannot fetch ({exc})") from None


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
    if is_url(ref):
        source: str | io.BytesIO = io.BytesIO(fetch_url(ref, timeout))
    else:
        if os.path.isdir(ref):
            raise ImageError(f"{ref}: is a directory, not an image")
        if not os.path.exists(ref):
            raise ImageError(f"{ref}: no such file")
        source = ref
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{ref}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{ref}: not a recognised image file") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types; all mean "unreadable"
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


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16"):
            pixels = pixels / 257.0  # 0..65535 -> 0..255
        elif mode == "I":
            pixels = pixels / 257.0 if pixels.max(initial=0) > 255 else pixels
        elif pixels.max(initial=0) <= 1.0:
            pixels = pixels * 255.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif mode == "RGB" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, background)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(
    ref: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout: float = DEFAULT_TIMEOUT,
) -> Image.Image:
    """Open, fully decode and convert an image to RGB.

    Raises:
        ImageError: anything :func:`open_image` refuses, or a truncated / corrupt file.
    """
    image = open_image(ref, max_pixels=max_pixels, timeout=timeout)
    try:
        with image:
            image.load()
            return to_rgb(image)
    except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError, SyntaxError, zlib errors...
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
    return preprocess_image(load_image(ref, max_pixels=max_pixels, timeout=timeout), image_size)
