"""One-click unsubscribe (RFC 8058) for bulk streams: tokens, headers, the action.

Every message of a bulk stream carries, covered by its DKIM signature::

    List-Unsubscribe: <https://BASE/u/TOKEN>, <mailto:u-TOKEN@BOUNCE-DOMAIN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

TOKEN is signed like the VERP return path, with the same keys (a separate
key derived from each, so neither MAC can stand for the other)::

    K IIIIIIIIIII DDD MMMMMMMMMMMMMMMM . stream
    | |           |   +- 16 base32 chars: 80 bits of HMAC-SHA256
    | |           +----- 3 base32 chars: day issued, days since epoch mod 32768
    | +----------------- 11 base32 chars: the delivery id
    +------------------- 1 base32 char: key id

The MAC covers the key id, the delivery id, the day, the stream and the
bounce domain: a forged or altered token is refused by :meth:`UnsubscribeCodec.decode`
before anything reads the store. The recipient is the delivery's (the
delivery id binds it); ``u-`` plus a token is at most 64 octets, a local part
RFC 5321 allows, since stream names are at most 30 characters. Lower-case
throughout, so a mail system that folds the case of addresses keeps it intact.

What an unsubscribe does (:class:`Unsubscriber`): an ``unsubscribed`` event on
the delivery and a ``stream:NAME`` suppression entry, once; the POST of the
https link and a mail to the mailto address do the same. A GET never changes
anything (link scanners fetch URLs): it shows a page with a confirm button.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from hurricane.address import domain_of
from hurricane.model import Delivery
from hurricane.outbound.prepare import remove_fields
from hurricane.store.interface import IOutcomeStore
from hurricane.store.suppression import UnsubscribeOutcome
from hurricane.streams import StreamConfig, Streams, UnsubscribeConfig, feedback_id
from hurricane.verp import (
    B32,
    B32_INDEX,
    VerpKey,
    b32_int,
    int_b32,
    load_or_create_keys,
    normalise_domain,
)

if TYPE_CHECKING:
    from hurricane.config import Config

__all__ = [
    "BulkHeaders",
    "MAILTO_PREFIX",
    "UnsubscribeCodec",
    "UnsubscribeRejection",
    "UnsubscribeToken",
    "Unsubscriber",
    "bulk_headers",
    "bulk_headers_from_config",
    "codec_from_config",
]

log = Logger()

#: The local part of a mailto unsubscribe starts with this.
MAILTO_PREFIX = "u-"
_DAYS = 32 * 32 * 32
_TOKEN_RE = re.compile(
    r"(?P<key>[a-z2-7])(?P<id>[a-z2-7]{11})(?P<day>[a-z2-7]{3})(?P<mac>[a-z2-7]{16})"
    r"\.(?P<stream>[a-z0-9][a-z0-9._-]{0,29})\Z")
#: The longest token text looked at (anything longer is refused unread).
MAX_TOKEN = 64


@dataclass(frozen=True)
class UnsubscribeToken:
    """What a verified token says."""

    delivery_id: int
    stream: str
    key_id: int
    issued: int  # days since the epoch


@dataclass(frozen=True)
class UnsubscribeRejection:
    """Why a token is not authentic (falsy)."""

    reason: str

    def __bool__(self) -> bool:
        return False


class UnsubscribeCodec:
    """Signs and verifies unsubscribe tokens with the VERP keys.

    Args:
        domain: the bounce domain (bound into the MAC, and the mailto domain).
        keys: the VERP keys; the newest live one signs, every live one verifies.
        max_age_days: older tokens are refused.
        today: the day number (tests inject it).
    """

    def __init__(self, domain: str, keys: Sequence[VerpKey], max_age_days: int = 365,
                 today: int | None = None) -> None:
        live = [k for k in keys if not k.retired]
        if not live:
            raise ValueError("no VERP key that is not retired")
        self.domain = normalise_domain(domain)
        # A key of its own per VERP key: an unsubscribe MAC never verifies
        # as a return path, nor the reverse.
        self._secrets = {k.key_id: hmac.new(k.secret, b"hurricane-unsubscribe-1",
                                            hashlib.sha256).digest() for k in live}
        self._signing = max(live, key=lambda k: (k.created, k.key_id)).key_id
        self.max_age_days = max_age_days
        self._today = today

    def today(self) -> int:
        """The current day number."""
        return self._today if self._today is not None else int(time.time() // 86400)

    def _mac(self, key_id: int, did: str, day: int, stream: str) -> str:
        fields = ("u1", B32[key_id], did, str(day), stream, self.domain)
        digest = hmac.new(self._secrets[key_id], "\0".join(fields).encode("ascii"),
                          hashlib.sha256).digest()[:10]
        return base64.b32encode(digest).decode("ascii").lower()

    def encode(self, delivery_id: int, stream: str, day: int | None = None) -> str:
        """The token for one delivery of a stream.

        Raises:
            ValueError: a delivery id or stream name a token cannot carry.
        """
        stream = stream.lower()
        if not 0 <= delivery_id < 2 ** 55:
            raise ValueError(f"delivery id {delivery_id} out of range")
        issued = self.today() if day is None else day
        did = b32_int(delivery_id, 11)
        token = (B32[self._signing] + did + b32_int(issued % _DAYS, 3)
                 + self._mac(self._signing, did, issued, stream) + "." + stream)
        if not _TOKEN_RE.match(token):
            raise ValueError(f"stream name {stream!r} does not fit a token")
        return token

    def decode(self, text: str) -> UnsubscribeToken | UnsubscribeRejection:
        """Verify a token (from a URL or a mailto local part without ``u-``); never raises."""
        if not isinstance(text, str) or len(text) > MAX_TOKEN:
            return UnsubscribeRejection("not a token")
        m = _TOKEN_RE.match(text.strip().lower())
        if m is None:
            return UnsubscribeRejection("not a token")
        key_id = B32_INDEX[m["key"]]
        if key_id not in self._secrets:
            return UnsubscribeRejection("unknown key")
        today = self.today()
        age = (today - int_b32(m["day"])) % _DAYS
        if age > _DAYS - 2:
            age -= _DAYS  # issued tomorrow: clock skew between nodes
        issued = today - age
        if not hmac.compare_digest(self._mac(key_id, m["id"], issued, m["stream"]), m["mac"]):
            return UnsubscribeRejection("bad signature")
        if age > self.max_age_days:
            return UnsubscribeRejection("too old")
        return UnsubscribeToken(int_b32(m["id"]), m["stream"], key_id, issued)

    def mailto(self, token: str) -> str:
        """The mailto address of a token."""
        return f"{MAILTO_PREFIX}{token}@{self.domain}"

    def decode_mailto(self, local: str) -> UnsubscribeToken | UnsubscribeRejection:
        """Verify the local part of a mail to the mailto address."""
        if not local.lower().startswith(MAILTO_PREFIX):
            return UnsubscribeRejection("not an unsubscribe address")
        return self.decode(local[len(MAILTO_PREFIX):])


def bulk_headers(codec: UnsubscribeCodec, settings: UnsubscribeConfig, stream: StreamConfig,
                 delivery: Delivery, sender_id: str) -> bytes:
    """The headers a bulk stream's message gets for one recipient, CRLF-terminated.

    ``List-Unsubscribe`` (the https link when ``base_url`` is set, and the
    mailto address), ``List-Unsubscribe-Post`` and, when the stream has a
    template, ``Feedback-ID``. Sign after adding them.
    """
    token = codec.encode(delivery.delivery_id, stream.name)
    links = []
    if settings.base_url:
        links.append(f"<{settings.base_url.rstrip('/')}/u/{token}>")
    links.append(f"<mailto:{codec.mailto(token)}>")
    lines = [f"List-Unsubscribe: {', '.join(links[:1])}" +
             "".join(f",\r\n {link}" for link in links[1:]),
             "List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
    if stream.feedback_id:
        value = feedback_id(stream.feedback_id, mailing=delivery.mailing_id,
                            stream=stream.name, sender=sender_id)
        if value:
            lines.append(f"Feedback-ID: {value}")
    return "".join(line + "\r\n" for line in lines).encode("ascii")


#: Header fields an application may have put in that a bulk stream's own replace.
REPLACED_HEADERS = (b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id")


class Signer(Protocol):
    """Signs a normalised message (DKIM)."""

    async def sign(self, message: bytes) -> bytes:
        """The message with its signature header(s) added."""


class BulkHeaders:
    """The outbound's :class:`~hurricane.outbound.dispatch.StreamHeaders`.

    For a bulk stream's delivery: the application's own List-Unsubscribe,
    List-Unsubscribe-Post and Feedback-ID are removed, ours added (one
    unsubscribe token per recipient, so each transaction has one recipient),
    then the message is DKIM-signed, which covers them
    (:data:`~hurricane.outbound.dkim.SIGNED_HEADERS`). A transactional stream
    with a ``feedback_id`` template gets its Feedback-ID the same way.

    Args:
        codec: makes the tokens.
        settings: ``[unsubscribe]`` (the https base URL).
        streams: the configured streams.
        signer: the DKIM signer, or None (no signing).
    """

    def __init__(self, codec: UnsubscribeCodec, settings: UnsubscribeConfig, streams: Streams,
                 signer: Signer | None) -> None:
        self.codec = codec
        self.settings = settings
        self.streams = streams
        self.signer = signer

    @property
    def decorated(self) -> frozenset[str]:
        """The streams whose messages get headers here (one recipient per transaction)."""
        return frozenset(s.name for s in self.streams if s.bulk or s.feedback_id)

    def applies(self, delivery: Delivery) -> bool:
        """True when the delivery's stream adds headers."""
        stream = self.streams.get(delivery.stream)
        return stream is not None and (stream.bulk or bool(stream.feedback_id))

    async def apply(self, delivery: Delivery, body: bytes) -> bytes:
        """The normalised, unsigned body with the stream's headers, then signed."""
        stream = self.streams.get(delivery.stream)
        if stream is None:
            return body
        sender_id = domain_of(delivery.sender) if "@" in delivery.sender else ""
        if stream.bulk:
            added = bulk_headers(self.codec, self.settings, stream, delivery, sender_id)
            body = added + remove_fields(body, REPLACED_HEADERS)
        else:
            value = feedback_id(stream.feedback_id, mailing=delivery.mailing_id,
                                stream=stream.name, sender=sender_id)
            body = remove_fields(body, (b"feedback-id",))
            if value:
                body = f"Feedback-ID: {value}\r\n".encode("ascii") + body
        return await self.signer.sign(body) if self.signer is not None else body


@dataclass(frozen=True)
class UnsubscribeResult:
    """What an unsubscribe request did.

    Attributes:
        token: the verified token, or the rejection (nothing was touched).
        outcome: what the store recorded (None for a rejection).
    """

    token: UnsubscribeToken | UnsubscribeRejection
    outcome: UnsubscribeOutcome | None = None


class Unsubscriber:
    """Verifies a token, then records the unsubscribe (the web endpoint and mailto).

    Args:
        codec: verifies tokens.
        store: records the event and the stream entry.
        clock: the time recorded.
    """

    def __init__(self, codec: UnsubscribeCodec, store: IOutcomeStore,
                 clock: IReactorTime) -> None:
        self.codec = codec
        self.store = store
        self.clock = clock
        self.refused = 0
        self.recorded = 0

    def stats(self) -> dict[str, int]:
        """Unsubscribes recorded and tokens refused since the start (``stats()``)."""
        return {"recorded": self.recorded, "refused": self.refused}

    def verify(self, token: str) -> UnsubscribeToken | UnsubscribeRejection:
        """Check a token without touching the store."""
        return self.codec.decode(token)

    async def unsubscribe(self, token: str, via: str) -> UnsubscribeResult:
        """Record the unsubscribe a token asks for; a bad token touches nothing.

        Args:
            token: the token text (URL segment, or mailto local part without ``u-``).
            via: ``one-click``, ``confirm`` or ``mailto``, for the event's text.
        """
        checked = self.codec.decode(token)
        if not checked:
            self.refused += 1
            log.info("unsubscribe refused ({via}): {reason}", via=via,
                     reason=getattr(checked, "reason", "?"))
            return UnsubscribeResult(checked)
        assert isinstance(checked, UnsubscribeToken)
        outcome = await self.store.record_unsubscribe(
            checked.delivery_id, checked.stream, self.clock.seconds(), via)
        self.recorded += 1
        log.info("unsubscribe of delivery {delivery_id} from stream {stream} ({via}): "
                 "{what}", delivery_id=checked.delivery_id, stream=checked.stream, via=via,
                 what="recorded" if outcome.added else "already unsubscribed"
                 if outcome.known else "delivery unknown")
        return UnsubscribeResult(checked, outcome)


def codec_from_config(config: Config) -> UnsubscribeCodec:
    """The unsubscribe codec of a configuration: the VERP keys, the bounce domain."""
    keys = load_or_create_keys(config.verp_keys_file)
    return UnsubscribeCodec(config.bounce.domain, keys, config.unsubscribe.token_max_age_days)


def bulk_headers_from_config(config: Config, signer: Signer | None,
                             codec: UnsubscribeCodec | None = None) -> BulkHeaders:
    """The outbound's stream headers for a configuration."""
    return BulkHeaders(codec or codec_from_config(config), config.unsubscribe,
                       config.stream_set, signer)
