"""A Jinja chat template that renders the Qwen-VL prompt, for tools that format prompts from
``tokenizer_config.json``'s ``chat_template`` (``tokenizer.apply_chat_template``, serving stacks).

Rendered and tokenized by the model's own tokenizer (special-token strings become their ids), it gives the ids
of :func:`.render.render_conversation` for a conversation, and those of :func:`.render.make_context` with
``add_generation_prompt=True``: every block is ``<|im_start|>`` role "\\n" content ``<|im_end|>`` "\\n"; the system
block comes first (the first message when it is a system message, else the default system prompt); a
picture (a content part of type ``image`` or ``image_url``) is ``Picture k: <img>`` + ``n_queries`` x
``<imgpad>`` + ``</img>\\n``, numbered over the whole conversation as the training data numbers them, so that
the ids stand where the model puts the picture's features (the picture itself travels apart, as
``pixel_values``).

Where a template cannot be what training is: text is tokenized as one string, so a literal ``<|im_start|>``
inside a message becomes a control id (training keeps it as text), and a content that begins with whitespace
may merge with the "\\n" before it into another BPE split. The history is never cut to ``max_window_size``.
"""

from __future__ import annotations

from . import tokens as st


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (single-quoted)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def chat_template(n_queries: int, system: str = st.DEFAULT_SYSTEM_PROMPT) -> str:
    """The template for a model whose resampler has ``n_queries`` queries (``config.visual.n_queries``)."""
    start, end, nl = _literal(st.IM_START), _literal(st.IM_END), _literal("\n")
    span = _literal(st.IMG_START + st.IMG_PAD * n_queries + st.IMG_END + "\n")
    return (
        "{%- set ns = namespace(pictures=0) -%}"
        "{%- macro content(message) -%}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] in ['image', 'image_url'] -%}"
        "{%- set ns.pictures = ns.pictures + 1 -%}"
        "{{ 'Picture ' ~ ns.pictures ~ ': ' }}{{ " + span + " }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{ " + start + " ~ 'system' ~ " + nl + " }}{{ content(messages[0]) }}{{ " + end + " ~ " + nl + " }}"
        "{%- else -%}"
        "{{ " + _literal(st.IM_START + "system\n" + system + st.IM_END + "\n") + " }}"
        "{%- endif -%}"
        "{%- for message in messages if message['role'] != 'system' -%}"
        "{{ "
        + start
        + " ~ message['role'] ~ "
        + nl
        + " }}{{ content(message) }}{{ "
        + end
        + " ~ "
        + nl
        + " }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + _literal(st.IM_START + "assistant\n") + " }}{%- endif -%}"
    )
