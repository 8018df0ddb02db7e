"""Log observers for ``twistd --logger`` (production runs under systemd).

``twistd -n --logger=hurricane.admin.logs.json_stdout hurricane ...`` writes
the application log as one JSON object per line on standard output, which
systemd hands to the journal (``journalctl -u hurricane -o cat | jq``).
``text_stdout`` is the plain-text equivalent, each line starting with an
ISO 8601 UTC time stamp. JSON events keep their format fields
(``recipient``, ``code``...), so every line stays queryable, and carry the
rendered message in ``log_text`` (:func:`hurricane.textlog.json_observer`):
``jq -r .log_text`` prints what the text log would.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
)

from hurricane.textlog import json_observer, utc_text_observer

__all__ = ["json_stdout", "text_stdout"]


def _at_info(observer: ILogObserver) -> ILogObserver:
    """Drop debug events (webhook per-batch lines and the like)."""
    return FilteringLogObserver(observer, [LogLevelFilterPredicate(LogLevel.info)])


def json_stdout() -> ILogObserver:
    """JSON lines on stdout: no record separator, one event per line."""
    return _at_info(json_observer(sys.stdout))


def text_stdout() -> ILogObserver:
    """Plain text on stdout, each line with its ISO 8601 UTC time stamp.

    The journal stamps lines too, but ``journalctl -o cat``, a file the
    output is redirected to, or a container log show only what is written.
    """
    return _at_info(utc_text_observer(sys.stdout))
