"""SMTP replies as values, and the one parser of enhanced status codes.

One :class:`Reply` serves both directions: the replies our servers send
(``hurricane.smtpd``, the submission and bounce listeners, the sink) and the
replies our client reads (``hurricane.outbound``). A reply is a code, an
RFC 3463 enhanced status code or None where there is none (the greeting,
an EHLO answer, a 3xx, or a server that sends none), and the text after
them; :meth:`Reply.render` gives what goes on the wire after the code and
:meth:`Reply.parse` reads that back.

Enhanced status codes are also found inside texts (a DSN's Diagnostic-Code,
a free-text bounce, a reply that puts its status later): the patterns for
that are here too, so that every part of Hurricane reads ``5.1.1`` the same
way (:func:`leading_status`, :func:`find_statuses`, :func:`is_status`).

This module imports nothing from Hurricane.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Reply",
    "ReplyError",
    "STATUS",
    "find_statuses",
    "is_status",
    "leading_status",
    "reply_code",
]

#: An enhanced status code (RFC 3463 2): class 2, 4 or 5, subject and detail
#: of one to three digits. Groups: class, subject, detail.
STATUS = r"([245])\.(\d{1,3})\.(\d{1,3})"

_STATUS_FULL = re.compile(STATUS + r"\Z")
# At the start of a reply text: followed by white space, punctuation or the end.
_STATUS_LEADING = re.compile(STATUS + r"(?=[\s;,.:]|\Z)")
# Anywhere in a text, not part of a longer dotted number ("1.5.1.1",
# "5.1.10.2"); written to start with the [245] class, the look-behind just
# after it, so that a search skips ahead to the digits fast. Linear in the
# text (no nested quantifiers).
_STATUS_SEARCH = re.compile(r"([245])(?<![\d.].)\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")

#: Punctuation that may follow a status on the wire with no space in between.
_PUNCTUATION = frozenset(";,.:")


def _joins_directly(text: str) -> bool:
    """True when ``text`` follows a status with nothing inserted: it is empty or
    starts with white space or punctuation. Such a text is kept as it came, so
    that render() gives back exactly what parse() read."""
    return not text or text[0].isspace() or text[0] in _PUNCTUATION


def is_status(value: str | None) -> bool:
    """True when ``value`` is exactly one enhanced status code (``"5.1.1"``)."""
    return value is not None and _STATUS_FULL.match(value) is not None


def leading_status(code: int, text: str) -> str | None:
    """The enhanced status code at the start of a reply's text.

    Args:
        code: the three-digit reply code.
        text: the reply text after the code (first line first).

    Returns:
        ``"5.1.1"`` style status, or None when the text does not start with
        one whose class matches the reply code's (a "5.x.x" on a 250 is
        noise, not a status).
    """
    match = _STATUS_LEADING.match(text.lstrip())
    if match is None or match.group(1) != str(code)[:1]:
        return None
    return match.group(0)


def find_statuses(text: str) -> Iterator[re.Match[str]]:
    """Every enhanced status code in a text, in order (not inside a longer dotted number).

    Args:
        text: any text (a diagnostic, a free-text report).

    Returns:
        The matches; groups are class, subject and detail.
    """
    return _STATUS_SEARCH.finditer(text)


def reply_code(value: int | str | None) -> int | None:
    """A reply code as an int: three digits 200-599, else None.

    Args:
        value: a code as a report gives it ("550"), an int, or None.

    Returns:
        The code, or None when it is not a reply code.
    """
    if isinstance(value, int):
        return value if 200 <= value <= 599 else None
    if value and len(value) == 3 and value.isdigit() and value[0] in "2345":
        return int(value)
    return None


@dataclass(frozen=True)
class Reply:
    """One SMTP reply.

    Args:
        code: the three-digit reply code.
        status: the enhanced status code ("2.1.0"), or None where there is
            none ("" is taken as None).
        text: the text after the code and the status; lines joined with
            "\\n" (a reply we send is one line: ASCII, no CR or LF).
    """

    code: int
    status: str | None
    text: str

    def __post_init__(self) -> None:
        if self.status == "":
            object.__setattr__(self, "status", None)

    @classmethod
    def parse(cls, code: int, text: str) -> Reply:
        """A reply read from the wire: the status split off the text.

        The text keeps what :meth:`render` needs to give back exactly what
        was read (only white space before a status is lost).

        Args:
            code: the reply code.
            text: everything after the code and its separator, lines joined
                with "\\n".

        Returns:
            The reply; its status is :func:`leading_status`.
        """
        status = leading_status(code, text)
        if status is None:
            return cls(code, None, text)
        rest = text.lstrip()[len(status):]
        if rest[:1] == " " and not _joins_directly(rest[1:]):
            rest = rest[1:]  # the one space render() puts back
        return cls(code, status, rest)

    @property
    def positive(self) -> bool:
        """True for a 2xx (or 3xx intermediate) reply."""
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        """5xx."""
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        """4xx."""
        return 400 <= self.code < 500

    def render(self) -> str:
        """The reply text after the code: ``"2.1.0 Ok"``."""
        if not self.status:
            return self.text
        if _joins_directly(self.text):
            return self.status + self.text
        return f"{self.status} {self.text}"

    def __str__(self) -> str:
        return f"{self.code} {self.render()}"


class ReplyError(Exception):
    """Raised by plain policy or syntax code to answer a command with ``reply``.

    Args:
        reply: what to send to the client.
    """

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply
