"""One sample, on its own: every rule, markup check and the rendering with truncation (:func:`scan_sample`), and
the image check (:func:`check_image`). Nothing here looks at any other sample; counting and keeping are the
chunks' job (:mod:`.chunks`).

:func:`scan_sample` takes a :class:`~qwenvl_train.format.sample.Sample` (what :mod:`.records` read) and gives a
:class:`SampleScan`: every problem of the sample, not only the first, and when it has none, its ids and trained
mask after truncation, ready for the columns. The images it names are checked separately (each distinct image
once per process) and their errors joined to the sample when it is counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ...format.render import TextEncoder, parse_turns, render_parsed
from ...format.rules import check_parsed, check_shape, check_values
from ...format.sample import DataProblem, Sample
from ..errors import ImageError
from ..images import check_image_header, load_image, resolve_image
from ..options import DataOptions


@dataclass
class SampleScan:
    """What the scan found about one sample, without looking at any other.

    Attributes:
        id: the sample id; ``explicit_id``: written in the data (duplicates are counted among these).
        file, line: where the sample is.
        errors: every problem found so far (image problems are added when the sample is counted).
        image_refs: every image the sample names (resolved), with the turn naming it, to be checked.
        image_ref_turns: the turn of each of ``image_refs``.
        input_ids, trained: the rendered sample after truncation; None when it has errors or is dropped.
        images, image_turns: the images of the kept part.
        length: tokens before truncation (0 when not rendered).
        too_long, cut, turns_removed: what truncation did.
        dropped_first_turn: the ``reference`` policy dropped a leading assistant turn.
        turns: user/assistant turns rendered; ``has_system``: the sample has its own system turn.
        control_strings: literal control-token strings kept as text.
    """

    id: str
    explicit_id: bool
    file: str
    line: int | None
    errors: list[DataProblem] = field(default_factory=list)
    image_refs: list[str] = field(default_factory=list)
    image_ref_turns: list[int] = field(default_factory=list)
    input_ids: np.ndarray | None = None
    trained: np.ndarray | None = None
    images: list[str] = field(default_factory=list)
    image_turns: list[int] = field(default_factory=list)
    length: int = 0
    too_long: bool = False
    cut: bool = False
    turns_removed: int = 0
    dropped_first_turn: bool = False
    turns: int = 0
    has_system: bool = False
    control_strings: Counter[str] = field(default_factory=Counter)

    @property
    def where(self) -> str:
        """``file:line`` (or the file alone when the line is unknown)."""
        return f"{self.file}:{self.line}" if self.line else self.file


def scan_sample(raw: Sample, tokenizer: TextEncoder, options: DataOptions, n_queries: int) -> SampleScan:
    """Every rule, markup check and the rendering of one sample, collecting every problem."""
    out = SampleScan(raw.id, raw.explicit_id, str(raw.file), raw.line, errors=list(raw.errors))
    if raw.errors:
        turns, dropped = raw.turns, False  # the order means nothing with turns missing: check the rest
    else:
        turns, dropped, shape_errors = check_shape(raw, options.label_policy)
        out.errors += shape_errors
    out.errors += check_values(raw, turns)
    parsed, markup_errors = parse_turns(turns, allow_bare_boxes=options.allow_bare_boxes)
    out.errors += [raw.error(str(e), e.turn) for e in markup_errors]
    out.errors += check_parsed(raw, turns, parsed)
    base = raw.file.parent
    for value, turn in zip(parsed, turns, strict=True):
        if value is not None:
            for segment in value.images:
                out.image_refs.append(resolve_image(segment, base))
                out.image_ref_turns.append(turn.index)
    if out.errors:
        return out

    rendered = render_parsed(  # ids kept up to the limit only: an oversized sample costs about its own size
        turns,
        parsed,
        tokenizer,
        system=raw.system,
        policy=options.label_policy,
        n_queries=n_queries,
        max_length=options.model_max_length,
    )
    rendered.images = out.image_refs
    out.dropped_first_turn = dropped
    out.turns, out.has_system = rendered.num_turns, raw.system is not None
    out.control_strings = rendered.control_strings
    out.length = rendered.length
    if out.length > options.model_max_length:
        out.too_long = True
        shorter = rendered.cut(options.model_max_length) if options.truncation == "cut_turns" else None
        if shorter is None:
            return out
        out.cut, out.turns_removed = True, rendered.num_turns - shorter.num_turns
        rendered = shorter
    out.input_ids = np.array(rendered.input_ids, dtype=np.int32)
    out.trained = np.array(rendered.trained, dtype=np.bool_)
    out.images, out.image_turns = rendered.images, rendered.image_turns
    return out


def check_image(ref: str, options: DataOptions) -> str | None:
    """None when the image passes the ``verify_images`` check (header, full decode, or none), else the one-line
    reason."""
    try:
        if options.verify_images == "header":
            check_image_header(ref, max_pixels=options.max_image_pixels)
        elif options.verify_images == "full":
            load_image(ref, max_pixels=options.max_image_pixels, timeout=options.image_timeout).close()
    except ImageError as exc:
        return str(exc)
    return None
