"""The ``qwenvl-train`` sub-commands, one module each: its parser (``add_parser(subparsers)``, which sets
``func=run``) and its ``run(args) -> int``.

:mod:`qwenvl_train.cli` lists these modules once (``COMMANDS``) and is the one error wrapper: a ``run`` raises a
:class:`~qwenvl_train.errors.UserError` and never prints or catches it itself. The library below (``data/``,
``inference/``, ``export/``, ``serve/``, ``demo/``, ``reports/``, ``training/``) builds no parser. A command module
imports only the standard library and cheap modules at module level and its heavy ones inside ``run``, so that
``--help`` answers at once and one command does not pay for another's imports. Options several commands share:
:mod:`.model_options`.
"""
