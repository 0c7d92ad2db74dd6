"""``python -m qwenvl_train`` runs the CLI."""

from .cli import main

raise SystemExit(main())
