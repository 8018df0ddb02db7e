"""The fingerprint of a returned message: equal for two copies of the same message.

Apart from :mod:`hurricane.inbound.processor` (which re-exports it) so that an
analysis worker process can compute it without importing Twisted.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["message_fingerprint"]

#: Header fields added on the way to us (ours included). They differ between
#: two copies of the same returned message, so they are left out of its
#: fingerprint.
_TRACE_FIELDS = frozenset(
    {b"received", b"return-path", b"delivered-to", b"x-original-to", b"x-envelope-to"}
)
_FIELD_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def message_fingerprint(raw: bytes) -> bytes:
    """SHA-256 of a returned message, normalised so that copies compare equal.

    Line endings become LF, trailing white space and blank lines at the end
    are dropped, and the top-level trace fields (Received, Return-Path,
    Delivered-To, ...) are left out: a remote that retries sends the same
    message, but our listener's Received line differs each time.

    Args:
        raw: the message as received.

    Returns:
        The 32-byte digest.
    """
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = text, b""
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line.rstrip())
            continue
        m = _FIELD_RE.match(line)
        skipping = bool(m) and m.group(1).lower() in _TRACE_FIELDS  # type: ignore[union-attr]
        if not skipping:
            kept.append(line.rstrip())
    lines = kept + [b""] + [line.rstrip() for line in body.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return hashlib.sha256(b"\n".join(lines)).digest()
