"""The images of a request: fetched, checked and decoded with the training loader's limits.

An ``image_url`` part names its picture one of three ways:

- a ``data:image/...;base64,`` URL: decoded by ``data.data_url``;
- an ``http(s)://`` URL: fetched by :func:`fetch_url` under the SSRF rules. Every address the host resolves to
  must be public (not loopback, private, link-local, shared, reserved, multicast...) unless
  ``allow_private_urls``; the connection goes to the address that was checked (no second lookup to rebind),
  and every redirect is checked the same way before it is followed. The download has the loader's size limit
  and one deadline for all of it;
- a local path (or ``file://`` URL): only when ``local_dir`` is set, and only a file inside that folder (after
  following symbolic links and ``..``).

The bytes are then decoded in memory by the training loader's decoder
(:func:`qwenvl_train.data.images.decode_image`: the decompression-bomb guard, the pixel limit, the RGB conversion;
a local file by ``load_image``) and turned into the model's input by the model's own transform, so a served model sees the pixels training showed it. Every failure is an
:class:`~.schema.APIError` (400) naming the message part.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.data_url import DataURLError, data_url_bytes
from ..data.errors import ImageError
from ..data.images import DEFAULT_MAX_DOWNLOAD_BYTES, Deadline, decode_image, load_image
from ..data.options import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT
from .schema import APIError

MAX_REDIRECTS = 5
#: How an error names a picture received as bytes (it has no path).
PICTURE = "the image"
USER_AGENT = "qwenvl-train-serve"
#: The only decoders a served picture reaches (Pillow's names): what a photo or a screenshot comes as.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class ImagePolicy:
    """What image URLs a server accepts, and the limits of one image."""

    allow_private_urls: bool = False
    #: What a refusal of a non-public address tells the user to do (the caller's own option).
    private_hint: str = "start the server with --allow-private-urls to fetch from private networks"
    local_dir: Path | None = None
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class LoadedImage:
    """A decoded picture: the model's input and the size boxes are scaled to."""

    pixels: Any  # torch.Tensor [3, image_size, image_size]
    width: int
    height: int
    digest: str | None = None  # SHA-256 of the bytes (the vision cache's key); None for a local file


def _refuse(param: str, message: str, code: str = "invalid_image") -> APIError:
    return APIError(f"'{param}': {message}", param=param, code=code)


# Addresses --------------------------------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (tests replace this function: no real lookup there)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches (None when it carries none).

    IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d`` (deprecated; still routed by some stacks),
    NAT64 ``64:ff9b::/96`` (and the local-use ``64:ff9b:1::/48``: its last 32 bits), 6to4 ``2002:AABB:CCDD::``
    and Teredo ``2001:0::/32`` (its client, the last 32 bits inverted). A translator or relay would deliver a
    request to that IPv4 address, so the SSRF rule judges it as that address.
    """
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    value = int(ip)
    if ip in NAT64 or ip in NAT64_LOCAL:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d (:: and ::1 are the IPv6 unspecified and loopback)
        return ipaddress.IPv4Address(value)
    return None


def is_public(address: str) -> bool:
    """True for an address on the public internet (what an image URL may reach by default); an IPv6 address
    that embeds an IPv4 one (:func:`embedded_ipv4`) is judged as that IPv4 address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return inner.is_global and not inner.is_multicast
    return ip.is_global and not ip.is_multicast


def checked_address(url: str, policy: ImagePolicy, param: str) -> tuple[urllib.parse.SplitResult, str]:
    """The URL split, and the address to connect to after the SSRF check.

    Raises:
        APIError: not http(s), no host, the host does not resolve, or an address it has is not public.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise _refuse(param, f"{url!r} is not a valid URL ({exc})", "invalid_url") from None
    if parts.scheme not in ("http", "https"):
        raise _refuse(param, f"only http(s) image URLs are fetched, not {parts.scheme!r}", "invalid_url")
    if not parts.hostname:
        raise _refuse(param, f"{url!r} has no host", "invalid_url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError) as exc:
        raise _refuse(param, f"cannot resolve {parts.hostname!r} ({exc})", "unreachable_url") from None
    if not addresses:
        raise _refuse(param, f"{parts.hostname!r} resolves to no address", "unreachable_url")
    if not policy.allow_private_urls:
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise _refuse(
                param,
                f"{parts.hostname!r} resolves to the non-public address {private[0]}: refused ({policy.private_hint})",
                "forbidden_url",
            )
    return parts, addresses[0]


# Fetching ---------------------------------------------------------------------------------------------------


def connect(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to an address that passed the SSRF check (the only place the fetcher connects)."""
    return socket.create_connection((address, port), timeout)


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address already checked, speaking to ``host`` (Host header, TLS name)."""

    def __init__(
        self, host: str, address: str, port: int, timeout: float, tls: bool, deadline: Deadline
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.tls = tls
        self.deadline = deadline

    def connect(self) -> None:
        sock = connect(self.address, self.port, self.timeout)
        self.deadline.watch(sock)  # shut down at the deadline, whatever it waits for then
        self.sock = sock
        if self.tls:
            self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)


def fetch_url(url: str, policy: ImagePolicy, param: str, deadline: Deadline | None = None) -> bytes:
    """The bytes at ``url``, following at most ``MAX_REDIRECTS`` redirects, each one checked again.

    ``deadline`` (default: ``policy.timeout`` from now) shuts the connections down when it ends; the server ends
    it early (:meth:`Deadline.end_now`) when the request failed or its client left.

    Raises:
        APIError: refused address, HTTP error, too many redirects, too large, too slow, network failure.
    """
    deadline = deadline or Deadline(policy.timeout)
    try:
        return _fetch(url, policy, param, deadline)
    except APIError:
        if deadline.expired:  # whatever the shut connection made fail, the reason is the deadline
            raise _too_slow(url, policy, param) from None
        raise
    finally:
        deadline.cancel()


def _fetch(url: str, policy: ImagePolicy, param: str, deadline: Deadline) -> bytes:
    """:func:`fetch_url`'s work; ``deadline`` shuts every connection down when the time is up."""
    for _ in range(MAX_REDIRECTS + 1):
        parts, address = checked_address(url, policy, param)
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _too_slow(url, policy, param)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        connection = _PinnedConnection(
            parts.hostname or "", address, port, remaining, parts.scheme == "https", deadline
        )
        target = urllib.parse.urlunsplit(("", "", _ascii(parts.path) or "/", _ascii(parts.query), ""))
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise _refuse(param, f"{url!r}: redirect without a Location", "unreachable_url")
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                raise _refuse(param, f"{url!r}: HTTP {response.status} {response.reason}", "unreachable_url")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > policy.max_bytes:
                raise _refuse(param, f"{url!r} is larger than {policy.max_bytes} bytes", "image_too_large")
            data = _read(response, url, policy, param)
            if deadline.expired:  # the body ended because the deadline shut the connection
                raise _too_slow(url, policy, param)
            return data
        except (OSError, http.client.HTTPException, UnicodeError) as exc:
            if isinstance(exc, TimeoutError | socket.timeout):
                raise _too_slow(url, policy, param) from None
            raise _refuse(param, f"cannot fetch {url!r} ({exc})", "unreachable_url") from None
        finally:
            connection.close()
    raise _refuse(param, f"more than {MAX_REDIRECTS} redirects", "unreachable_url")


def _ascii(text: str) -> str:
    """A path or query with its non-ASCII characters percent-encoded as UTF-8 (what a browser sends; the
    ``%xx`` already there and the reserved characters kept)."""
    return urllib.parse.quote(text, safe="/%:@!$&'()*+,;=?~")


def _too_slow(url: str, policy: ImagePolicy, param: str) -> APIError:
    """The refusal of a download that outlasted ``--image_timeout``."""
    return _refuse(param, f"fetching {url!r} took longer than {policy.timeout:g} s", "image_timeout")


def _read(response: http.client.HTTPResponse, url: str, policy: ImagePolicy, param: str) -> bytes:
    """The body, its size checked as it arrives (``read1``: what has come, not a full 64 KiB)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(1 << 16):
        size += len(chunk)
        if size > policy.max_bytes:
            raise _refuse(param, f"{url!r} is larger than {policy.max_bytes} bytes", "image_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


# Other sources ----------------------------------------------------------------------------------------------


def decode_data_url(url: str, policy: ImagePolicy, param: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL (:func:`~qwenvl_train.data.data_url.data_url_bytes`).

    Raises:
        APIError: not an image media type, not base64, invalid base64, or over the size limit.
    """
    try:
        return data_url_bytes(url, policy.max_bytes)
    except DataURLError as exc:
        raise _refuse(param, str(exc), exc.code) from None


def local_path(ref: str, policy: ImagePolicy, param: str) -> Path:
    """A local image path (or ``file://`` URL), resolved inside ``policy.local_dir``.

    Raises:
        APIError: local images are not allowed, or the path leads out of the folder.
    """
    if policy.local_dir is None:
        raise _refuse(
            param,
            "local image paths are refused (send a data: or http(s) URL, or start the server with "
            "--allow-local-images DIR)",
            "forbidden_path",
        )
    if ref.startswith("file://"):
        ref = urllib.parse.unquote(urllib.parse.urlsplit(ref).path)
    root = policy.local_dir.resolve()
    try:
        path = (Path(ref) if os.path.isabs(ref) else root / ref).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop...
        raise _refuse(param, f"{ref!r} is not a usable path ({exc})", "forbidden_path") from None
    if not path.is_relative_to(root):
        raise _refuse(param, f"{ref!r} is outside the folder of local images", "forbidden_path")
    if not path.is_file():
        raise _refuse(param, f"{ref!r}: no such image in the folder of local images", "invalid_image")
    return path


# Decoding ---------------------------------------------------------------------------------------------------


def decode(data: bytes, policy: ImagePolicy, param: str, image_size: int) -> LoadedImage:
    """Decode ``data`` with the training loader's decoder (bomb guard, pixel limit, RGB) and transform it for the
    model; ``digest`` is the bytes' SHA-256."""
    from .vision_cache import picture_digest

    loaded = _load(
        lambda: decode_image(data, PICTURE, max_pixels=policy.max_pixels, formats=FORMATS),
        PICTURE,
        param,
        image_size,
    )
    loaded.digest = picture_digest(data)
    return loaded


def _load(open_picture: Callable[[], Any], name: str, param: str, image_size: int) -> LoadedImage:
    """The picture ``open_picture`` gives, for the model; an :class:`ImageError` (naming ``name``) becomes a 400."""
    from ..model.image_processing import preprocess_image

    try:
        image = open_picture()
    except ImageError as exc:
        message = str(exc).replace(f"{name}: ", "").replace(name, PICTURE)
        raise _refuse(param, message, "invalid_image") from None
    return LoadedImage(preprocess_image(image, image_size), image.width, image.height)


def load(
    url: str, policy: ImagePolicy, param: str, image_size: int, deadline: Deadline | None = None
) -> LoadedImage:
    """The picture an ``image_url`` names, ready for the model (blocking: run it in a worker thread;
    ``deadline``: see :func:`fetch_url`)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return decode(decode_data_url(url, policy, param), policy, param, image_size)
    if scheme in ("http", "https"):
        return decode(fetch_url(url, policy, param, deadline), policy, param, image_size)
    if scheme in ("", "file") or len(scheme) == 1:  # a path (a Windows drive letter is not a scheme)
        path = local_path(url, policy, param)
        if path.stat().st_size > policy.max_bytes:
            raise _refuse(param, f"the image is larger than {policy.max_bytes} bytes", "image_too_large")
        load_file = lambda: load_image(str(path), max_pixels=policy.max_pixels, timeout=policy.timeout)  # noqa: E731
        return _load(load_file, str(path), param, image_size)
    raise _refuse(
        param, f"unsupported image URL scheme {scheme!r} (use data:, http: or https:)", "invalid_url"
    )
