"""The admin console: an SSH manhole into the live process (off by default)."""

__all__ = ["logs", "manhole"]
