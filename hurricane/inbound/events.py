"""Turning an analysis into events: what a returned message says, per delivery.

The events transcribe the analysis (its reason, ``hard`` and proposed
suppression; a complaint always proposes it) and nothing more. What an event
may change (state, reason, ``hard``, the suppression list) is not decided
here: every store engine asks :func:`hurricane.decisions.decide_bounce`,
which applies only events whose correlation key is verified (our MAC over
the delivery), bounces the delivery on every ``Action: failed`` (a 4.x.x one
is then neither hard nor suppressing) and never suppresses for a sender-side
reason (the analysis does not propose it). The events carry the key.

Recording is idempotent: each event carries a key derived from the returned
message's bytes, the delivery and the recipient, so a remote that delivers
the same NDR twice, or an operator's replay, counts once.
"""

from __future__ import annotations

import hashlib

from twisted.logger import Logger

from hurricane.bounce.model import Analysis, RecipientResult
from hurricane.inbound.correlate import Correlation, Match
from hurricane.model import BounceEvent, StoredBounce
from hurricane.outcome import Action, Category, EventKind, Reason, Source
from hurricane.smtp_reply import reply_code

__all__ = ["MAX_TEXT", "build_events", "idempotency_key"]

log = Logger()


# -- idempotency ------------------------------------------------------------------

def idempotency_key(fingerprint: bytes, delivery_id: int, recipient: str) -> str:
    """The key under which one returned message is recorded once per delivery.

    Args:
        fingerprint: :func:`message_fingerprint` of the returned message.
        delivery_id: the delivery the event is about.
        recipient: the recipient the event is about (compared lower-cased).

    Returns:
        A hex SHA-256.
    """
    h = hashlib.sha256(b"hurricane-bounce-1\0")
    h.update(fingerprint)
    h.update(b"\0%d\0" % delivery_id)
    h.update(recipient.strip().lower().encode("utf-8", "surrogateescape"))
    return h.hexdigest()


# -- events -------------------------------------------------------------------------

#: Longest diagnostic text kept on an event.
MAX_TEXT = 2000

def _permanent(result: RecipientResult) -> bool:
    """Permanent in RFC 3463's sense: a 5.x.x status or 5xx code, not 4.x.x or 4xx.

    Whether the event moves the delivery is :func:`~hurricane.decisions.decide_bounce`'s
    to say: a ``failed`` result is final whatever its class.
    """
    status = result.status or ""
    code = result.code or ""
    if status.startswith("5") or code.startswith("5"):
        return True
    if status.startswith("4") or code.startswith("4"):
        return False
    return True  # Action: failed with no code at all still means "gave up"


def _severity(event: BounceEvent) -> int:
    if event.kind in (EventKind.bounce, EventKind.complaint):
        return 3 if event.permanent or event.final else 2
    return 1 if event.kind is EventKind.delayed else 0


def build_events(
    bounce: StoredBounce,
    analysis: Analysis,
    correlation: Correlation,
    fingerprint: bytes,
) -> list[BounceEvent]:
    """Turn correlated analysis results into events for ``record_bounce``.

    The events transcribe the analysis; what they change is the store's
    :func:`hurricane.decisions.decide_bounce` to say. Category ``bounce``:
    action ``failed`` gives a final ``bounce`` event (``permanent`` for
    5.x.x/5xx, not for 4.x.x), ``delayed`` a ``delayed`` event,
    ``delivered``/``relayed``/``expanded`` a ``relayed`` event. ``feedback``
    gives a ``complaint`` (always proposes suppression), ``autoreply`` an
    ``autoreply`` event (never a failure), ``other`` nothing. Each event
    carries the key that matched it. When one message names the same
    delivery and recipient twice, only the most severe event is kept (they
    would share one idempotency key).

    Args:
        bounce: the stored returned message (its id and received time).
        analysis: the analyzer's answer.
        correlation: results paired with deliveries.
        fingerprint: :func:`message_fingerprint` of the raw message.

    Returns:
        The events, in the analysis's order.
    """
    events: dict[str, BounceEvent] = {}
    for match in correlation.matches:
        event = _event(bounce, analysis.category, match, fingerprint)
        if event is None:
            continue
        assert event.idem_key is not None
        seen = events.get(event.idem_key)
        if seen is None or _severity(event) > _severity(seen):
            events[event.idem_key] = event
    return list(events.values())


def _event(
    bounce: StoredBounce, category: str, match: Match, fingerprint: bytes
) -> BounceEvent | None:
    """One analysis result (or none: a bounce that said nothing readable) as an event."""
    r = match.result
    d = match.delivery
    recipient = r.recipient if r is not None and r.recipient else d.recipient
    try:
        cat = Category(category)
    except ValueError:
        return None  # not a category the analyzer gives: nothing to record
    if cat is Category.other:
        return None
    kind, reason, source = _kind(cat, r)
    if kind is None:
        log.warn(
            "bounce {bounce_id}: unknown action {action!r} for {recipient} ignored",
            bounce_id=bounce.bounce_id, action=r.action if r is not None else None,
            recipient=recipient,
        )
        return None
    idem_key = idempotency_key(fingerprint, d.delivery_id, recipient)
    complaint = kind is EventKind.complaint
    if r is None:
        # A complaint always proposes suppression ("permanent" means no more for it).
        return BounceEvent(
            delivery_id=d.delivery_id, at=bounce.received_at, bounce_id=bounce.bounce_id,
            correlation=match.key, idem_key=idem_key, kind=kind, reason=reason,
            source=source, permanent=complaint, suppress=complaint)
    # What the analysis read and proposes; decide_bounce decides what applies.
    bounced = kind is EventKind.bounce
    failed = bounced and Action.of(r.action) is Action.failed
    return BounceEvent(
        delivery_id=d.delivery_id, at=bounce.received_at, bounce_id=bounce.bounce_id,
        correlation=match.key, idem_key=idem_key, kind=kind, reason=reason, source=source,
        code=reply_code(r.code), status=r.status or None,
        text=(r.diagnostic or "")[:MAX_TEXT] or None, remote_host=r.remote_mta or None,
        rule=r.rule, hard=bounced and bool(r.hard),
        suppress=complaint or (bounced and bool(r.suppress)),
        # "permanent" is the RFC class (5.x.x/5xx); "final" that the reporter gave up
        permanent=complaint or (failed and _permanent(r)), final=failed,
        feedback_type=(r.feedback_type or None) if complaint else None,
    )


def _kind(category: Category, r: RecipientResult | None
          ) -> tuple[EventKind | None, Reason | None, Source]:
    """The event kind, reason and source of one analysis result.

    Returns:
        ``(kind, reason, source)``; kind None: nothing to record.
    """
    source = Source.of(r.source) if r is not None else None
    reason = Reason.of(r.reason) if r is not None else None
    if category is Category.feedback:
        return EventKind.complaint, reason or Reason.feedback, source or Source.arf
    if category is Category.autoreply:
        return EventKind.autoreply, reason or Reason.vacation, source or Source.autoreply
    if r is None:
        # We know a bounce came back for this delivery but not what it says:
        # keep it as information, it moves nothing.
        return EventKind.bounce, Reason.undefined, Source.heuristic
    action = Action.of(r.action)
    if action is Action.failed:
        return EventKind.bounce, reason or Reason.undefined, source or Source.heuristic
    if action is Action.delayed:
        return EventKind.delayed, reason, source or Source.dsn
    if action is not None and action.passed_on:
        return EventKind.relayed, reason, source or Source.dsn
    return None, None, Source.heuristic
