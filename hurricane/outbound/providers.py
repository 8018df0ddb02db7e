"""The destination pool's gate to provider budgets (issue 19).

:class:`ProviderGate` is the :class:`~hurricane.outbound.pool.Gate` the
pool asks before it opens a connection or sends a transaction: the
connections open to every domain of a provider count against one
``max_connections``, sends to all of them share one rate slot (this node's
share of the provider's adaptive rate), and a paused or suspended provider
waits. It also hears every attempt's result (:meth:`ProviderGate.observe`)
and passes the :class:`~hurricane.policy.providers.PolicyAction` it causes
on (the policy service stores it as a ``policy`` event).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from hurricane.model import AttemptResult
from hurricane.outbound.pool import DestinationLimits
from hurricane.policy.providers import PolicyAction, ProviderLimiter, Signal, signal_of

__all__ = ["MAX_GATE_WAIT", "ProviderGate"]

#: Longest wait a worker sits out on an open connection (a throttle pause);
#: a longer one (a suspension) stops the worker and its rows go back.
MAX_GATE_WAIT = 30.0


class ProviderGate:
    """Provider budgets for the destination pool.

    Args:
        limiter: every provider's adaptive state.
        clock: the current time.
        on_action: called with each action an attempt's result causes.
    """

    def __init__(self, limiter: ProviderLimiter, clock: IReactorTime,
                 on_action: Callable[[PolicyAction], None] = lambda action: None) -> None:
        self.limiter = limiter
        self._clock = clock
        self.on_action = on_action
        self._open: Counter[str] = Counter()
        #: Refused (throttled) and accepted transactions per provider, for the figures.
        self.throttled: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()

    def _name(self, domain: str) -> str:
        return self.limiter.providers.budget(domain)

    def limits(self, domain: str) -> DestinationLimits:
        """The provider's connections and messages per connection, and this
        node's share of its current rate."""
        provider = self.limiter.providers.of(domain)
        rate = self.limiter.rate_share(self._name(domain))
        return DestinationLimits(provider.max_connections, provider.messages_per_connection,
                                 int(rate) if rate <= 0 else max(1, int(rate)))

    def room(self, domain: str) -> int:
        """Connections the provider of ``domain`` may still open on this node."""
        provider = self.limiter.providers.of(domain)
        return provider.max_connections - self._open[self._name(domain)]

    def blocked(self, domain: str) -> bool:
        """True while the provider of ``domain`` is suspended."""
        return self.limiter.suspended(domain, self._clock.seconds())

    def reserve(self, domain: str) -> float | None:
        """Book a send slot; None when the wait is a suspension or too long."""
        wait = self.limiter.reserve(domain, self._clock.seconds(), MAX_GATE_WAIT)
        if self.blocked(domain) or wait > MAX_GATE_WAIT:
            return None
        return wait

    def suspended_domains(self) -> list[str]:
        """The known domains of suspended providers (left out of claims)."""
        now = self._clock.seconds()
        found: list[str] = []
        for name in self.limiter.suspended_budgets(now):
            found += self.limiter.providers.domains(name)
        return found

    def connected(self, domain: str, host: str | None) -> None:
        """Count a connection (and learn the domain's provider from its MX host)."""
        self.limiter.providers.learn(domain, host)
        self._open[self._name(domain)] += 1

    def disconnected(self, domain: str) -> None:
        """Uncount a connection."""
        name = self._name(domain)
        if self._open[name] > 0:
            self._open[name] -= 1

    def connections(self) -> dict[str, int]:
        """Open connections per provider."""
        return {name: n for name, n in self._open.items() if n}

    def observe(self, domain: str, result: AttemptResult) -> PolicyAction | None:
        """Adapt the provider of ``domain`` to one attempt's result.

        Returns:
            the action taken, if any (also passed to ``on_action``).
        """
        signal = signal_of(result)
        name = self._name(domain)
        if signal is Signal.throttle:
            self.throttled[name] += 1
        elif signal is Signal.success:
            self.delivered[name] += 1
        if not self.limiter.settings.enabled:
            return None  # [delivery.adaptive] enabled = false: fixed limits
        action = self.limiter.observe(domain, result, self._clock.seconds())
        if action is not None:
            self.on_action(action)
        return action

    def retry_delay(self, result: AttemptResult) -> float | None:
        """How soon a throttled delivery comes again (its own backoff untouched),
        or None for any other result."""
        if signal_of(result) is not Signal.throttle or not self.limiter.settings.enabled:
            return None
        return self.limiter.settings.throttle_pause
