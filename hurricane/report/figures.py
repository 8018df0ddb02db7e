"""The rates shown by the report and returned by the API, defined once.

Definitions (shown under the overview too):

- *finished*: recipients whose outcome is known and was decided by a remote
  (delivered, failed, bounced, complained, expired); suppressed recipients
  were never sent, queued and deferred ones are not finished yet;
- *delivery rate*: (delivered + complained) / finished: complained mail did
  reach the mailbox;
- *bounce rate*: (failed + bounced) / finished, split into synchronous
  (failed: refused during our SMTP conversation) and asynchronous (bounced:
  an NDR came back later);
- *complaint rate*: complained / (delivered + complained).
"""

from __future__ import annotations

from dataclasses import dataclass

from hurricane.model import Summary
from hurricane.outcome import State

__all__ = ["Rates", "rates", "summary_json", "percent"]


@dataclass(frozen=True)
class Rates:
    """Rates of a :class:`Summary` as fractions (0..1), None when undefined."""

    finished: int
    delivery: float | None
    bounce: float | None
    bounce_sync: float | None
    bounce_async: float | None
    complaint: float | None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def rates(by_state: dict[str, int]) -> Rates:
    """The rates of a count per state (see the module docstring).

    Args:
        by_state: state -> number of recipients.

    Returns:
        The rates.
    """
    def n(state: State) -> int:
        return by_state.get(state.value, 0)

    delivered, complained = n(State.delivered), n(State.complained)
    failed, bounced = n(State.failed), n(State.bounced)
    finished = delivered + complained + failed + bounced + n(State.expired)
    return Rates(
        finished=finished,
        delivery=_ratio(delivered + complained, finished),
        bounce=_ratio(failed + bounced, finished),
        bounce_sync=_ratio(failed, finished),
        bounce_async=_ratio(bounced, finished),
        complaint=_ratio(complained, delivered + complained),
    )


def percent(value: float | None) -> str:
    """A rate as text ("12.3 %", or an en dash when undefined)."""
    return "\u2013" if value is None else f"{value * 100:.1f} %"


#: The states in the order the report and the API list them (texts).
STATES = tuple(s.value for s in (
    State.queued, State.deferred, State.delivered, State.failed, State.bounced,
    State.complained, State.expired, State.suppressed))


def summary_json(summary: Summary) -> dict[str, object]:
    """A summary with every state present and its rates, for the API."""
    r = rates(summary.by_state)
    return {
        "messages": summary.messages,
        "recipients": summary.recipients,
        "by_state": {state: summary.by_state.get(state, 0) for state in STATES},
        "by_reason": dict(sorted(summary.by_reason.items())),
        "sync_failures": summary.sync_failures,
        "async_bounces": summary.async_bounces,
        "complaints": summary.complaints,
        "rates": {
            "finished": r.finished, "delivery": r.delivery, "bounce": r.bounce,
            "bounce_sync": r.bounce_sync, "bounce_async": r.bounce_async,
            "complaint": r.complaint,
        },
    }
