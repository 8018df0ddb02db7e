"""SMTP replies as values: the replies our servers send.

Every reply Hurricane produces carries an RFC 3463 enhanced status code,
except those RFC 2034 exempts (the greeting, the HELO/EHLO answer, 3xx
intermediate replies), whose status is None.

:class:`Reply` and :class:`ReplyError` are :mod:`hurricane.smtp_reply`'s, the
one reply type our client uses too; they are importable from here as they
always were.
"""

from __future__ import annotations

from hurricane.smtp_reply import Reply, ReplyError

__all__ = ["OK", "TRY_LATER", "Reply", "ReplyError"]

#: Store or other local trouble: the client should try again later (never 5xx).
TRY_LATER = Reply(451, "4.3.0", "Error: local error in processing, try again later")
OK = Reply(250, "2.0.0", "Ok")
