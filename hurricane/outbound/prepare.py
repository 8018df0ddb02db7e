"""The bytes that go on the wire for one transaction.

The stored message is final as submitted (submission added Message-ID and
Date and removed the identifier headers). Delivery only:

- normalises line endings to CRLF, so that the DKIM signature is computed over
  exactly what the client's DATA encoder will send;
- removes any ``X-Hurricane-Token`` header the application put in (a forged
  token would mislead bounce matching);
- adds our own ``X-Hurricane-Token: <VERP address>`` header, the same token
  as the envelope sender, so that a bounce sent to the wrong address can still
  be matched from the returned headers.

From and every other header are left alone. The token header is not in the
DKIM header list, so the message is signed once and the per-recipient token
header is prepended after signing (:func:`normalise_message`, then
:class:`~hurricane.outbound.dkim.DkimSigner`, then :func:`prepare_message`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hurricane.address import to_a_label

__all__ = [
    "TOKEN_HEADER",
    "PreparedMessage",
    "normalise_message",
    "add_token_header",
    "prepare_message",
    "remove_fields",
    "split_headers",
    "header_value",
    "wire_address",
]

#: The header carrying the VERP token.
TOKEN_HEADER = b"X-Hurricane-Token"

_EOL = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class PreparedMessage:
    """A message ready for one transaction.

    Attributes:
        body: the final bytes, CRLF line endings.
        eight_bit: the body has octets above 127 (send BODY=8BITMIME).
        smtputf8: an address or a header needs SMTPUTF8 (RFC 6531/6532).
    """

    body: bytes
    eight_bit: bool
    smtputf8: bool


def split_headers(message: bytes) -> tuple[bytes, bytes]:
    """Split a CRLF message into its header block (with its final CRLF) and the rest.

    Args:
        message: a message with CRLF line endings.

    Returns:
        (headers, body); the body starts with the empty separator line, or
        is empty when the message has no body.
    """
    if message.startswith(b"\r\n"):
        return b"", message
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message if message.endswith(b"\r\n") else message + b"\r\n", b""
    return message[: end + 2], message[end + 2 :]


def _header_lines(headers: bytes) -> list[bytes]:
    """Header fields, each with its continuation lines, each ending in CRLF."""
    fields: list[bytes] = []
    for line in headers.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def header_value(message: bytes, name: bytes) -> bytes | None:
    """The unfolded value of the first header field called ``name``, or None.

    Args:
        message: a CRLF message.
        name: the field name, any case.

    Returns:
        The value without the name, the colon and the final CRLF.
    """
    headers, _ = split_headers(message)
    want = name.lower()
    for field in _header_lines(headers):
        if _field_name(field) == want and b":" in field:
            value = field.split(b":", 1)[1]
            return re.sub(rb"\r\n(?=[ \t])", b"", value).strip()
    return None


def normalise_message(raw: bytes) -> bytes:
    """CRLF line endings and no ``X-Hurricane-Token`` header of the application's.

    Args:
        raw: the stored message.

    Returns:
        The message to sign and send.
    """
    # Stored messages are CRLF already (submission and the API write them
    # so): three counts in C are cheaper than the substitution (~60 us on
    # 5 KB), and equal counts mean every CR and every LF is part of a CRLF.
    crlf = raw.count(b"\r\n")
    message = raw if raw.count(b"\r") == crlf == raw.count(b"\n") else _EOL.sub(b"\r\n", raw)
    headers, body = split_headers(message)
    token = TOKEN_HEADER.lower()
    if token not in headers.lower():
        return headers + body
    kept = [f for f in _header_lines(headers) if _field_name(f) != token]
    return b"".join(kept) + body


def remove_fields(message: bytes, names: Iterable[bytes]) -> bytes:
    """A CRLF message without the header fields called ``names`` (lower-case).

    Args:
        message: a normalised message.
        names: lower-case field names.

    Returns:
        The message, unchanged when none of them is there.
    """
    wanted = frozenset(names)
    headers, body = split_headers(message)
    lowered = headers.lower()
    if not any(name in lowered for name in wanted):
        return message
    kept = [f for f in _header_lines(headers) if _field_name(f) not in wanted]
    return b"".join(kept) + body


def add_token_header(message: bytes, token: str) -> bytes:
    """Prepend ``X-Hurricane-Token: <token>``.

    Args:
        message: the normalised (and possibly signed) message.
        token: the VERP address of this transaction's envelope sender.

    Returns:
        The message with the header on top.
    """
    return TOKEN_HEADER + b": " + token.encode("ascii") + b"\r\n" + message


def wire_address(address: str) -> str:
    """An address as it goes on the wire: the domain in A-label form.

    The local part is kept as it is (a non-ASCII local part needs
    SMTPUTF8). A domain that is not a valid IDN is left unchanged, and the
    remote server will refuse it with a reply we record.

    Args:
        address: ``local@domain``.

    Returns:
        ``local@a-label-domain``.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{to_a_label(domain)}"
    except ValueError:
        return address


def prepare_message(message: bytes, token: str, addresses: Iterable[str]) -> PreparedMessage:
    """The final bytes of one transaction and the extensions they need.

    Args:
        message: the normalised (and signed) message from :func:`normalise_message`.
        token: the VERP address used as envelope sender.
        addresses: the wire addresses of the transaction (sender and recipients).

    Returns:
        The bytes with the token header, and the 8BITMIME / SMTPUTF8 needs.
    """
    body = add_token_header(message, token)
    headers, _ = split_headers(body)
    # Raw UTF-8 in a header makes an internationalised message (RFC 6532),
    # as does a non-ASCII local part (RFC 6531).
    # bytes.isascii(): no octet above 127, in C without a regex scan.
    smtputf8 = any(not a.isascii() for a in addresses) or not headers.isascii()
    return PreparedMessage(body=body, eight_bit=not body.isascii(), smtputf8=smtputf8)
