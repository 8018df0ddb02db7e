"""The DATA encoder: message bytes in, SMTP DATA payload out.

Twisted's client encoder has three defects we must not inherit (DESIGN.md,
"Known traps"): it misses a "." line that starts exactly at a 16 KiB chunk
boundary and on the first line, and it turns CRLF into CR CR LF. Worse, a
naive encoder lets bare CR or bare LF through, which is how SMTP smuggling
(CVE-2023-51764 and relatives: ``\\n.\\n``, ``\\r.\\r``, ``\\r\\n.\\n``) gets a
second message past the receiver's end-of-data detection.

:class:`DataEncoder` is stateful across chunks, so the caller may split the
body anywhere (even between CR and LF) and the output is the same as for one
big chunk. It guarantees:

- every line ending on the wire is CRLF (bare CR, bare LF and CRLF in the
  input all become CRLF), so no bare CR or LF is ever emitted;
- every line that begins with "." gets one more "." (RFC 5321 4.5.2),
  including the first line and lines that start at a chunk boundary;
- no line is longer than 998 octets, not counting the transparency dot
  (RFC 5321 4.5.3.1.6). Longer lines are hard-wrapped: this changes the
  message (and breaks a DKIM body hash), so it is a last resort against a
  receiver that would otherwise truncate or refuse;
- :meth:`DataEncoder.finish` adds the terminating ``.\\r\\n``, preceded by a
  CRLF when the body did not end with one, so the only ``\\r\\n.\\r\\n`` in
  the output is the final one.
"""

from __future__ import annotations

from typing import Final

#: RFC 5321 4.5.3.1.6: 1000 octets including CRLF.
MAX_LINE: Final = 998


class DataEncoder:
    """Stateful SMTP DATA encoder (line-ending normalisation, dot-stuffing,
    line folding).

    Args:
        max_line: longest line emitted, in octets, not counting CRLF nor the
            transparency dot. Tests lower it to exercise folding.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._max_line = max_line
        #: Octets already emitted on the current output line (unstuffed).
        #: Zero means "at the start of a line".
        self._line_len = 0
        #: The previous chunk ended with CR, already emitted as CRLF: a LF
        #: at the start of the next chunk belongs to that line ending.
        self._skip_lf = False
        self._finished = False
        #: Lines hard-wrapped so far (for logging by the caller).
        self.folded = 0

    def feed(self, chunk: bytes) -> bytes:
        """Encode the next piece of the message.

        Args:
            chunk: any number of octets; it may end in the middle of a line
                or between CR and LF.

        Returns:
            the encoded octets to send (possibly empty).

        Raises:
            RuntimeError: when called after :meth:`finish`.
        """
        if self._finished:
            raise RuntimeError("DataEncoder.feed() after finish()")
        if not chunk:
            return b""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return b""
        if chunk[-1:] == b"\r":
            # Emitted as CRLF below; swallow the LF if the next chunk has it.
            self._skip_lf = True
        # One LF per line ending, then split: C-speed for the common case.
        text = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = text.split(b"\n")
        # lines[0] continues the current line; lines[1:] start new lines; the
        # last element is the unterminated tail (b"" when text ends in LF).
        limit = self._max_line
        first = lines[0]
        if self._line_len + len(first) <= limit and max(map(len, lines)) <= limit:
            # Fast path, no folding needed anywhere in this chunk.
            body = b"\r\n".join(lines)
            if len(lines) > 1:
                body = body.replace(b"\r\n.", b"\r\n..")
            if self._line_len == 0 and first[:1] == b".":
                body = b"." + body
            self._line_len = len(lines[-1]) if len(lines) > 1 else self._line_len + len(first)
            return body
        return self._feed_slow(lines)

    def _feed_slow(self, lines: list[bytes]) -> bytes:
        """Encode already split lines when at least one needs folding.

        Args:
            lines: as in :meth:`feed`: the first continues the current line,
                the last is unterminated.

        Returns:
            the encoded octets.
        """
        out: list[bytes] = []
        for index, line in enumerate(lines):
            if index > 0:
                out.append(b"\r\n")
                self._line_len = 0
            while line:
                room = self._max_line - self._line_len
                if room <= 0:
                    # Hard wrap: the rest continues on a fresh line.
                    out.append(b"\r\n")
                    self._line_len = 0
                    self.folded += 1
                    room = self._max_line
                piece, line = line[:room], line[room:]
                if self._line_len == 0 and piece[:1] == b".":
                    # Also stuffs a "." that a fold moved to a line start.
                    out.append(b".")
                out.append(piece)
                self._line_len += len(piece)
        return b"".join(out)

    def finish(self) -> bytes:
        """End the message.

        Returns:
            ``.\\r\\n``, preceded by CRLF when the body's last line was
            unterminated.

        Raises:
            RuntimeError: when called twice.
        """
        if self._finished:
            raise RuntimeError("DataEncoder.finish() called twice")
        self._finished = True
        if self._line_len:
            self._line_len = 0
            return b"\r\n.\r\n"
        return b".\r\n"


def encode_data(body: bytes, max_line: int = MAX_LINE) -> bytes:
    """Encode a whole message at once (for small bodies and tests).

    Args:
        body: the message.
        max_line: as for :class:`DataEncoder`.

    Returns:
        the DATA payload, including the terminating ``.\\r\\n``.
    """
    encoder = DataEncoder(max_line)
    return encoder.feed(body) + encoder.finish()
