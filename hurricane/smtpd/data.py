"""The DATA phase as a plain state machine: bytes in, one message (or a refusal) out.

Rules (DESIGN.md, SMTP smuggling, CVE-2023-51764 family):

- Lines end with CRLF only. End of data is the line ``.`` between two CRLFs
  (the first may be the one ending the DATA command). ``\\n.\\n``,
  ``\\r.\\r``, ``\\r\\n.\\n`` and friends never end the message.
- A bare CR or LF inside a line is either refused (550 5.6.2 after the dot;
  what Postfix and the large providers do now, and what the submission
  listener does) or turned into CRLF (the bounce receiver: it never relays,
  and a returned message from an old MTA is still worth keeping).
- A line longer than ``max_line_length`` fails the message but does not end
  DATA: input is discarded up to the end of data, so nothing in the body is
  ever read as a command (stock Twisted drops back into command mode).
- Past ``max_size`` the collected bytes are dropped and the rest discarded,
  so memory stays bounded by the limit.
"""

from __future__ import annotations

from hurricane.smtpd.reply import Reply

CRLF = b"\r\n"


class DataReader:
    """Collects one message from the bytes after a 354 reply.

    Attributes:
        _fast: take whole chunks of plain lines at once (tests turn it off to
            compare with the line-by-line path, which defines the behaviour).

    Args:
        max_size: most octets of message content accepted.
        max_line_length: most octets in one line, CRLF excluded.
        reject_bare_line_endings: refuse (True) or normalise (False) bare CR/LF.
    """

    def __init__(self, max_size: int, max_line_length: int,
                 reject_bare_line_endings: bool = True) -> None:
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.reject_bare = reject_bare_line_endings
        #: Why the message is refused, once it is; the body is then discarded.
        self.failure: Reply | None = None
        #: True once the terminating dot has been seen.
        self.finished = False
        self._body = bytearray()
        self._partial = b""
        # True while skipping the tail of an over-long line: its next CRLF
        # ends that line, and what follows is a fresh line start.
        self._skipping = False

    _fast = True

    def feed(self, data: bytes) -> bytes | None:
        """Take the next bytes from the client.

        Returns:
            None while the message goes on; at end of data, the bytes that
            followed the terminating CRLF.CRLF (pipelined commands).
        """
        buf = self._partial + data if self._partial else data
        lines = buf.split(CRLF)
        rest = lines.pop()
        if self._fast and lines and self.failure is None and not self._skipping:
            # The common case, with no Python loop over lines: the whole
            # lines before the first one starting with a dot (the end of data
            # or a line to unstuff, left to the loop below), when they hold no
            # bare CR or LF (as many of each as CRLFs), none is too long and
            # they fit. Appended as they are, which is what the loop does.
            complete = buf[:len(buf) - len(rest)]
            if complete.startswith(b"."):
                cut = 0
            else:
                dot = complete.find(b"\n.")
                cut = len(complete) if dot < 0 else dot + 1
            head = complete[:cut]
            n = head.count(CRLF)
            if (n and head.count(b"\r") == n == head.count(b"\n")
                    and max(map(len, lines[:n])) <= self.max_line_length
                    and len(self._body) + len(head) <= self.max_size):
                self._body += head
                del lines[:n]
        for index, line in enumerate(lines):
            if self._skipping:
                self._skipping = False
                continue
            if line[:1] == b".":
                if len(line) == 1:
                    self.finished = True
                    self._partial = b""
                    return CRLF.join([*lines[index + 1 :], rest])
                line = line[1:]  # RFC 5321 4.5.2 transparency
            if len(line) > self.max_line_length:
                self._fail(Reply(554, "5.3.4", "Error: message line too long "
                                               f"(limit {self.max_line_length} octets)"))
                continue
            self._add(line)
        if len(rest) > self.max_line_length:
            self._fail(Reply(554, "5.3.4", "Error: message line too long "
                                           f"(limit {self.max_line_length} octets)"))
            # Keep a trailing CR: with an LF in the next read it is the CRLF
            # that ends this long line.
            self._skipping = True
            rest = b"\r" if rest.endswith(b"\r") else b""
        self._partial = rest
        return None

    def _fail(self, reply: Reply) -> None:
        if self.failure is None:
            self.failure = reply
        self._body = bytearray()

    def _add(self, line: bytes) -> None:
        if self.failure is not None:
            return
        if line.find(b"\r") >= 0 or line.find(b"\n") >= 0:  # not "in": see parse_command
            if self.reject_bare:
                self._fail(Reply(550, "5.6.2", "Error: bare CR or LF in message; "
                                               "lines must end with CRLF"))
                return
            line = line.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", CRLF)
        self._body += line
        self._body += CRLF
        if len(self._body) > self.max_size:
            self._fail(Reply(552, "5.3.4", "Error: message exceeds fixed size limit "
                                           f"of {self.max_size} octets"))

    def message(self) -> bytes:
        """The collected message (CRLF line endings, dots unstuffed)."""
        return bytes(self._body)
