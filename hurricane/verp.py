"""The signed VERP return path: encode and decode, in one module.

Address layout, all lower case::

    h F K IIIIIIIIIII DD MMMMMMMMMMMMMMMM [.mailing-id] [.message-id] @ bounce.domain
    | | | |           |  |
    | | | |           |  +- 16 base32 chars: 80 bits of HMAC-SHA256
    | | | |           +---- 2 base32 chars: day issued, days since epoch mod 1024
    | | | +---------------- 11 base32 chars: the delivery id (< 2**55)
    | | +------------------ 1 base32 char: key id (0-31)
    | +-------------------- format: version, scope and which identifiers follow
    +---------------------- "h", marks a Hurricane token

Format letters (the identifiers that follow: none, mailing id, message id,
both):

- ``a b c d``: version 1, no longer issued, still verified (tokens in flight);
- ``e f g h``: version 2, one recipient (per-recipient VERP, or a
  transaction with a single recipient);
- ``i j k l``: version 2, one transaction to several recipients of a
  message (``[delivery] verp = "per-message"``): the token names the first
  delivery of the transaction, and verifies the *message*, not a recipient.

The head is 32 octets; the identifiers (``[0-9A-Za-z-]``, 30 characters
together at most) and their dots bring the local part to 64 octets at most
(RFC 5321 4.5.3.1.1). Base32 is RFC 4648's alphabet in lower case, so the
token survives MTAs that fold the case of addresses, and every character is
plain atext. The MAC covers the format, key id, delivery id, day, both
identifiers (lower-cased) and the bounce domain, so a token is bound to this
server's domain.

The day on the wire is kept modulo 1,024 to fit two characters; version 2
binds the *absolute* day of issue into the MAC. The verifier rebuilds the
absolute day as the most recent day with those low bits, so a token that
comes back more than 1,024 days after its issue rebuilds to another day and
fails the MAC: an old token cannot come back to life by construction,
whatever the key's age. Version 1 MACs cover only the low bits; those tokens
verify only under a key younger than 1,022 days, where the low bits cannot
have wrapped since the key signed its first token.

Decoding never raises on input: it returns a :class:`VerpRejection` with the
reason, and checks shape, key, MAC and age before anyone touches a database.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hurricane.address import to_a_label
from hurricane.filemodes import make_dirs, tighten

#: Longest local part allowed by RFC 5321.
MAX_LOCAL_PART = 64
#: Mailing id and message id together.
MAX_IDENTIFIERS = 30
#: Delivery ids must fit the 11-character field.
MAX_DELIVERY_ID = 2**55 - 1
#: Days are carried modulo this.
DAY_MODULUS = 1024
#: A token issued up to this many days "in the future" is clock skew, not forgery.
FUTURE_SKEW_DAYS = 1
#: The format version :meth:`VerpCodec.encode` writes.
CURRENT_VERSION = 2
#: A version 1 token verifies only under a key younger than this (days): its
#: day of issue is then later than the key's creation, so less than
#: DAY_MODULUS - FUTURE_SKEW_DAYS days old, and its low bits cannot have wrapped.
V1_MAX_KEY_AGE_DAYS = DAY_MODULUS - 1 - FUTURE_SKEW_DAYS

B32 = "abcdefghijklmnopqrstuvwxyz234567"
B32_INDEX = {c: i for i, c in enumerate(B32)}
#: (version, per_message) -> the four format letters, by (mailing id, message id).
_LETTERS = {(1, False): "abcd", (2, False): "efgh", (2, True): "ijkl"}
#: format letter -> (version, per_message, has mailing id, has message id)
_FORMATS = {
    letter: (version, per_message, bool(i & 1), bool(i & 2))
    for (version, per_message), letters in _LETTERS.items()
    for i, letter in enumerate(letters)
}
_IDENT_RE = re.compile(r"[0-9A-Za-z-]+\Z")
_TOKEN_RE = re.compile(
    r"h(?P<fmt>[a-l])(?P<key>[a-z2-7])(?P<id>[a-z2-7]{11})(?P<day>[a-z2-7]{2})"
    r"(?P<mac>[a-z2-7]{16})(?:\.(?P<a>[0-9a-z-]{1,30}))?(?:\.(?P<b>[0-9a-z-]{1,30}))?\Z"
)


def b32_int(value: int, width: int) -> str:
    """``value`` as ``width`` letters of the token alphabet, most significant first."""
    out = []
    for _ in range(width):
        out.append(B32[value & 31])
        value >>= 5
    return "".join(reversed(out))


def int_b32(text: str) -> int:
    """The number ``text`` (letters of the token alphabet) stands for."""
    value = 0
    for ch in text:
        value = (value << 5) | B32_INDEX[ch]
    return value


def valid_identifier(value: str) -> bool:
    """True for an application identifier the token can carry."""
    return bool(_IDENT_RE.match(value))


def check_identifiers(mailing_id: str | None, message_id: str | None) -> str | None:
    """Why these identifiers cannot go into a return path, or None when they can."""
    total = 0
    for name, value in (("mailing id", mailing_id), ("message id", message_id)):
        if value is None:
            continue
        if not valid_identifier(value):
            return f"{name} must be 1-30 characters of 0-9, A-Z, a-z and '-'"
        total += len(value)
    if total > MAX_IDENTIFIERS:
        return f"mailing id and message id together exceed {MAX_IDENTIFIERS} characters"
    return None


@functools.lru_cache(maxsize=1024)
def normalise_domain(domain: str) -> str:
    """Lower-case A-label form of a domain, one trailing dot removed.

    Cached: every RCPT to the bounce listener checks the same few domains,
    and the IDNA encoding cost ~5 % of the listener's CPU per message.
    """
    try:
        return to_a_label(domain)
    except ValueError:
        # not a name IDNA accepts: compared as it is (it matches nothing)
        return domain.strip().removesuffix(".").lower()


@dataclass(frozen=True)
class VerpKey:
    """One signing key."""

    key_id: int
    secret: bytes
    created: float
    retired: bool = False


@dataclass(frozen=True)
class VerpToken:
    """What a verified return path says.

    ``per_message`` tokens were shared by every recipient of one transaction:
    they prove the message, not which of its recipients a report is about
    (see :mod:`hurricane.inbound.correlate`).
    """

    delivery_id: int
    mailing_id: str | None  # lower-cased: the address is all the token has
    message_id: str | None
    key_id: int
    issued: int  # days since the epoch
    version: int = CURRENT_VERSION
    per_message: bool = False

    def as_dict(self) -> dict[str, object]:
        """JSON form printed by ``hurricane verp decode``."""
        return {
            "delivery_id": self.delivery_id,
            "mailing_id": self.mailing_id,
            "message_id": self.message_id,
            "key_id": self.key_id,
            "issued": time.strftime("%Y-%m-%d", time.gmtime(self.issued * 86400)),
            "version": self.version,
            "per_message": self.per_message,
        }


@dataclass(frozen=True)
class VerpRejection:
    """Why an address is not an authentic return path."""

    reason: str

    def __bool__(self) -> bool:  # a rejection is falsy, a token truthy
        return False


class VerpCodec:
    """Encodes and verifies return paths for one bounce domain.

    Args:
        domain: the bounce domain.
        keys: every key that is not deleted; the newest non-retired key signs,
            every non-retired key verifies.
        max_age_days: tokens older than this are refused.
        today: the current day number (days since epoch); tests inject it.
        legacy_per_message: version 1 tokens did not say whether they were
            shared by a transaction's recipients; True (the server runs
            ``verp = "per-message"``) decodes them as ``per_message`` so that
            none of them vouches for one recipient.
    """

    def __init__(
        self,
        domain: str,
        keys: Sequence[VerpKey],
        max_age_days: int = 30,
        today: object = None,
        *,
        legacy_per_message: bool = False,
    ) -> None:
        live = [k for k in keys if not k.retired]
        if not live:
            raise ValueError("no VERP key that is not retired")
        for k in keys:
            if not 0 <= k.key_id < 32:
                raise ValueError(f"VERP key id {k.key_id} outside 0-31")
            if len(k.secret) < 16:
                raise ValueError(f"VERP key {k.key_id} is shorter than 128 bits")
        self.domain = normalise_domain(domain)
        self._signing = max(live, key=lambda k: (k.created, k.key_id))
        self._verify = {k.key_id: k for k in live}
        self.max_age_days = max_age_days
        self._today = today
        self.legacy_per_message = legacy_per_message

    def today(self) -> int:
        """Current day number."""
        if callable(self._today):
            return int(self._today())
        if self._today is not None:
            return int(self._today)  # type: ignore[call-overload,no-any-return]
        return int(time.time() // 86400)

    def _mac(self, secret: bytes, version: int, fmt: str, key: str, did: str, day: str,
             issued: int, mailing: str, message: str) -> str:
        if version == 1:
            # The day field alone (low bits): kept to verify tokens in flight.
            fields = ("hurricane-verp-1", fmt, key, did, day, mailing, message, self.domain)
        else:
            # The absolute day: a token cannot verify on any other day
            # sharing its low bits (see the module docstring).
            fields = ("hurricane-verp-2", fmt, key, did, str(issued), mailing, message,
                      self.domain)
        digest = hmac.new(secret, "\0".join(fields).encode("ascii"),
                          hashlib.sha256).digest()[:10]
        return base64.b32encode(digest).decode("ascii").lower()

    def encode_local(
        self, delivery_id: int, mailing_id: str | None = None, message_id: str | None = None,
        day: int | None = None, *, per_message: bool = False,
        version: int = CURRENT_VERSION,
    ) -> str:
        """The local part for a delivery.

        Args:
            delivery_id: the delivery the token names (with ``per_message``,
                the first delivery of the transaction).
            mailing_id: the application's mailing id, if any.
            message_id: the application's message id, if any.
            day: the day of issue (default today).
            per_message: the token is shared by several recipients of one
                transaction.
            version: the format version; 1 only to test the decoding of
                tokens issued before version 2.

        Raises:
            ValueError: for an id out of range, identifiers that do not fit,
                or a version/scope this codec does not write.
        """
        if not 0 <= delivery_id <= MAX_DELIVERY_ID:
            raise ValueError(f"delivery id {delivery_id} out of range")
        letters = _LETTERS.get((version, per_message))
        if letters is None:
            raise ValueError(f"no format version {version} with per_message={per_message}")
        mailing_id = mailing_id or None
        message_id = message_id or None
        problem = check_identifiers(mailing_id, message_id)
        if problem:
            raise ValueError(problem)
        mailing = (mailing_id or "").lower()
        message = (message_id or "").lower()
        fmt = letters[(1 if mailing else 0) | (2 if message else 0)]
        key = B32[self._signing.key_id]
        did = b32_int(delivery_id, 11)
        issued = self.today() if day is None else day
        d = b32_int(issued % DAY_MODULUS, 2)
        mac = self._mac(self._signing.secret, version, fmt, key, did, d, issued, mailing,
                        message)
        local = "h" + fmt + key + did + d + mac
        for part in (mailing, message):
            if part:
                local += "." + part
        assert len(local) <= MAX_LOCAL_PART
        return local

    def encode(
        self, delivery_id: int, mailing_id: str | None = None, message_id: str | None = None,
        day: int | None = None, *, per_message: bool = False,
        version: int = CURRENT_VERSION,
    ) -> str:
        """The full return-path address for a delivery (see :meth:`encode_local`)."""
        return self.encode_local(delivery_id, mailing_id, message_id, day,
                                 per_message=per_message, version=version) + "@" + self.domain

    def decode(self, address: str) -> VerpToken | VerpRejection:
        """Verify an address; never raises on input."""
        if not isinstance(address, str):
            return VerpRejection("not a string")
        addr = address.strip()
        if addr.startswith("<") and addr.endswith(">"):
            addr = addr[1:-1]
        if len(addr) > 320 or addr.count("@") != 1:
            return VerpRejection("not an address")
        local, domain = addr.rsplit("@", 1)
        if normalise_domain(domain) != self.domain or not domain.strip():
            return VerpRejection("wrong domain")
        return self.decode_local(local)

    def decode_local(self, local: str) -> VerpToken | VerpRejection:
        """Verify a local part alone (the domain already checked)."""
        if len(local) > MAX_LOCAL_PART:
            return VerpRejection("local part too long")
        m = _TOKEN_RE.match(local.lower())
        if m is None:
            return VerpRejection("not a return-path token")
        fmt, key, did, day, mac = m["fmt"], m["key"], m["id"], m["day"], m["mac"]
        parts = [p for p in (m["a"], m["b"]) if p is not None]
        version, per_message, want_mailing, want_message = _FORMATS[fmt]
        if len(parts) != want_mailing + want_message:
            return VerpRejection("not a return-path token")
        mailing = parts[0] if want_mailing else ""
        message = parts[-1] if want_message else ""
        if len(mailing) + len(message) > MAX_IDENTIFIERS:
            return VerpRejection("identifiers too long")
        signer = self._verify.get(B32_INDEX[key])
        if signer is None:
            return VerpRejection("unknown key")
        today = self.today()
        if version == 1 and today - int(signer.created // 86400) > V1_MAX_KEY_AGE_DAYS:
            # The low bits may have wrapped since this key signed its first
            # version 1 token: no way to tell an old token from a new one.
            return VerpRejection("version 1 token under a key too old to date it")
        # The most recent day with these low bits, or tomorrow (clock skew
        # between nodes).
        age = (today - int_b32(day)) % DAY_MODULUS
        if age > DAY_MODULUS - 1 - FUTURE_SKEW_DAYS:
            age -= DAY_MODULUS
        issued = today - age
        expected = self._mac(signer.secret, version, fmt, key, did, day, issued, mailing,
                             message)
        if not hmac.compare_digest(expected, mac):
            return VerpRejection("bad signature")
        if age > self.max_age_days:
            return VerpRejection("expired")
        return VerpToken(
            delivery_id=int_b32(did),
            mailing_id=mailing or None,
            message_id=message or None,
            key_id=B32_INDEX[key],
            issued=issued,
            version=version,
            per_message=per_message or (version == 1 and self.legacy_per_message),
        )


# -- keys on disk ---------------------------------------------------------------


def load_keys(path: str) -> list[VerpKey]:
    """Read a keys file; one readable by other users is made 0600 first (and logged).

    Raises:
        ValueError: naming the file, when it is unreadable or malformed, or
            its mode cannot be changed.
    """
    try:
        # Anyone who reads a key can forge a verified bounce.
        tighten(path)
        with open(path, encoding="utf-8") as fp:
            data = json.load(fp)
        keys = [
            VerpKey(
                key_id=int(k["id"]),
                secret=bytes.fromhex(k["secret"]),
                created=float(k.get("created", 0)),
                retired=bool(k.get("retired", False)),
            )
            for k in data["keys"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot read VERP keys: {e}") from None
    if not keys:
        raise ValueError(f"{path}: no VERP keys")
    return keys


def save_keys(path: str, keys: Sequence[VerpKey]) -> None:
    """Write a keys file with mode 0600 (a missing directory 0700), atomically."""
    make_dirs(os.path.dirname(os.path.abspath(path)))
    data = {
        "keys": [
            {"id": k.key_id, "secret": k.secret.hex(), "created": k.created, "retired": k.retired}
            for k in keys
        ]
    }
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fp:
        json.dump(data, fp, indent=2)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)


def load_or_create_keys(path: str) -> list[VerpKey]:
    """Read the keys, creating a first key (mode 0600) when the file is missing."""
    if not os.path.exists(path):
        save_keys(path, [VerpKey(0, secrets.token_bytes(32), time.time())])
    return load_keys(path)


def rotate_keys(path: str, retire_older_than_days: float | None = None) -> VerpKey:
    """Add a new signing key; optionally retire keys older than a number of days.

    Old keys keep verifying until retired, so tokens already in flight still
    verify after a rotation.
    """
    keys = load_or_create_keys(path)
    used = {k.key_id for k in keys}
    free = [i for i in range(32) if i not in used]
    if not free:
        raise ValueError(f"{path}: all 32 key ids are used; delete retired keys first")
    now = time.time()
    new = VerpKey(free[0], secrets.token_bytes(32), now)
    if retire_older_than_days is not None:
        cutoff = now - retire_older_than_days * 86400
        keys = [
            VerpKey(k.key_id, k.secret, k.created, k.retired or k.created < cutoff) for k in keys
        ]
    save_keys(path, [*keys, new])
    return new


def codec_from_config(config: object) -> VerpCodec:
    """The codec for a :class:`hurricane.config.Config`, creating keys on first use."""
    from hurricane.config import Config

    assert isinstance(config, Config)
    keys = load_or_create_keys(config.verp_keys_file)
    return VerpCodec(config.bounce.domain, keys, config.bounce.token_max_age_days,
                     legacy_per_message=config.delivery.verp == "per-message")
