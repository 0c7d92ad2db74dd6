"""``qwenvl-train serve``: put a model behind the OpenAI-compatible API and the chat page.

    qwenvl-train serve --model output_qwen                       # http://127.0.0.1:8000/ (page) and /v1 (API)
    qwenvl-train serve --model /models/Qwen-VL-Chat --adapter output_lora --port 8080 --api-key s3cret

Loads the model as ``chat`` does, starts the batching engine, and serves until SIGTERM or Ctrl-C, which stop it
gracefully (``serve.server``: answers in progress get ``--shutdown-timeout`` to finish, the rest are told the
server is stopping; exit status 0).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .model_options import add_model_arguments, positive_int

API_KEY_ENV = "QWENVL_TRAIN_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``serve`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a chat model over an OpenAI-compatible HTTP API, with a chat page in the browser",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--name", default=None, help="the model name the API reports (default: the folder's name)"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${API_KEY_ENV}, else no key)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="rows generated together (default 8)",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="fetch image URLs that resolve to loopback, private or link-local addresses (refused by default)",
    )
    parser.add_argument(
        "--allow-local-images",
        metavar="DIR",
        default=None,
        help="accept image paths (or file:// URLs) of files inside DIR (refused by default)",
    )
    parser.add_argument(
        "--max-body-mb", type=positive_int, default=32, metavar="MB", help="largest request body (default 32)"
    )
    parser.add_argument(
        "--log-requests",
        metavar="FILE.jsonl",
        default=None,
        help="append each completed chat request, with its answer, as one OpenAI-format line (pictures stored by "
        "content hash in FILE_images/ beside it; never the API key or headers) for convert --from openai "
        "(default: off)",
    )
    add_limit_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The limits that keep a public server up (see ``serve.limits`` and ``serve.http_guard``)."""
    limits = parser.add_argument_group(
        "limits (a request beyond them is refused at once: 4xx, or 429/503 to retry)"
    )
    limits.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="NAMES",
        help="comma-separated Host names the server answers to besides localhost / 127.0.0.1 / [::1] ('*': any); "
        "default: only those without an API key, any with one",
    )
    limits.add_argument(
        "--max-waiting",
        type=positive_int,
        default=64,
        metavar="N",
        help="requests waiting for a row at most; more are answered 429 (default 64)",
    )
    limits.add_argument(
        "--max-queued-image-mb",
        type=positive_float,
        default=1024,
        metavar="MB",
        help="memory the decoded pictures of waiting requests may hold; beyond it 503 (default 1024)",
    )
    limits.add_argument(
        "--max-images",
        type=positive_int,
        default=16,
        metavar="N",
        help="pictures in one request (default 16)",
    )
    limits.add_argument(
        "--max-concurrent-fetches",
        type=positive_int,
        default=4,
        metavar="N",
        help="image URLs of one request fetched at once (default 4)",
    )
    limits.add_argument(
        "--vision-cache-mb",
        type=float,
        default=256.0,
        metavar="MB",
        help="memory for the vision tower's output of recent pictures, reused when a chat sends a picture again "
        "(0: off; default 256)",
    )
    limits.add_argument(
        "--header-timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds a request head may take to arrive (default 10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds a request body may take to arrive (default 30)",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="on SIGTERM / Ctrl-C, seconds answers in progress may take to finish before they are ended (default 30)",
    )


def open_request_log(path: str | None) -> Any:
    """The ``--log-requests`` file opened for appending (None when not asked for).

    Raises:
        ConfigurationError: it cannot be opened (before the model loads).
    """
    if not path:
        return None
    from ..errors import UserError
    from ..serve.request_log import RequestLog

    try:
        return RequestLog(Path(path))
    except UserError:  # not a file to append to: its own line
        raise
    except OSError as exc:
        raise ConfigurationError(
            f"--log-requests {path}: cannot open for appending ({exc.strerror or exc})"
        ) from None


def build_state(
    model: Any, tokenizer: Any, args: argparse.Namespace, name: str, request_log: Any = None
) -> Any:
    """The server's state for a loaded model (also used by the tests; ``request_log`` is opened from
    ``args.log_requests`` when not given)."""
    from ..format.render import DEFAULT_MAX_WINDOW_SIZE
    from ..inference.generation import chat_generation_config
    from ..serve.app import ServerState
    from ..serve.batcher import Batcher
    from ..serve.fetch import ImagePolicy
    from ..serve.hosts import HostRules
    from ..serve.http_guard import HttpLimits
    from ..serve.limits import Limits
    from ..serve.vision_cache import VisionCache, tower_identity

    config = chat_generation_config(model)
    local = getattr(args, "allow_local_images", None)
    policy = ImagePolicy(
        allow_private_urls=bool(getattr(args, "allow_private_urls", False)),
        local_dir=Path(local) if local else None,
    )
    if request_log is None:
        request_log = open_request_log(getattr(args, "log_requests", None))
    if request_log is not None:
        request_log.policy = policy  # reads the pictures the server accepted, from where it accepted them
    api_key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None
    cache_mb = float(getattr(args, "vision_cache_mb", 256.0))
    vision_cache = (
        VisionCache(int(cache_mb * (1 << 20)), tower_identity(model, int(model.config.image_size)))
        if cache_mb > 0
        else None
    )
    allowed = getattr(args, "allowed_hosts", None)
    defaults = Limits()
    limits = Limits(
        body_timeout=float(getattr(args, "body_timeout", defaults.body_timeout)),
        max_waiting=int(getattr(args, "max_waiting", defaults.max_waiting)),
        max_queued_image_bytes=int(
            float(getattr(args, "max_queued_image_mb", defaults.max_queued_image_bytes >> 20)) * (1 << 20)
        ),
        max_images=int(getattr(args, "max_images", defaults.max_images)),
        max_concurrent_fetches=int(getattr(args, "max_concurrent_fetches", defaults.max_concurrent_fetches)),
        shutdown_timeout=float(getattr(args, "shutdown_timeout", defaults.shutdown_timeout)),
    )
    return ServerState(
        name=name,
        tokenizer=tokenizer,
        batcher=Batcher(
            model, tokenizer, max_batch_size=getattr(args, "max_batch_size", 8), vision_cache=vision_cache
        ),
        generation_config=config,
        image_size=int(model.config.image_size),
        n_queries=int(model.config.n_queries),
        max_window_size=int(getattr(config, "max_window_size", None) or DEFAULT_MAX_WINDOW_SIZE),
        policy=policy,
        api_key=api_key,
        max_body_bytes=int(getattr(args, "max_body_mb", 32)) << 20,
        request_log=request_log,
        limits=limits,
        http_limits=HttpLimits(head_timeout=float(getattr(args, "header_timeout", HttpLimits.head_timeout))),
        hosts=HostRules(
            allowed=frozenset(h.strip().lower().strip("[]") for h in allowed.split(",") if h.strip())
            if allowed
            else None,
            keyed=api_key is not None,
        ),
    )


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning for a server reachable from other machines without a key (None: nothing to warn of)."""
    if api_key is not None or host in LOOPBACK_HOSTS:
        return None
    return (
        f"warning: --host {host} without an API key: anyone who can reach this address can use the model "
        f"(set ${API_KEY_ENV}, which `ps` does not show, or --api-key)"
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until interrupted."""
    from ..inference.loading import load_for_inference, resolve_folders

    if args.allow_local_images and not Path(args.allow_local_images).is_dir():
        raise ConfigurationError(f"--allow-local-images {args.allow_local_images}: not a folder")
    model_dir, adapter_dir = resolve_folders(
        args.model, args.adapter
    )  # a bad folder fails before the imports
    request_log = open_request_log(args.log_requests)  # so does a log file that cannot be written
    from ..serve.app import create_app
    from ..serve.server import make_server

    name = args.name or (adapter_dir or model_dir).resolve().name
    model, tokenizer = load_for_inference(args.model, args.adapter, args.dtype, args.device)
    state = build_state(model, tokenizer, args, name, request_log)
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    warning = exposure_warning(args.host, state.api_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"serving {name!r}: API {url}/v1 (OpenAI-compatible), chat page {url}/ - Ctrl-C stops", flush=True)
    try:
        # SIGTERM / Ctrl-C: stop accepting, let answers finish within --shutdown-timeout, end the rest, exit 0
        # (serve.server; a second Ctrl-C stops at once).
        make_server(create_app(state), state, host=args.host, port=args.port).run()
    finally:
        state.batcher.close()
        if request_log is not None:
            request_log.close()
    return 0
