"""Using a (fine-tuned) Qwen-VL model: chat, boxes, drawing, evaluation.

- :mod:`.generation` runs left-padded batched generation and cuts the answer at the ChatML stop tokens.
- :mod:`.chat` is ``model.chat`` / ``model.chat_stream`` (the model's methods import it when called).
- :mod:`.draw` draws the boxes of an answer (read by :mod:`qwenvl_train.format.markup`'s lenient mode) on the latest
  picture (``tokenizer.draw_bbox_on_latest_picture``).
- :mod:`.metrics` scores answers: box IoU (Acc@0.5, mean IoU) and exact match.
- :mod:`.evaluate` evaluates a conversations file; :mod:`.loading` loads a model (and adapter) to use.

The ``chat`` and ``eval`` sub-commands are :mod:`qwenvl_train.commands.chat` and :mod:`qwenvl_train.commands.eval`.

The prompt (``make_context``) and the reading of boxes in what a model writes are the Qwen-VL format's:
:mod:`qwenvl_train.format.render` and :mod:`qwenvl_train.format.markup`. Nothing heavy is imported here, so the command modules stay cheap to import.
"""
