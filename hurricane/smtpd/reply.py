"""SMTP replies as values.

Every reply Hurricane produces carries an RFC 3463 enhanced status code,
except those RFC 2034 exempts (the greeting, the HELO/EHLO answer, 3xx
intermediate replies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One SMTP reply.

    Args:
        code: the three-digit reply code.
        status: the enhanced status code ("2.1.0"), or "" where none applies.
        text: human-readable text; ASCII, no CR or LF (one line).
    """

    code: int
    status: str
    text: str

    @property
    def positive(self) -> bool:
        """True for a 2xx (or 3xx intermediate) reply."""
        return self.code < 400

    def render(self) -> str:
        """The reply text after the code: ``"2.1.0 Ok"``."""
        return f"{self.status} {self.text}" if self.status else self.text

    def __str__(self) -> str:
        return f"{self.code} {self.render()}"


class ReplyError(Exception):
    """Raised by plain policy code to answer a command with ``reply``.

    Args:
        reply: what to send to the client.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


#: Store or other local trouble: the client should try again later (never 5xx).
TRY_LATER = Reply(451, "4.3.0", "Error: local error in processing, try again later")
OK = Reply(250, "2.0.0", "Ok")
