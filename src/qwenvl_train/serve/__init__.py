"""``qwenvl-train serve``: an OpenAI-compatible HTTP API and a chat page for a (fine-tuned) Qwen-VL chat model.

One concern per module:

- :mod:`.schema` reads and checks a Chat Completions request (:class:`~.schema.APIError` for every bad input);
- :mod:`.prompt` turns the checked messages into the prompt ids exactly as training renders them
  (through :mod:`qwenvl_train.format`);
- :mod:`.fetch` fetches and decodes the images of a request (data URLs, http(s) with the SSRF rules, local
  files under one folder) with the training loader's limits;
- :mod:`.sampling` picks the next token of one row (greedy, temperature, top-p, seed);
- :mod:`.batcher` is the batcher: a worker thread generating queued requests together in left-padded
  batches, each row streamed to its own client;
- :mod:`.answer_boxes` reads the boxes of an answer into the ``boxes`` extension field;
- :mod:`.stream` writes server-sent events;
- :mod:`.request_log` appends each completed request, in OpenAI's chat format, to ``--log-requests``;
- :mod:`.vision_cache` keeps the vision tower's output per picture (a chat re-sends its pictures every turn);
- :mod:`.limits` holds the request limits, :mod:`.hosts` the ``Host`` / ``Origin`` rules and the page's headers,
  :mod:`.metrics` the ``/metrics`` counters;
- :mod:`.app` is the FastAPI application (routes, authentication, admission, error bodies); ``static/`` holds
  the chat page;
- :mod:`.http_guard` is uvicorn's h11 protocol with the head deadline, the head limits and the framing check, and
  :mod:`.server` the uvicorn server with the graceful shutdown.

The ``serve`` sub-command (its options, loading the model, :func:`build_state`) is
:mod:`qwenvl_train.commands.serve`.

Nothing here is imported by ``import qwenvl_train``: FastAPI, torch and the model load only when ``serve`` runs.
"""
