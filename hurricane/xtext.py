"""RFC 3461 xtext: how ENVID and ORCPT values travel in SMTP parameters.

Both directions live here: the client encodes the values it sends
(``ENVID=``, ``ORCPT=rfc822;``), and the bounce side decodes what a DSN or
a returned envelope echoes back.
"""

from __future__ import annotations

__all__ = ["xtext_decode", "xtext_encode"]

_HEX = frozenset("0123456789ABCDEFabcdef")


def xtext_encode(value: str) -> str:
    """Encode a value as RFC 3461 xtext.

    Args:
        value: the text to encode; non-ASCII goes out as its UTF-8 octets.

    Returns:
        the value with "+", "=", controls, space and non-ASCII as ``+XX``.
    """
    out = []
    for octet in value.encode("utf-8"):
        if 33 <= octet <= 126 and octet not in (0x2B, 0x3D):
            out.append(chr(octet))
        else:
            out.append(f"+{octet:02X}")
    return "".join(out)


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext (``+XX`` hex escapes); bad escapes are kept.

    Lenient on purpose: the text comes from returned mail, and a ``+`` that
    does not start an escape ("user+tag") is kept as it is. Escapes decode
    to one character each (the values we encode are ASCII tokens).

    Args:
        text: the xtext.

    Returns:
        The decoded text.
    """
    if "+" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        pair = text[i + 1 : i + 3]
        if ch == "+" and len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:
            out.append(chr(int(pair, 16)))
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)
