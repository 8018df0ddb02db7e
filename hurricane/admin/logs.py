"""Log observers for ``twistd --logger`` (production runs under systemd).

``twistd -n --logger=hurricane.admin.logs.json_stdout hurricane ...`` writes
the application log as one JSON object per line on standard output, which
systemd hands to the journal (``journalctl -u hurricane -o cat | jq``).
``text_stdout`` is the plain-text equivalent. Events keep their format
fields (``{recipient}``, ``{code}``...), so every line stays queryable.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

__all__ = ["json_stdout", "text_stdout"]


def _at_info(observer: ILogObserver) -> ILogObserver:
    """Drop debug events (webhook per-batch lines and the like)."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(LogLevel.info)])


def json_stdout() -> ILogObserver:
    """JSON lines on stdout: no record separator, one event per line."""
    return _at_info(jsonFileLogObserver(sys.stdout, recordSeparator=""))


def text_stdout() -> ILogObserver:
    """Plain text on stdout (systemd adds its own timestamps)."""
    return _at_info(textFileLogObserver(sys.stdout, timeFormat=None))
