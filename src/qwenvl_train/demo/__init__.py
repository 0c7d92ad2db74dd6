"""The embedded demo: a generated grounding dataset (``data``) and the driver of ``make demo`` (``run``)."""
