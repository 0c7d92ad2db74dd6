"""The data options shared by ``qwenvl-train train`` and ``qwenvl-train check-data``: defined once, here.

``train`` parses them as part of its ``DataArguments`` (which adds the file lists); ``check-data`` builds its
parser from the same fields (:func:`data_options_parser`), so both commands take the same names with the same
meanings. Only the default of ``verify_images`` differs: ``check-data`` decodes every image (``full``), training
checks headers (``header``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..format.rules import Policy

#: Image limits, defined here (not in :mod:`.images`, which imports torch) so that ``--help`` stays cheap.
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own default limit (about 0.25 GiB of 24-bit pixels)
DEFAULT_TIMEOUT = (
    10.0  # seconds for the whole download of an image URL (connection, headers and body), each try
)

Truncation = Literal["drop", "cut_turns"]
OnError = Literal["raise", "skip"]
VerifyImages = Literal["header", "full", "none"]
RUN_ONLY = (
    "on_error",
    "preprocessing_num_workers",
    "data_cache",
)  # options that do not change what a scan finds


@dataclass
class DataOptions:
    """How conversations become training samples, what happens to samples that are bad or too long, and how the
    scan runs (workers, cache: :data:`RUN_ONLY`, with ``on_error``, do not change what it finds)."""

    model_max_length: int = field(
        default=2048,
        metadata={"help": "Maximum tokens per sample (an image costs n_queries + 2 of them)."},
    )
    truncation: Truncation = field(
        default="drop",
        metadata={
            "help": "A sample longer than model_max_length is dropped, or cut after the last assistant turn "
            "that fits (cut_turns). Either way it is counted and reported."
        },
    )
    on_error: OnError = field(
        default="raise",
        metadata={
            "help": "A bad sample (markup, shape, missing image, ...) stops training with every error listed "
            "(raise), or is left out and counted (skip). An image that fails to load during training stops it "
            "naming the sample (raise), or the sample is replaced by the next one that loads and counted (skip)."
        },
    )
    label_policy: Policy = field(
        default="assistant",
        metadata={
            "help": "Which tokens are trained: every assistant turn (assistant), or exactly what the original "
            "finetune.py trained (reference)."
        },
    )
    verify_images: VerifyImages = field(
        default="header",
        metadata={
            "help": "Image check before training: header (local files opened, pixels not decoded), full (every "
            "image decoded and every URL fetched) or none."
        },
    )
    allow_bare_boxes: bool = field(
        default=False, metadata={"help": "Accept a <box> that is not attached to a <ref>."}
    )
    max_image_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={
            "help": "Refuse images with more pixels than this (decompression-bomb guard; a larger value also "
            "raises Pillow's own limit)."
        },
    )
    image_timeout: float = field(
        default=DEFAULT_TIMEOUT,
        metadata={"help": "Seconds for the whole download of an http(s) image (each of up to 3 tries)."},
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that scan the data (default: the available CPU cores, up to 8; data under 4 MiB is "
            "scanned in one process). The result is the same, in the same order, whatever the number."
        },
    )
    data_cache: str = field(
        default="auto",
        metadata={
            "help": "Where the scan's result is kept, so that later runs, check-data and every rank read it instead "
            "of scanning again: auto ($QWENVL_TRAIN_SCAN_CACHE, else scans/ in the cache folder "
            "~/.cache/qwenvl-train or $QWENVL_TRAIN_CACHE), a folder, or off (scan every time; every rank scans)."
        },
    )

    def __post_init__(self) -> None:
        hints = get_type_hints(DataOptions)
        for f in dataclasses.fields(DataOptions):
            allowed = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else ()
            value = getattr(self, f.name)
            if allowed and value not in allowed:
                raise ValueError(f"{f.name}={value!r}: choose from {', '.join(allowed)}")
        if self.model_max_length < 1:
            raise ValueError(f"model_max_length={self.model_max_length}: must be positive")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise ValueError(f"preprocessing_num_workers={self.preprocessing_num_workers}: must be positive")

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace | Any) -> DataOptions:
        """The options found as attributes of ``namespace`` (parsed arguments, or a subclass instance)."""
        return cls(**{f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)})


def data_options_parser(**defaults: Any) -> argparse.ArgumentParser:
    """A parser holding every :class:`DataOptions` field exactly as ``qwenvl-train train`` parses it, to be
    used as a parent (``argparse.ArgumentParser(parents=[data_options_parser()])``).

    The options are built the way transformers' ``HfArgumentParser`` builds them (``--name`` and ``--name-with-
    dashes``, choices for ``Literal`` types, ``--flag [true|false]`` for booleans), without importing transformers,
    so that ``check-data --help`` answers at once.

    Args:
        defaults: different defaults for this command (``verify_images="full"`` for check-data).
    """
    parser = argparse.ArgumentParser(add_help=False)
    hints = get_type_hints(DataOptions)
    for f in dataclasses.fields(DataOptions):
        kind = hints[f.name]
        if get_origin(kind) in (Union, types.UnionType) and type(None) in get_args(kind):
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
        options = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs: dict[str, Any] = {**f.metadata, "default": f.default}
        if get_origin(kind) is Literal:
            kwargs.update(choices=get_args(kind), type=str)
        elif kind is bool:
            kwargs.update(type=string_to_bool, nargs="?", const=True)
        else:
            kwargs["type"] = kind
        parser.add_argument(*options, **kwargs)
        if kind is bool and f.default is True:
            parser.add_argument(f"--no_{f.name}", action="store_false", dest=f.name)
    parser.set_defaults(**defaults)
    return parser


def string_to_bool(value: str | bool) -> bool:
    """``true``/``false`` (and yes/no, 1/0) as transformers' argument parser reads them."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false"
    )
