"""The source formats ``qwenvl-train convert --from`` reads, and the module reading each (standard library only:
the command line reads the names to build its parser).

Adding a format: a module beside this one with ``items(source, job)`` and ``convert(item, job)``, and one line
in :data:`FORMATS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The source formats and the module reading each.
FORMATS = {
    "llava": ".llava",
    "sharegpt": ".sharegpt",
    "swift": ".swift",
    "coco": ".coco",
    "refcoco": ".refcoco",
    "parquet": ".parquet",
    "openai": ".openai",
}


def format_module(name: str) -> ModuleType:
    """The module reading the source format ``name`` (a key of :data:`FORMATS`)."""
    return importlib.import_module(FORMATS[name], __package__)
