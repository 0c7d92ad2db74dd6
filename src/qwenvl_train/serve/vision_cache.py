"""The picture feature cache of ``serve`` (``--vision-cache-mb``): the vision tower's output for a picture,
kept in memory and reused when the picture comes again.

A chat about one picture sends it again with every turn (the OpenAI API keeps no state), so without the cache the
tower (a 1.9 B-parameter ViT on the full-size model) runs again each turn. The key of a picture is

* the SHA-256 of its bytes as received (the data URL's or the download's; two spellings of one file are one
  picture, a re-encoded picture is another),
* the identity of the vision weights: this cache lives in the server's process and belongs to its one model, so
  the tower object and its dtype name them (hashing gigabytes of weights at start-up would buy nothing),
* the model's image size (the side the picture is resized to).

Entries are ``[n_queries, hidden]`` tensors kept where the model is, evicted least recently used first beyond
``max_bytes``. Only the engine thread reads and writes it; ``hits`` and ``misses`` are read by ``/metrics``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch


def picture_digest(data: bytes) -> str:
    """The SHA-256 of a picture's bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


class VisionCache:
    """An LRU of vision features within ``max_bytes``; ``identity`` names the vision weights and image size."""

    def __init__(self, max_bytes: int, identity: str) -> None:
        self.max_bytes = max_bytes
        self.identity = identity
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def key(self, digest: str) -> str:
        return f"{self.identity}|{digest}"

    def get(self, digest: str) -> torch.Tensor | None:
        """The features of the picture with this digest, or None (counted as a hit or a miss)."""
        key = self.key(digest)
        features = self.entries.get(key)
        if features is None:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return features

    def put(self, digest: str, features: torch.Tensor) -> None:
        """Keep ``features`` (evicting the least recently used beyond the limit; one larger than it is not kept)."""
        size = features.nelement() * features.element_size()
        key = self.key(digest)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = features
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.nelement() * old.element_size()


def tower_identity(model: object, image_size: int) -> str:
    """What names the vision weights and the image size in a key (see the module docstring)."""
    visual = model.transformer.visual  # type: ignore[attr-defined]
    dtype = next(visual.parameters()).dtype
    return f"visual@{id(visual):x}|{dtype}|{image_size}"
