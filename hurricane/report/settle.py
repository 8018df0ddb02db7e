"""When a mailing's outcome is known: the settling estimate (issue 18, item 7).

A recipient the remote server accepted can still bounce (an NDR comes
later) or complain. How long that can take depends on the provider: some
return NDRs within seconds, others after hours of their own retries. So
the report measures it (docs/report.md, "Settled mailings"):

- the *time to a late outcome* of a delivery is the time from its
  ``delivered_at`` (the remote's 250) to the NDR (``bounced_at``) or, for
  a complaint without an NDR before it, to the complaint;
- the sample is the :data:`SAMPLE_SIZE` most recent late outcomes of the last
  :data:`LOOKBACK` (one bounded read of a partial index: the store's
  ``late_outcomes``);
- each recipient domain with at least :data:`MIN_SAMPLES` of them gets its own
  settling delay, the :data:`QUANTILE` quantile (nearest rank) of its times
  (the :data:`MAX_DOMAINS` domains with most samples); every other domain
  takes the same quantile over the whole sample when the sample has
  :data:`MIN_SAMPLES`, else :data:`FALLBACK_DELAY` (72 h: most late NDRs
  come within minutes, and those a receiving MTA sends when its own queue
  expires come after its queue lifetime, 2 to 5 days by default; a guess
  until enough is measured, and said so on the page);
- a delivered recipient has *settled* once its delay has passed since its
  ``delivered_at``; failed, expired, suppressed, bounced and complained
  recipients have settled (their outcome is final); queued and deferred
  ones have not. A mailing *settles at* the latest such time over its
  delivered recipients, once nothing of it is queued or deferred.

The model is rebuilt at most every :data:`MODEL_TTL` seconds per process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from hurricane.store.interface import IOutcomeStore, LateOutcome, MailingRollup, SettleCounts

__all__ = ["FALLBACK_DELAY", "LOOKBACK", "MIN_SAMPLES", "QUANTILE", "SAMPLE_SIZE",
           "DomainDelay", "SettleModel", "SettleModels", "Settlement", "build_model",
           "quantile", "settlement"]

#: The late outcomes one model is built from, most recent first.
SAMPLE_SIZE = 20_000
#: How far back the sample looks (seconds).
LOOKBACK = 30 * 86400
#: Fewest samples for a domain (or the whole sample) to have its own delay.
MIN_SAMPLES = 50
#: The share of late outcomes that arrive within the settling delay.
QUANTILE = 0.99
#: The delay where too little was measured (seconds).
FALLBACK_DELAY = 72 * 3600.0
#: Most domains with a delay of their own (the SQL passes each as a parameter).
MAX_DOMAINS = 200
#: How long one model is reused (seconds).
MODEL_TTL = 300.0


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (not empty).

    Nearest rank never interpolates: the answer is one of the measured
    times, and the 99th percentile of 50 values is the largest but one.
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class DomainDelay:
    """The settling delay of one domain and what it rests on."""

    domain: str
    seconds: float
    samples: int


@dataclass(frozen=True)
class SettleModel:
    """Settling delays per domain, and the delay of every other domain.

    Attributes:
        domains: the domains measured well enough (``MIN_SAMPLES``).
        default: the delay of every other domain (seconds).
        default_samples: the late outcomes behind ``default`` (0: the fallback).
        samples: the size of the whole sample.
    """

    domains: Mapping[str, DomainDelay]
    default: float
    default_samples: int
    samples: int

    def delay(self, domain: str) -> float:
        """The settling delay of ``domain`` (seconds)."""
        own = self.domains.get(domain.lower())
        return own.seconds if own is not None else self.default

    def delays(self) -> dict[str, float]:
        """The per-domain delays, as the store's settling reads take them."""
        return {name: d.seconds for name, d in self.domains.items()}

    def source(self, domain: str) -> str:
        """Where ``domain``'s delay comes from, for people."""
        own = self.domains.get(domain.lower())
        if own is not None:
            return f"its own: {own.samples} late outcomes"
        return self.default_source()

    def source_short(self, domain: str) -> str:
        """Where ``domain``'s delay comes from, in a few words."""
        own = self.domains.get(domain.lower())
        if own is not None:
            return f"measured ({own.samples})"
        return "all providers" if self.default_samples else "fallback"

    def default_source(self) -> str:
        """Where the delay of an unmeasured domain comes from, for people."""
        if self.default_samples:
            return f"all providers: {self.default_samples} late outcomes"
        return (f"fallback: {self.samples} late outcomes measured, fewer than "
                f"{MIN_SAMPLES}")


def build_model(sample: Iterable[LateOutcome]) -> SettleModel:
    """The settling model of a sample of late outcomes (see the module docstring)."""
    by_domain: dict[str, list[float]] = {}
    everything: list[float] = []
    for outcome in sample:
        seconds = max(0.0, outcome.seconds)
        by_domain.setdefault(outcome.domain.lower(), []).append(seconds)
        everything.append(seconds)
    measured = sorted((d for d, v in by_domain.items() if len(v) >= MIN_SAMPLES),
                      key=lambda d: (-len(by_domain[d]), d))[:MAX_DOMAINS]
    domains = {d: DomainDelay(d, quantile(by_domain[d], QUANTILE), len(by_domain[d]))
               for d in measured}
    if len(everything) >= MIN_SAMPLES:
        return SettleModel(domains, quantile(everything, QUANTILE), len(everything),
                           len(everything))
    return SettleModel(domains, FALLBACK_DELAY, 0, len(everything))


class SettleModels:
    """The current settling model, rebuilt from the store every ``ttl`` seconds.

    Args:
        store: where the late outcomes are read.
        clock: the injected clock.
        ttl: how long one model is reused.
    """

    def __init__(self, store: IOutcomeStore, clock: IReactorTime,
                 ttl: float = MODEL_TTL) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._model: SettleModel | None = None
        self._built_at = 0.0

    async def current(self) -> SettleModel:
        """The model, read again when the last one is older than ``ttl``."""
        now = self.clock.seconds()
        if self._model is None or now - self._built_at >= self.ttl:
            sample = await self.store.late_outcomes(now - LOOKBACK, SAMPLE_SIZE)
            self._model = build_model(sample)
            self._built_at = now
        return self._model


@dataclass(frozen=True)
class Settlement:
    """How far a mailing (or one of its domains) settled, for display.

    Attributes:
        recipients: every recipient.
        settled: recipients with a final outcome.
        pending: recipients still queued or deferred.
        settles_at: when the last delivered recipient settles (None: none delivered).
        done: nothing more is expected (nothing pending, every delay passed).
    """

    recipients: int
    settled: int
    pending: int
    settles_at: float | None
    done: bool

    @property
    def share(self) -> float | None:
        """``settled / recipients`` (None without recipients)."""
        return self.settled / self.recipients if self.recipients else None


def settlement(counts: SettleCounts | MailingRollup, now: float) -> Settlement:
    """The settlement of counts computed at some time, seen at ``now``.

    Counts read earlier (a stored rollup) may be behind: once nothing is
    pending and ``now`` is past ``settles_at`` every recipient has settled
    whatever the count said then.
    """
    recipients = counts.recipients
    pending = counts.pending
    done = pending == 0 and (counts.settles_at is None or counts.settles_at <= now)
    return Settlement(recipients, recipients if done else min(counts.settled, recipients),
                      pending, counts.settles_at, done)
