"""The Qwen-VL text format, in one place: what training, check-data, chat, eval and ``model.chat`` all speak.

- :mod:`.tokens` is the special-token table (``<|im_start|>``, ``<img>``, ``<imgpad>``... and their ids).
- :mod:`.sample` holds the sample types: :class:`Turn`, :class:`Sample` (one record of a data file, roles
  resolved) and :class:`DataProblem` (one problem found in the data: a record printed as one line, not raised).
- :mod:`.markup` is the one scanner of ``<img>``, ``<ref>``, ``<box>``, ``<quad>``, read strictly for data
  (:func:`parse_value`), as the original tokenizer read chat queries (:func:`read_prompt`) and leniently for
  what a model writes (:func:`split_markup`, :func:`to_list_format`, :func:`parse_groundings`).
- :mod:`.boxes` converts box coordinates: pixel corners, x/y/width/height and [0, 1] boxes to Qwen-VL's
  [0, 1000) integers (:func:`to_qwen_box`, from the image's real size) and back to pixels (:func:`to_pixels`);
  :mod:`.markup` writes the tags (:func:`image_markup`, :func:`grounding_markup`, and the original tokenizer's
  :func:`from_list_format` for chat queries).
- :mod:`.rules` are the conversation rules (turns alternate user/assistant, end with the assistant, no empty
  value, no image in an answer, plain-text system prompt) and the label policies.
- :mod:`.render` is the one ChatML renderer: training ids and the trained mask (:func:`render_conversation`,
  under the ``assistant`` or ``reference`` policy; :data:`IGNORE_INDEX`) and chat prompts (:func:`make_context`), sharing
  the image span and the turn blocks.

Pure Python: nothing here imports torch, numpy, transformers or Pillow, nor any other part of the package but
:mod:`qwenvl_train.errors` (and :mod:`qwenvl_train.lazy`: the public names below are imported from their module
on first access).
"""

from __future__ import annotations

from ..lazy import lazy_getattr

__all__ = [
    "DEFAULT_MAX_WINDOW_SIZE",
    "IGNORE_INDEX",
    "POLICIES",
    "ROLES",
    "ChatML",
    "Context",
    "CutPoint",
    "DataProblem",
    "Grounding",
    "MarkupError",
    "PromptError",
    "RenderError",
    "RenderedSample",
    "Sample",
    "TextEncoder",
    "Turn",
    "BoxError",
    "box_markup",
    "grounding_markup",
    "image_markup",
    "ref_markup",
    "to_pixels",
    "to_qwen_box",
    "encode_markup",
    "find_tag",
    "image_span",
    "latest_image",
    "make_context",
    "parse_groundings",
    "parse_value",
    "read_prompt",
    "render_conversation",
    "split_markup",
    "from_list_format",
    "to_list_format",
]

#: Where each public name lives.
_LAZY = {
    "ROLES": ".sample",
    "DataProblem": ".sample",
    "Sample": ".sample",
    "Turn": ".sample",
    "Grounding": ".markup",
    "MarkupError": ".markup",
    "PromptError": ".markup",
    "find_tag": ".markup",
    "latest_image": ".markup",
    "parse_groundings": ".markup",
    "parse_value": ".markup",
    "read_prompt": ".markup",
    "split_markup": ".markup",
    "from_list_format": ".markup",
    "to_list_format": ".markup",
    "BoxError": ".boxes",
    "to_pixels": ".boxes",
    "to_qwen_box": ".boxes",
    "box_markup": ".markup",
    "grounding_markup": ".markup",
    "image_markup": ".markup",
    "ref_markup": ".markup",
    "POLICIES": ".rules",
    "DEFAULT_MAX_WINDOW_SIZE": ".render",
    "IGNORE_INDEX": ".render",
    "ChatML": ".render",
    "Context": ".render",
    "CutPoint": ".render",
    "RenderError": ".render",
    "RenderedSample": ".render",
    "TextEncoder": ".render",
    "encode_markup": ".render",
    "image_span": ".render",
    "make_context": ".render",
    "render_conversation": ".render",
}

__getattr__ = lazy_getattr(__name__, _LAZY)
