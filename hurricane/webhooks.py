"""Webhooks: events POSTed as signed JSON arrays to the applications' URLs.

Each ``[[webhooks]]`` endpoint is one :class:`WebhookService`, an
:class:`~hurricane.accounting.EventFeed` over the store's event table: the
webhooks follow what was recorded, they are not in the delivery path, and a
slow or dead receiver delays only its own endpoint.

Delivery guarantee (at-least-once, in order, per endpoint):
    the endpoint's cursor (``<data_dir>/cursors/webhook-<name>.json``) moves
    past a batch only after the receiver answered 2xx. A non-2xx answer (a
    3xx included: redirects are never followed, the log names the
    ``Location``), a connection error or a timeout retries the *same* events
    with exponential backoff (``first_backoff`` doubling up to
    ``max_backoff``), forever: events are never dropped. A crash between the
    2xx and the cursor write sends the batch again; receivers de-duplicate on
    ``event_id``.

The request::

    POST <url>
    Content-Type: application/json
    X-Hurricane-Timestamp: 1767225600
    X-Hurricane-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

    [{"type": "bounced", "final": true, "event_id": 42, "timestamp": 1767225599.5,
      "time": "2026-01-01T00:00:00.500Z", "delivery_id": 7, "queue_id": "...",
      "recipient": "...", "sender": "...", "mailing_id": "...", "message_id": "...",
      "header_message_id": "...", "state": "bounced", "delivery_state": "bounced",
      "reason": "userunknown", "hard": true, "code": 550, "status": "5.1.1",
      "text": "...", "remote_host": "...", "remote_ip": null, "tls": null,
      "source": "dsn", "rule": "...", "bounce_id": 3, "feedback_type": null}, ...]

The timestamp is inside the MAC, so a captured request cannot be replayed
later: a receiver recomputes the MAC (:func:`verify_signature`) and refuses a
timestamp more than a few minutes from its clock. A retry is signed afresh.

Event types: ``delivered``, ``failed`` (refused during our SMTP
conversation), ``bounced`` (an NDR came back), ``complained`` (ARF),
``expired`` and ``suppressed`` are the outcomes; ``mode = "final"`` endpoints
receive only these, and only when the event set the delivery's outcome
(``final: true``). ``mode = "every"`` endpoints also receive ``deferred``
(each temporary failure), ``queued``, ``delayed``, ``autoreply``,
``relayed``, ``retry`` and ``note``, and outcome-typed events that did not
change the outcome (``final: false``, e.g. a second bounce for a delivery
already bounced). ``events`` narrows either set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

import hurricane
from hurricane.accounting import DEFAULT_GAP_GRACE, CursorFile, EventFeed, _iso
from hurricane.model import EventRecord
from hurricane.opsconfig import WEBHOOK_FINAL_TYPES, WebhookConfig
from hurricane.outcome import ATTEMPT_STATES, EventKind, State
from hurricane.reactors import IClientReactor
from hurricane.store.interface import IOutcomeStore

if TYPE_CHECKING:
    from twisted.web.client import HTTPConnectionPool

__all__ = [
    "WebhookError",
    "WebhookService",
    "WebhooksService",
    "build_webhooks_service",
    "sign",
    "verify_signature",
    "webhook_payload",
    "webhook_type",
]

log = Logger()

SIGNATURE_HEADER = "X-Hurricane-Signature"
TIMESTAMP_HEADER = "X-Hurricane-Timestamp"
#: Seconds a receiver should accept between the timestamp and its own clock.
DEFAULT_TOLERANCE = 300.0
#: Octets of a redirect's Location kept for the log.
_LOCATION_SHOWN = 200


class WebhookError(Exception):
    """The receiver did not take a batch (non-2xx); the batch will be sent again.

    Args:
        message: what happened, for the log and the stats.
        code: the HTTP status.
        location: the ``Location`` of a 3xx (cut, as received), else None.
    """

    def __init__(self, message: str, code: int, location: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.location = location


class HTTPResponse(Protocol):
    """What the webhooks need of a treq response."""

    code: int
    headers: Headers

    def content(self) -> Deferred[bytes]:
        """The whole body."""


class HTTPPoster(Protocol):
    """What the webhooks need of ``treq.client.HTTPClient`` (or ``StubTreq``)."""

    def post(self, url: str, data: bytes, headers: dict[str, str], *,
             allow_redirects: bool) -> Deferred[Any]:
        """POST ``data``; fires with an :class:`HTTPResponse`."""


# -- signing --------------------------------------------------------------------


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Hurricane-Signature`` value of a request."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: bytes, body: bytes, timestamp: str, signature: str, now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Check a webhook request as a receiver should (constant-time compare).

    Args:
        secret: the shared secret.
        body: the raw request body.
        timestamp: the ``X-Hurricane-Timestamp`` header.
        signature: the ``X-Hurricane-Signature`` header.
        now: the receiver's clock, Unix seconds.
        tolerance: seconds of difference allowed (stops replays).
    """
    try:
        sent = int(timestamp)
        expected = sign(secret, timestamp, body)
    except (ValueError, UnicodeEncodeError):
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


# -- payload --------------------------------------------------------------------

#: An event's webhook type: the state it speaks of, or its kind when it is
#: information only.
_KIND_TYPES: dict[EventKind, str] = {
    EventKind.expired: State.expired.value,
    EventKind.suppressed: State.suppressed.value,
    EventKind.bounce: State.bounced.value,
    EventKind.complaint: State.complained.value,
    EventKind.queued: State.queued.value,
    **{k: k.value for k in (EventKind.delayed, EventKind.autoreply, EventKind.relayed,
                            EventKind.retry, EventKind.note)},
}


def webhook_type(record: EventRecord) -> tuple[str, bool]:
    """The webhook event type of a stored event, and whether it is an outcome.

    Returns:
        ``(type, final)``: ``final`` is true when the event set the
        delivery's outcome (see the module docstring).
    """
    event = record.event
    kind = EventKind(event.kind)
    state = State(event.state) if event.state is not None else None
    if kind is EventKind.attempt:
        # an attempt ends delivered, failed, deferred or expired
        ended = state if state is not None and state in ATTEMPT_STATES else State.deferred
        kind_type = ended.value
        return kind_type, kind_type in WEBHOOK_FINAL_TYPES
    kind_type = _KIND_TYPES.get(kind, EventKind.note.value)
    if kind is EventKind.bounce:
        return kind_type, state is State.bounced
    if kind is EventKind.complaint:
        # Final only when it moved the delivery to complained: a report that
        # moved nothing (a forged one matched by a bare address, a second one)
        # must not tell the application an outcome; mode "every" still gets it.
        return kind_type, state is State.complained
    return kind_type, kind_type in WEBHOOK_FINAL_TYPES


def webhook_payload(record: EventRecord) -> dict[str, object]:
    """One element of the JSON array a webhook receives."""
    e = record.event
    kind_type, final = webhook_type(record)
    return {
        "type": kind_type,
        "final": final,
        "event_id": e.event_id,
        "timestamp": e.at,
        "time": _iso(e.at),
        "delivery_id": e.delivery_id,
        "queue_id": record.queue_id,
        "recipient": record.recipient,
        "sender": record.sender,
        "mailing_id": record.mailing_id,
        "message_id": record.message_id,
        "header_message_id": record.header_message_id,
        "state": getattr(e.state, "value", e.state),
        "delivery_state": record.delivery_state,
        "reason": e.reason,
        "hard": bool(e.hard),
        "code": e.code,
        "status": e.status,
        "text": e.text,
        "remote_host": e.remote_host,
        "remote_ip": e.remote_ip,
        "tls": e.tls,
        "source": e.source,
        "rule": e.rule,
        "bounce_id": e.bounce_id,
        "feedback_type": e.feedback_type,
        "correlation": e.correlation,
        "note": e.note,
    }


# -- one endpoint ---------------------------------------------------------------


class WebhookService(EventFeed):
    """Sends the event feed to one endpoint (see the module docstring).

    Args:
        config: the endpoint's ``[[webhooks]]`` entry.
        secret: the HMAC key.
        store: the event feed.
        clock: polls, backoff and the request timeout run on it.
        http: ``treq.client.HTTPClient`` in production, ``StubTreq`` in tests.
        cursor: the endpoint's position file.
        gap_grace: see :class:`~hurricane.accounting.EventFeed`.
    """

    def __init__(
        self, config: WebhookConfig, secret: bytes, store: IOutcomeStore,
        clock: IReactorTime, http: HTTPPoster, cursor: CursorFile, *,
        gap_grace: float = DEFAULT_GAP_GRACE,
    ) -> None:
        super().__init__(f"webhook:{endpoint_name(config)}", store, clock, cursor,
                         poll_interval=config.poll_interval, batch=config.batch,
                         gap_grace=gap_grace)
        if not secret:
            raise ValueError("a webhook needs a non-empty secret")
        self.config = config
        self.secret = secret
        self.http = http
        self.wanted = frozenset(config.events)
        self.posts = 0
        self.sent = 0
        self._request: Deferred[tuple[int, str | None, bytes]] | None = None

    def wants(self, record: EventRecord) -> bool:
        """Whether this endpoint receives an event (mode and ``events`` filter)."""
        kind_type, final = webhook_type(record)
        if self.config.mode == "final" and not final:
            return False
        return not self.wanted or kind_type in self.wanted

    def retry_delay(self) -> float:
        """Exponential backoff: first_backoff, doubled per failure, capped."""
        delay = self.config.first_backoff * 2 ** min(self.failures - 1, 30)
        return float(min(delay, self.config.max_backoff))

    async def handle(self, records: Sequence[EventRecord]) -> None:
        """POST the wanted events of a batch as one array; raise unless 2xx."""
        items = [webhook_payload(r) for r in records if self.wants(r)]
        if not items:
            return
        body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(self.clock.seconds()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Hurricane/{getattr(hurricane, '__version__', '0')} webhooks",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        request = Deferred.fromCoroutine(self._post(body, headers))
        request.addTimeout(self.config.timeout, self.clock)
        self._request = request
        try:
            code, location, content = await request
        finally:
            self._request = None
        if 300 <= code < 400:
            # Not followed (see _post): the batch is retried like any other
            # failure until the URL is fixed; the log says where it pointed.
            raise WebhookError(f"HTTP {code} from {self.config.url}, a redirect to "
                               f"{location!r}: redirects are not followed", code, location)
        if not 200 <= code < 300:
            snippet = content[:200].decode("utf-8", "replace")
            raise WebhookError(f"HTTP {code} from {self.config.url}: {snippet}", code)
        self.posts += 1
        self.sent += len(items)
        log.debug("{feed}: {count} events accepted by {url}", feed=self.name,
                  count=len(items), url=self.config.url)

    async def _post(self, body: bytes, headers: dict[str, str]
                    ) -> tuple[int, str | None, bytes]:
        # Never follow a redirect: treq would send the signed batch (or, for
        # a 303, a GET with the signature headers) wherever the receiver
        # points, an internal URL included, and count that answer's 2xx as
        # delivered. The configured URL is the only one that may take events.
        response = await self.http.post(self.config.url, data=body, headers=headers,
                                        allow_redirects=False)
        content = await response.content()  # read it all: frees the connection
        locations = response.headers.getRawHeaders(b"location") or [b""]
        location = locations[0][:_LOCATION_SHOWN].decode("utf-8", "replace") or None
        return response.code, location, content

    def stopService(self) -> Deferred[None] | None:
        """Stop; a request in flight is cancelled (its batch is sent after restart)."""
        result = super().stopService()
        if self._request is not None:
            self._request.cancel()
        return result

    def stats(self) -> dict[str, object]:
        """The feed's stats plus posts made and events sent."""
        return {**super().stats(), "url": self.config.url, "posts": self.posts,
                "sent": self.sent}


# -- every endpoint -------------------------------------------------------------


def endpoint_name(config: WebhookConfig) -> str:
    """The endpoint's name: ``name``, else derived from the URL."""
    return config.name or "url-" + hashlib.sha256(config.url.encode("utf-8")).hexdigest()[:16]


def load_secret(config: WebhookConfig) -> bytes:
    """The endpoint's HMAC secret (the first line of ``secret_file``, or ``secret``).

    Raises:
        OSError: the file cannot be read.
        ValueError: the secret is empty.
    """
    if config.secret_file:
        with open(config.secret_file, "rb") as fp:
            lines = fp.read().splitlines()
        secret = lines[0].strip() if lines else b""
    else:
        secret = config.secret.encode("utf-8")
    if not secret:
        raise ValueError(f"webhook {config.url}: the secret is empty")
    return secret


class WebhooksService(MultiService):
    """Every webhook endpoint, plus the HTTP connection pool they share."""

    def __init__(self, pool: HTTPConnectionPool | None = None) -> None:
        super().__init__()
        self.setName("webhooks")
        self.pool = pool

    def endpoints(self) -> list[WebhookService]:
        """The endpoint services."""
        return [s for s in self if isinstance(s, WebhookService)]

    def stopService(self) -> Deferred[object]:
        """Stop every endpoint, then close the pooled connections."""
        stopped: Deferred[object] = super().stopService()
        pool = self.pool
        if pool is None:
            return stopped

        def close(result: object) -> Deferred[object]:
            closing: Deferred[object] = pool.closeCachedConnections()  # untyped in Twisted
            return closing.addCallback(lambda _: result)

        return stopped.addCallback(close)

    def stats(self) -> dict[str, object]:
        """Per endpoint stats, by name."""
        return {str(s.name): s.stats() for s in self.endpoints()}


def build_webhooks_service(
    webhooks: Sequence[WebhookConfig], store: IOutcomeStore, reactor: IClientReactor,
    data_dir: str, *,
    http: HTTPPoster | None = None,
) -> WebhooksService | None:
    """One service holding a :class:`WebhookService` per endpoint; None when there are none.

    Args:
        webhooks: the ``[[webhooks]]`` entries.
        store: the root service's store.
        reactor: IReactorTime + IReactorTCP (+ IReactorSSL for https URLs).
        data_dir: ``Config.data_dir``; cursors go to ``<data_dir>/cursors/``.
        http: a treq-like client; default ``treq.client.HTTPClient`` over a
            persistent connection pool on ``reactor``.

    Raises:
        OSError: a secret file cannot be read.
        ValueError: an empty secret, two endpoints with one name, or a
            corrupt cursor file.
    """
    if not webhooks:
        return None
    pool = None
    # treq's HTTPClient.post takes headers through **kwargs only: not HTTPPoster's signature
    client: Any = http
    if client is None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=True)
        client = HTTPClient(Agent(reactor, pool=pool))
    parent = WebhooksService(pool)
    seen: set[str] = set()
    for config in webhooks:
        name = endpoint_name(config)
        if name in seen:
            raise ValueError(f"two webhooks are named {name!r}; give each its own name")
        seen.add(name)
        cursor = CursorFile(os.path.join(data_dir, "cursors", f"webhook-{name}.json"))
        WebhookService(config, load_secret(config), store, reactor, client,
                       cursor).setServiceParent(parent)
    return parent

