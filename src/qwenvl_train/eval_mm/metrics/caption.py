"""CIDEr as ``evaluate_caption.py`` gets it: pycocoevalcap's ``Cider`` after its ``PTBTokenizer``.

The original runs ``COCOEvalCap``, which tokenises references and candidates with the Stanford PTB tokenizer
(Java, lower-cased, punctuation dropped) and scores CIDEr-D (n = 4, sigma = 6) over the images; the corpus
statistics (document frequencies) come from the references of the scored images. Only CIDEr is computed here,
the number the Qwen-VL README reports. pycocoevalcap (the ``eval`` extra) and a ``java`` on the PATH are needed,
and are only imported when a caption benchmark is scored.

An empty candidate (a missing prediction) is not sent to the tokenizer (it would drop the line) and scores as
the empty token list.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from ...errors import UserError


class CaptionScorerMissingError(UserError, RuntimeError):
    """pycocoevalcap or Java is not installed; one line saying how to install them."""


def _tokenizer_and_cider():  # noqa: ANN202 - pycocoevalcap is untyped
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as exc:
        raise CaptionScorerMissingError(
            "captioning is scored by pycocoevalcap: pip install 'qwenvl-train[eval]' (or pycocoevalcap==1.2)"
        ) from exc
    if shutil.which("java") is None:
        raise CaptionScorerMissingError(
            "captioning is scored after pycocoevalcap's PTB tokenizer, which needs Java: "
            "apt-get install default-jre-headless"
        )
    return PTBTokenizer(), Cider()


def cider_scores(
    references: Mapping[str, Sequence[str]], candidates: Mapping[str, str]
) -> tuple[float, dict[str, float]]:
    """Corpus CIDEr and each image's CIDEr, on pycocoevalcap's scale (1.0 = 100 in the papers' tables).

    Args:
        references: image id -> its reference captions (at least one each).
        candidates: image id -> the model's caption; the same ids as ``references``.
    """
    if set(references) != set(candidates):
        raise ValueError("references and candidates must name the same images")
    if not references:
        return 0.0, {}
    tokenizer, cider = _tokenizer_and_cider()
    ids = list(references)
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in ids})
    spoken = {i: [{"caption": candidates[i]}] for i in ids if candidates[i].strip()}
    res = tokenizer.tokenize(spoken) if spoken else {}
    res = {i: res.get(i, [""]) for i in ids}
    score, per_image = cider.compute_score({i: gts[i] for i in ids}, res)
    return float(score), {i: float(s) for i, s in zip(ids, per_image, strict=True)}
