"""``qwenvl-train chat``: ask a Qwen-VL chat model one question, or talk with it.

    qwenvl-train chat --model output_qwen --image data/images/red_square.png "Where is the square?" --draw out.png
    qwenvl-train chat --model /models/Qwen-VL-Chat --adapter output_lora        # interactive, with history

With a QUESTION: the answer is printed once. Without: an interactive loop that keeps the history and streams
each answer as it is generated (``:clear`` forgets the history, ``:quit`` or Ctrl-D ends). ``--image`` pictures
go before the (first) question as ``Picture N: <img>PATH</img>``; a question may also hold that markup itself.
Relative image paths are read from the current directory. ``--draw OUT.png`` draws the answer's boxes on the
latest picture (rewritten after each answer in the loop).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from .model_options import add_generation_arguments, add_model_arguments, generation_overrides

COMMANDS_HELP = "(:clear forgets the history, :quit or Ctrl-D ends)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``chat`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "chat",
        help="ask a Qwen-VL chat model (with an optional adapter) a question, or chat interactively",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_model_arguments(parser)
    parser.add_argument("question", nargs="?", help="ask this and exit (default: interactive)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH|URL",
        help="a picture for the question (repeatable)",
    )
    parser.add_argument(
        "--system", default=None, metavar="TEXT", help="system prompt (default: the model's usual)"
    )
    parser.add_argument("--draw", metavar="OUT.png", help="draw the answer's boxes on the latest picture")
    add_generation_arguments(parser, greedy_default=False)
    parser.set_defaults(func=run)
    return parser


def build_query(tokenizer: Any, images: list[str], text: str) -> str:
    """The pictures then the text, as ``tokenizer.from_list_format`` writes them."""
    return tokenizer.from_list_format([{"image": image} for image in images] + [{"text": text}])


def draw(tokenizer: Any, response: str, history: list[tuple[str, Any]], out: str) -> None:
    """Write the response's boxes drawn on the latest picture to ``out``, or say why nothing was drawn."""
    image = tokenizer.draw_bbox_on_latest_picture(response, history)
    if image is None:
        print(f"--draw: no picture or no box in the answer; {out} not written", file=sys.stderr)
        return
    image.save(out)
    print(f"--draw: wrote {out}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Load the model, then answer the question or run the interactive loop."""
    from ..inference.loading import load_for_inference, resolve_folders

    resolve_folders(args.model, args.adapter)  # a bad folder fails at once, before PIL and torch load
    from ..data.images import check_image_header, resolve_image
    from ..format import tokens as st

    for image in args.image:  # a missing picture fails before the weights are loaded
        check_image_header(resolve_image(image, None))
    model, tokenizer = load_for_inference(args.model, args.adapter, args.dtype, args.device)
    system = st.DEFAULT_SYSTEM_PROMPT if args.system is None else args.system
    settings = generation_overrides(args)
    if args.question is not None:
        query = build_query(tokenizer, args.image, args.question)
        response, history = model.chat(tokenizer, query, None, system=system, **settings)
        print(response)
        if args.draw:
            draw(tokenizer, response, history, args.draw)
        return 0
    return interactive(model, tokenizer, args.image, system, settings, args.draw)


def interactive(
    model: Any, tokenizer: Any, images: list[str], system: str, settings: dict[str, Any], draw_to: str | None
) -> int:
    """Read questions from stdin until ``:quit`` or end of input, streaming each answer; keeps the history."""
    history: list[tuple[str, Any]] = []
    pending_images = list(images)
    print(f"Chatting with the model {COMMANDS_HELP}.", file=sys.stderr)
    while True:
        try:
            line = input("user> ")
        except EOFError:
            print()
            return 0
        command = line.strip()
        if not command:
            continue
        if command in (":quit", ":exit"):
            return 0
        if command == ":clear":
            history, pending_images = [], list(images)
            print("(history cleared)", file=sys.stderr)
            continue
        query = build_query(tokenizer, pending_images, line)
        print("assistant> ", end="", flush=True)
        shown = ""
        try:
            for text in model.chat_stream(tokenizer, query, history, system=system, **settings):
                print(text[len(shown) :], end="", flush=True)
                shown = text
        except (
            UserError,
            FileNotFoundError,
        ) as exc:  # a bad path or markup in this question: say so and go on
            print(f"\nerror: {exc}", file=sys.stderr)
            continue
        print()
        pending_images = []
        history.append((query, shown))
        if draw_to:
            draw(tokenizer, shown, history, draw_to)
