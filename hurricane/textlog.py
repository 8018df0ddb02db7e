"""twistd's text log, the same lines for less CPU.

twistd writes every event through ``formatEventAsClassicLogText``: an
RFC 3339 time stamp made with ``strftime`` and the message rendered by a
pure-Python ``string.Formatter``, about 20 us an event here. A mail server
writes a line for every message queued, delivered or returned, so that is
several percent of the reactor's time at volume. :func:`format_event` gives
byte-for-byte the same line: the time stamp is made once per second and a
plain format string goes through ``str.format_map`` (in C); anything else
(call syntax, a missing key, a failure, flattened events) takes Twisted's
own path.

:func:`twistd_observer` picks the same destination twistd would (standard
output with ``-n``, else ``--logfile``, rotated on SIGUSR1 as twistd does)
and leaves ``--syslog`` and ``--logger`` to twistd. twistd uses an
``ILogObserver`` component of the application instead of its own observer
(``twisted.application.app.AppLogger.start``);
:class:`hurricane.service.HurricaneService` sets it.
"""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from typing import Any

from twisted.application import app
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    formatEventAsClassicLogText,
    timeFormatRFC3339,
)
from twisted.python.logfile import LogFile

__all__ = ["format_event", "twistd_observer"]

#: (second, its stamp): one tuple, so a thread logging meanwhile sees a pair.
_stamp_cache: tuple[int, str] = (-1, "")


def _stamp(when: float) -> str:
    """``formatTime(when)``: RFC 3339 in local time, made once per second."""
    global _stamp_cache
    second = int(when)
    # datetime rounds to the microsecond: the last half microsecond of a
    # second (and any time before 1970) is not cached.
    if second == _stamp_cache[0] and when - second < 0.9999995:
        return _stamp_cache[1]
    # astimezone() gives the local offset of that instant, as
    # FixedOffsetTimeZone.fromLocalTimeStamp does.
    text = datetime.fromtimestamp(when).astimezone().strftime(timeFormatRFC3339)
    if when >= 0 and when - second < 0.9999995:
        _stamp_cache = (second, text)
    return text


def _system(event: dict[str, Any]) -> str:
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    return str(system)


def format_event(event: dict[str, Any]) -> str | None:
    """The line ``formatEventAsClassicLogText(event)`` gives, or None for an empty event."""
    fmt = event.get("log_format")
    when = event.get("log_time")
    if (type(fmt) is not str or "log_failure" in event or "log_flattened" in event
            or type(when) is not float or type(event.get("log_system", "")) is not str
            or "__" in fmt):
        # Twisted wraps each field for its call syntax, so a dunder attribute
        # ("{e.__class__}") names the wrapper: only its own path says the same.
        return formatEventAsClassicLogText(event)
    try:
        text = fmt.format_map(event)
    except BaseException:
        # "{f()}" call syntax, a missing key, a failing __format__: Twisted's
        # formatter says what it can (it catches BaseException too).
        return formatEventAsClassicLogText(event)
    if not text:
        return None
    line = f"{_stamp(when)} [{_system(event)}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def twistd_observer(twistd_options: Any) -> ILogObserver | None:
    """A text observer writing where twistd's own would, or None to leave twistd's.

    Args:
        twistd_options: twistd's ``ServerOptions`` (the plugin options'
            ``parent``); None outside twistd.
    """
    # twistd's options only: `twist` names its options differently and logs
    # by itself.
    if not isinstance(twistd_options, app.ServerOptions) or sys.platform == "win32":
        return None
    try:
        if twistd_options.get("logger") or twistd_options.get("syslog"):
            return None
        name = twistd_options.get("logfile")
        nodaemon = twistd_options.get("nodaemon")
    except (AttributeError, TypeError):
        return None
    out: Any
    if name == "-" or (nodaemon and not name):
        if not nodaemon:
            return None  # twistd refuses: "Daemons cannot log to stdout"
        out = sys.stdout
    else:
        out = LogFile.fromFullPath(name or "twistd.log")
        if not signal.getsignal(signal.SIGUSR1):
            def rotate(signum: int, frame: Any) -> None:
                from twisted.internet import reactor

                reactor.callFromThread(out.rotate)  # type: ignore[attr-defined]

            signal.signal(signal.SIGUSR1, rotate)
    return FileLogObserver(out, format_event)
