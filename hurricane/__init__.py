"""Hurricane: a mail server that knows what happened to every message."""

__version__ = "0.1.0"

__all__ = ["__version__"]
