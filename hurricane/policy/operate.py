"""Operator actions and views of closed-loop delivery (issue 19), for
:class:`hurricane.operations.Operations`: release or cancel a held mailing,
the providers' limits as they adapted, the policy events.

Every front end (command, console, API, report) goes through Operations,
which delegates here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hurricane.outcome import PolicyVerb, State
from hurricane.policy.providers import PolicyAction, ProviderLimiter
from hurricane.store.policy import BreakerRecord, MailingCounts, PolicyEvent, PolicyStore

__all__ = ["MailingHold", "NoPolicyStore", "check_mailing_id", "end_hold", "mailing_hold",
           "providers_view"]

#: Longest mailing id accepted (the submission's own limit is lower).
MAX_MAILING_ID = 255
#: Recent actions listed per provider.
RECENT_ACTIONS = 10


class NoPolicyStore(RuntimeError):
    """The store keeps no policy state (the memory store)."""


def check_mailing_id(value: object) -> str | None:
    """The mailing id, trimmed, or None when it is not one."""
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_MAILING_ID:
        return None
    text = value.strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return None
    return text


@dataclass(frozen=True)
class MailingHold:
    """A mailing's breaker as an operator sees it.

    Attributes:
        mailing_id: the mailing.
        breaker: its record (None: it never tripped).
        counts: its recipients by what the breaker looks at.
    """

    mailing_id: str
    breaker: BreakerRecord | None
    counts: MailingCounts

    def as_json(self) -> dict[str, object]:
        """For the API and ``--json``."""
        b = self.breaker
        return {
            "mailing_id": self.mailing_id,
            "breaker": None if b is None else {
                "state": b.state, "cause": b.cause, "evidence": dict(b.evidence),
                "held_at": b.held_at, State.held.value: b.held, "changed_at": b.changed_at},
            "counts": self.counts.as_json(),
        }


async def mailing_hold(store: PolicyStore, mailing_id: str) -> MailingHold:
    """A mailing's breaker record and counts."""
    return MailingHold(mailing_id, await store.breaker(mailing_id),
                       await store.mailing_counts(mailing_id))


async def end_hold(store: PolicyStore, mailing_id: str, verb: PolicyVerb, now: float,
                   who: str) -> int:
    """Release (send) or cancel a held mailing's recipients.

    Returns:
        rows moved, -1 when the mailing's breaker never tripped.
    """
    counts = await store.mailing_counts(mailing_id)
    after = State.queued.value if verb is PolicyVerb.release else State.cancelled.value
    action = PolicyAction(now, "mailing", mailing_id, verb.value, f"operator {who}",
                          State.held.value, after, {State.held.value: counts.held})
    if verb is PolicyVerb.release:
        return await store.release_mailing(mailing_id, now, action)
    return await store.cancel_mailing(mailing_id, now, action)


def _event_json(e: PolicyEvent) -> dict[str, object]:
    return {"id": e.event_id, "node": e.node, **e.action.as_json()}


async def providers_view(store: PolicyStore | None, limiter: ProviderLimiter,
                         now: float) -> list[dict[str, object]]:
    """Every budget's configured and current limits, and its recent actions.

    The stored state (from every node) is adopted first when newer.
    """
    if store is not None:
        for stored in await store.provider_states():
            limiter.adopt(stored)
    rows: list[dict[str, object]] = []
    for state in limiter.states():
        provider = limiter.providers.named(state.provider)
        recent = ([_event_json(e) for e in await store.policy_events(
            scope="provider", subject=state.provider, limit=RECENT_ACTIONS)]
            if store is not None else [])
        rows.append({
            "provider": state.provider,
            "mx": list(provider.mx),
            "domains": list(provider.domains) if state.provider == provider.name
            else limiter.providers.domains(state.provider),
            "max_connections": provider.max_connections,
            "messages_per_connection": provider.messages_per_connection,
            "rate_per_minute": provider.rate_per_minute,
            "current_rate_per_minute": round(state.rate, 1),
            "paused_until": state.paused_until if state.paused_until > now else None,
            "suspended_until": state.suspended_until if state.suspended(now) else None,
            "cause": state.cause,
            "updated_at": state.updated_at or None,
            "recent_actions": recent,
        })
    return rows
