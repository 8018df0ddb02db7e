"""One mailbox, several spellings: when two addresses a report names are one recipient.

Reports name their recipient again in other spellings of the same address; each
spelling below is one mailbox by a rule that says so, never by resemblance:

- RFC 6533's escapes in a "utf-8" address ("j\\x{FC}rgen@x" is jürgen@x:
  :func:`embedded_unicode`, undone where a delivery-status field is read);
- case and the root's "." ("A@X.EXAMPLE." is a@x.example): the analyzer lower-cases
  every address and drops a domain's trailing dots before it gets here;
- a quoted local part that need not be quoted ('"a"@x' is a@x: RFC 5321 4.1.2, a
  Quoted-string and the Dot-string of the same characters are the same local part);
- a domain in Unicode and in punycode ("bücher.example", "xn--bcher-kva.example":
  IDNA, RFC 5890; compared in A-labels through the ``idna`` package's UTS 46
  mapping, IDNA 2008: the stdlib's "idna" codec is IDNA 2003, DESIGN.md);
- Exchange's encapsulated SMTP address ("IMCEASMTP-a+40x+2Eexample@org.example" is
  a@x.example: "+XX" is the character of hex code XX, the domain the encapsulating
  organisation's).

Exchange's encapsulated X.500 DN ("IMCEAEX-_O=ORG_..._CN=RECIPIENTS_CN=a@org.example")
names a mailbox by its directory name, not its address: it is the same mailbox as an
address the report names only where the report ties them, the DN's last CN the
address's local part (Exchange's alias, or "<hex id>-<alias>" since Exchange 2010) at the
organisation's domain the encapsulation carries (:func:`x500_candidates`).

Addresses that look alike are kept apart: another host ("a@mail.x.example" and
"a@x.example"), a local part without its domain, a sub-address ("a+tag@x"), or
"a%x@relay" (the relay decides where it leads) are other mailboxes as far as the
report says.
"""

from __future__ import annotations

#: The characters a dot-atom local part may hold (RFC 5322 atext and "."): a quoted
#: local part of these only is the same as the unquoted one.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-/=?^_`{|}~.")
_HEX = frozenset("0123456789abcdefABCDEF")


def _dot_atom(local: str) -> bool:
    return (bool(local) and all(c in _ATEXT for c in local) and local[0] != "."
            and local[-1] != "." and ".." not in local)


def imcea_decode(text: str) -> str:
    """Exchange's IMCEA encoding undone: "+XX" (two hex digits) is that character, "_"
    is "/" (in an X.500 DN); anything else stays."""
    if "+" not in text and "_" not in text:
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "+" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            out.append(chr(int(text[i + 1:i + 3], 16)))
            i += 3
            continue
        out.append("/" if c == "_" else c)
        i += 1
    return "".join(out)


def embedded_unicode(value: str) -> str:
    """RFC 6533's escapes undone: "\\x{HEX}" (EmbeddedUnicodeChar, 1 to 6 hex digits) is
    the character of that code point, as a "utf-8" address in a 7-bit delivery-status
    part writes "+", "=", a blank or a non-ASCII character ("j\\x{FC}rgen@x.example" is
    jürgen@x.example); a malformed escape stays as written."""
    out = []
    i = 0
    while True:
        j = value.find("\\x{", i)
        if j < 0:
            out.append(value[i:])
            return "".join(out)
        k = value.find("}", j + 3, j + 10)
        digits = value[j + 3:k] if k > 0 else ""
        if digits and all(c in _HEX for c in digits) and len(digits) <= 6:
            cp = int(digits, 16)
            if cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF:
                out.append(value[i:j])
                out.append(chr(cp))
                i = k + 1
                continue
        out.append(value[i:j + 3])
        i = j + 3


def _encapsulated_smtp(addr: str) -> str | None:
    """The SMTP address an "IMCEASMTP-...@org" address encapsulates (lower-case), or None
    when ``addr`` is not one or does not decode to an address."""
    local = addr.rpartition("@")[0]
    if local[:10].lower() != "imceasmtp-":
        return None
    inner = imcea_decode(local[10:]).lower()
    il, at, idom = inner.rpartition("@")
    if not at or not il or "." not in idom or "@" in il or " " in inner:
        return None
    return inner


def _domain_key(domain: str) -> str:
    """The domain in A-labels (lower case, no trailing dot); as written, lower-cased,
    when it is not a valid IDNA name."""
    domain = domain.lower().rstrip(".")
    if domain.isascii():
        return domain       # (ASCII labels, A-labels among them, are their own form)
    try:
        import idna  # (only for a non-ASCII domain: ~5 ms of imports)
        return str(idna.encode(domain, uts46=True).decode("ascii"))
    except Exception:       # (idna.IDNAError, UnicodeError: not an IDNA name)
        return domain


def key(addr: str) -> str:
    """The form two spellings of one mailbox share (compare keys, never show them)."""
    a = addr.strip().strip("<>").strip().lower()
    inner = _encapsulated_smtp(a)
    if inner is not None:
        a = inner
    local, at, domain = a.rpartition("@")
    if not at:
        return a
    if len(local) > 2 and local[0] == '"' and local[-1] == '"' and _dot_atom(local[1:-1]):
        local = local[1:-1]
    return local + "@" + _domain_key(domain)


def preference(addr: str) -> int:
    """Which of a mailbox's spellings to show (lower first): a plain ASCII address, one in
    Unicode, an encapsulated one (IMCEASMTP) or a quoted local part, an X.500 DN."""
    if addr[:8].lower() == "imceaex-":
        return 3
    if _encapsulated_smtp(addr) is not None or addr.startswith('"'):
        return 2
    return 0 if addr.isascii() else 1


def x500_alias(addr: str) -> tuple[str, str] | None:
    """(the last CN of the DN, the domain) of an "IMCEAEX-<DN>@<domain>" address (lower
    case), or None for any other address."""
    local, at, domain = addr.lower().rpartition("@")
    if not at or local[:8] != "imceaex-":
        return None
    dn = imcea_decode(local[8:])
    cn = dn.rpartition("/cn=")[2] if "/cn=" in dn else ""
    return (cn, _domain_key(domain)) if cn else None


def x500_candidates(x500: str) -> list[str]:
    """The keys of the addresses the X.500 address ``x500`` is, where a report names one of
    them: the DN's last CN at the domain of the encapsulation, and, where the CN is
    Exchange 2010's "<hex id>-<alias>", the alias there ([] for any other address; a CN
    "john-smith" is not smith's)."""
    xa = x500_alias(x500)
    if xa is None:
        return []
    cn, domain = xa
    out = [cn + "@" + domain]
    ident, dash, alias = cn.partition("-")
    if dash and alias and len(ident) >= 8 and all(c in _HEX for c in ident):
        out.append(alias + "@" + domain)
    return out
