"""The RFC 5322 date-time of the headers we write (``Date:``, ``Received:``).

One function so that every header we write says the time the same way:
always UTC, numeric zone ``+0000``, English day and month names whatever
the process's locale (``time.strftime``'s ``%a`` and ``%b`` follow
``LC_TIME``; RFC 5322 3.3 wants the English abbreviations).
"""

from __future__ import annotations

import datetime
import email.utils

__all__ = ["rfc5322_date"]


def rfc5322_date(timestamp: float) -> str:
    """The RFC 5322 ``date-time`` of a Unix time, in UTC, whole seconds.

    Args:
        timestamp: seconds since the epoch.

    Returns:
        e.g. ``"Thu, 01 Jan 2026 00:00:00 +0000"``.
    """
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.UTC)
    return email.utils.format_datetime(moment)
