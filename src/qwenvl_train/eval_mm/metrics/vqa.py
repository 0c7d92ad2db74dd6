"""The VQA score of ``vqa_eval.py`` (the original's copy of the VQA challenge evaluation), quirks included.

``original`` (what the Qwen-VL scripts print):

- the prediction: newlines and tabs become spaces, it is stripped, then :func:`process_punctuation` and
  :func:`process_digits_articles` (lower case, number words to digits, articles dropped, contractions restored);
- the ten human answers: :func:`process_punctuation` only, and only when they are not all the same string; they
  are never lower-cased or stripped;
- the period pattern is ``\\.(?!\\d)``: the script meant "a period not between digits" but wrote ``(?!<=\\d)``, a
  lookahead that always holds, so ``5.`` loses its period while ``.5`` keeps it; and it passes ``re.UNICODE`` (32)
  where ``re.sub`` takes its *count*, so at most 32 periods are removed;
- a question scores the mean, over each human answer, of ``min(1, matches among the *other* answers / 3)``; the
  "other" answers are those whose annotation dict differs from this one (official annotations carry an
  ``answer_id``, so this is leave-one-out; dicts without one that are equal drop out together).

``official`` (the VQA challenge's definition, as its evaluation page states it): the human answers get the same
full normalisation as the prediction, every time, and each answer is left out by position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Characters the punctuation step removes (or turns into spaces), as the script lists them.
PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
#: Number words the script maps to digits.
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    )
}
NUMBER_WORDS["none"] = "0"
ARTICLES = frozenset({"a", "an", "the"})

# The script's contraction table, word for word (a few of its entries are odd, e.g. "somebody'd" -> "somebodyd";
# they are kept because they change scores). Written as "plain:fixed" pairs.
_CONTRACTIONS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've couldnt've:couldn't've
didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've hadn'tve:hadn't've hasnt:hasn't
havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's howd:how'd howll:how'll hows:how's Id've:I'd've
I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am
mightnt:mightn't mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at
shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've shouldnt:shouldn't
shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd somebodyd've:somebody'd've
somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's someoned:someone'd
someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's
somethingd:something'd somethingd've:something'd've something'dve:something'd've somethingll:something'll
thats:that's thered:there'd thered've:there'd've there'dve:there'd've therere:there're theres:there's
theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas
wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're whats:what's
whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd whod've:who'd've
who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're whys:why's wont:won't
wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll
y'allll:y'all'll yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've
you'dve:you'd've youll:you'll youre:you're youve:you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split(":", 1) for pair in _CONTRACTIONS.split())

_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = 32  # re.UNICODE, passed where re.sub takes its count
_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")


def process_punctuation(text: str) -> str:
    """The script's punctuation step.

    Each punctuation character is deleted when the *input* has it next to a space, or has a comma between two
    digits anywhere; otherwise it becomes a space. Then periods not followed by a digit are deleted, at most 32.
    """
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for char in PUNCTUATION:
        delete = has_digit_comma or (char + " ") in text or (" " + char) in text
        out = out.replace(char, "" if delete else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def process_digits_articles(text: str) -> str:
    """Lower case, split on whitespace, number words to digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The full normalisation the script gives a prediction (and the official definition gives every answer)."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digits_articles(process_punctuation(text))


def _as_dicts(answers: Sequence[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
    # Plain strings get their position as an answer_id so that equal strings stay distinct annotations.
    return [
        dict(a) if isinstance(a, Mapping) else {"answer": a, "answer_id": i} for i, a in enumerate(answers)
    ]


def vqa_score(
    prediction: str, answers: Sequence[Mapping[str, Any] | str], scoring: str = "original"
) -> float:
    """One question's VQA score in [0, 1].

    Args:
        prediction: the model's answer as generated.
        answers: the human answers: the annotation's ``answers`` dicts (with ``answer``) or plain strings.
        scoring: ``original`` (``vqa_eval.py``) or ``official`` (see the module docstring).
    """
    entries = _as_dicts(answers)
    if not entries:
        return 0.0
    predicted = normalize_answer(prediction)
    if scoring == "official":
        texts = [normalize_answer(str(e["answer"])) for e in entries]
        matches = [
            sum(1 for j, t in enumerate(texts) if j != i and t == predicted) for i in range(len(texts))
        ]
    else:
        if len({e["answer"] for e in entries}) > 1:
            for e in entries:
                e["answer"] = process_punctuation(e["answer"])
        matches = [
            sum(1 for other in entries if other != e and other["answer"] == predicted) for e in entries
        ]
    return sum(min(1.0, m / 3) for m in matches) / len(matches)
