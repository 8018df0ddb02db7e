"""Client input for the ESMTP server: bounded framing and command parsing.

No protocol and no I/O here: :class:`LineBuffer` holds what the client sent
and hands it out one CRLF-terminated line at a time (or all of it, for DATA),
with the DESIGN.md bounds on line length and unterminated input;
:func:`parse_command` turns a line into a verb the server knows and its
argument, or the reply that refuses it; :func:`parse_mail` and
:func:`parse_rcpt` check the arguments of MAIL and RCPT.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from hurricane.smtpd.address import Path, parse_params, parse_path
from hurricane.smtpd.reply import Reply, ReplyError

__all__ = ["VERBS", "Command", "Framing", "LineBuffer", "check_mail_params", "parse_command",
           "parse_mail", "parse_rcpt"]

#: The commands this server understands; each has a ``do_<VERB>`` handler.
VERBS = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY",
                   "EXPN", "HELP", "STARTTLS", "AUTH"})


class Framing(enum.Enum):
    """What :meth:`LineBuffer.next_line` found instead of a line."""

    #: No complete line yet: wait for more input.
    INCOMPLETE = "incomplete"
    #: A complete line over the limit (consumed): refuse it, go on.
    TOO_LONG = "too long"
    #: Too much input with no line ending (discarded): refuse and hang up.
    UNTERMINATED = "unterminated"


class LineBuffer:
    """Client input not consumed yet.

    Args:
        max_line_length: the longest line (CRLF excluded) handed out.
        max_unterminated: the most input kept while no CRLF has arrived.
    """

    def __init__(self, max_line_length: int, max_unterminated: int) -> None:
        self.max_line_length = max_line_length
        self.max_unterminated = max_unterminated
        self._data = b""
        # Lines are handed out by moving this offset, not by copying the
        # rest of a pipelined read once per line.
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def feed(self, data: bytes) -> None:
        """Add bytes the client sent."""
        if self._start:
            self._data = self._data[self._start :] + data
            self._start = 0
        elif self._data:
            self._data += data
        else:
            self._data = data

    def next_line(self) -> bytes | Framing:
        """Take the next line, without its CRLF.

        Returns:
            The line, or why there is none: :attr:`Framing.INCOMPLETE`,
            :attr:`Framing.TOO_LONG` (that line is dropped) or
            :attr:`Framing.UNTERMINATED` (everything is dropped).
        """
        end = self._data.find(b"\r\n", self._start)
        if end < 0:
            if len(self._data) - self._start > self.max_unterminated:
                self.clear()
                return Framing.UNTERMINATED
            return Framing.INCOMPLETE
        line = self._data[self._start : end]
        self._start = end + 2
        if self._start == len(self._data):
            self._data = b""
            self._start = 0
        if len(line) > self.max_line_length:
            return Framing.TOO_LONG
        return line

    def take(self) -> bytes:
        """Take everything buffered (message content goes to the DATA reader whole)."""
        data = self._data[self._start :] if self._start else self._data
        self._data = b""
        self._start = 0
        return data

    def clear(self) -> None:
        """Forget everything buffered (after STARTTLS: it came in clear text)."""
        self._data = b""
        self._start = 0


#: One command line, parsed: the verb (one of :data:`VERBS`, upper case) and
#: its argument (the rest of the line, without surrounding blanks). A plain
#: tuple: one is built for every command line.
Command = tuple[str, str]


def parse_command(line: bytes) -> Command | Reply:
    """The command on ``line`` as (verb, argument), or the reply that refuses it.

    A bare CR or LF could smuggle a second command (or a header line into
    Received): refused, as are non-ASCII lines and unknown verbs.
    """
    # find, not "in": on Python 3.11 ``bytes in bytes`` first tries the
    # operand as an integer and raises and clears a TypeError each time.
    if line.find(b"\r") >= 0 or line.find(b"\n") >= 0:
        return Reply(500, "5.5.2", "Error: bare CR or LF in command")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return Reply(500, "5.5.2", "Error: non-ASCII command")
    verb, _, rest = text.strip(" \t").partition(" ")
    verb = verb.upper()
    if verb not in VERBS:
        return Reply(500, "5.5.2", "Error: command not recognized")
    return verb, rest.strip(" \t")


def check_mail_params(params: Mapping[str, str | None], max_size: int,
                      extra: frozenset[str]) -> None:
    """Check the MAIL parameters: SIZE and BODY, plus the names in ``extra``.

    Raises:
        ReplyError: for a malformed, unknown or too large declaration.
    """
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise ReplyError(Reply(501, "5.5.4", "Error: bad SIZE parameter"))
            if int(value) > max_size:
                raise ReplyError(Reply(552, "5.3.4", "Error: message size exceeds fixed "
                                       f"limit of {max_size} octets"))
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise ReplyError(Reply(501, "5.5.4", "Error: bad BODY parameter"))
        elif key not in extra:
            raise ReplyError(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))


def parse_mail(argument: str, max_size: int,
               extra: frozenset[str]) -> tuple[Path, dict[str, str | None]]:
    """The reverse-path and parameters of ``MAIL FROM:<path> [params]``.

    Args:
        argument: what followed ``MAIL``.
        max_size: the advertised SIZE limit.
        extra: parameter names accepted besides SIZE and BODY.

    Raises:
        ReplyError: the refusal to send.
    """
    if argument[:5].upper() != "FROM:":
        raise ReplyError(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
    path, ptext = parse_path(argument[5:], "sender")
    params = parse_params(ptext)
    check_mail_params(params, max_size, extra)
    if path.domain is None and not path.is_null:
        raise ReplyError(Reply(553, "5.1.7", "Error: sender address must be fully qualified"))
    return path, params


def parse_rcpt(argument: str) -> tuple[Path, dict[str, str | None]]:
    """The forward-path and parameters of ``RCPT TO:<path>`` (no parameter is known).

    Raises:
        ReplyError: the refusal to send.
    """
    if argument[:3].upper() != "TO:":
        raise ReplyError(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
    path, ptext = parse_path(argument[3:], "recipient")
    params = parse_params(ptext)
    for key in params:
        raise ReplyError(Reply(555, "5.5.4", f"Error: unsupported parameter {key}"))
    return path, params
