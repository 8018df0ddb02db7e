"""Providers: one budget for every domain a mail provider hosts, and how it adapts.

A :class:`ProviderMap` says which provider a recipient domain belongs to:
the first ``[[delivery.providers]]`` entry whose ``domains`` glob matches
the domain, or whose ``mx`` glob matches the MX host the domain was reached
through (learned at the first connection: the MX roll-up), else the
``default`` provider made of ``[delivery]``.

A :class:`ProviderLimiter` keeps each provider's adaptive state
(:class:`ProviderState`) and turns what the receivers answer into
:class:`PolicyAction` objects (issue 19, items 2 and 3):

- a throttling refusal (``speeding``, ``toomanyconn``, a 421/451 whose text
  speaks of rates) multiplies the rate by ``throttle_factor`` and pauses the
  provider for ``throttle_pause`` seconds; refusals during the pause are the
  same event (the transactions were already on their way);
- ``blocked`` / ``badreputation`` suspends the provider for
  ``suspend_seconds``;
- ``ramp_after`` successes in a row multiply the rate by ``ramp_factor``, up
  to the configured rate (an unlimited provider goes back to no limit once it
  reaches the rate it was sending at when it was first cut);
- late sender-side bounces and complaints over a rolling window (counted by
  the store) cut the rate or suspend the provider; recipient-side reasons
  (``userunknown``, ``mailboxfull``) are never counted.

Pure logic: times are arguments, nothing here reads a clock or a store.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from hurricane.config import AdaptiveConfig, DeliveryConfig
from hurricane.model import AttemptResult
from hurricane.outcome import PolicyVerb, Reason, State

__all__ = [
    "BLOCK_REASONS",
    "DEFAULT_PROVIDER",
    "LateCounts",
    "PolicyAction",
    "Provider",
    "ProviderLimiter",
    "ProviderMap",
    "ProviderState",
    "SENDER_SIDE_LATE",
    "Signal",
    "THROTTLE_REASONS",
    "signal_of",
]

#: The provider every domain no entry claims belongs to (``[delivery]``'s limits).
DEFAULT_PROVIDER = "default"
#: Synchronous reasons that say "slow down".
THROTTLE_REASONS = frozenset({Reason.speeding, Reason.toomanyconn})
#: Synchronous reasons that say "stop": the sender is refused.
BLOCK_REASONS = frozenset({Reason.blocked, Reason.badreputation})
#: Late bounce reasons that blame the sender (never ``userunknown``, ``mailboxfull``...).
SENDER_SIDE_LATE = frozenset({Reason.blocked, Reason.badreputation, Reason.spamdetected,
                              Reason.policyviolation})
#: A 421/451 that speaks of rates, whatever the classifier called it.
_RATE_TEXT = re.compile(r"rate|too many|slow down|throttl", re.IGNORECASE)
#: Domains whose provider is remembered at most (oldest forgotten first).
_MAX_LEARNED = 100_000
#: Send times kept per provider to measure its rate.
_RECENT_SENDS = 200
#: Messages per minute an unlimited budget is cut from at least.
_FALLBACK_RATE = 600.0


class Signal(enum.Enum):
    """What one attempt says about its provider."""

    success = "success"
    throttle = "throttle"
    block = "block"
    neutral = "neutral"


def signal_of(result: AttemptResult) -> Signal:
    """What an attempt's result says about the provider that answered it.

    Args:
        result: one recipient's result.

    Returns:
        ``success`` for delivered, ``block`` for a permanent blocked /
        badreputation refusal, ``throttle`` for a rate refusal, else
        ``neutral`` (a user unknown says nothing about the provider's
        patience; nor does a temporary "blocked", which is how greylisting,
        451 4.7.1, is classified).
    """
    state = State(result.state)
    if state is State.delivered:
        return Signal.success
    reason = Reason.of(result.reason.value if isinstance(result.reason, Reason)
                       else result.reason)
    if reason in BLOCK_REASONS and state is State.failed:
        return Signal.block
    if state is State.deferred:
        if reason in THROTTLE_REASONS:
            return Signal.throttle
        if result.code in (421, 451) and (result.status == "4.7.28"
                                          or _RATE_TEXT.search(result.text or "")):
            return Signal.throttle
    return Signal.neutral


def _glob(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern.lower())


@dataclass(frozen=True)
class Provider:
    """One provider's identity and configured (maximum) limits (0 rate: none)."""

    name: str
    mx: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    max_connections: int = 5
    messages_per_connection: int = 100
    rate_per_minute: int = 0

    def claims_domain(self, domain: str) -> bool:
        """True when a ``domains`` glob matches ``domain`` (lower-case)."""
        return any(_glob(p, domain) for p in self.domains)

    def claims_mx(self, host: str) -> bool:
        """True when an ``mx`` glob matches the MX ``host`` (lower-case)."""
        return any(_glob(p, host) for p in self.mx)


class ProviderMap:
    """Which provider a domain belongs to.

    Args:
        config: ``[delivery]`` (its providers, and the default's limits).
    """

    def __init__(self, config: DeliveryConfig) -> None:
        self.default = Provider(DEFAULT_PROVIDER, (), (), config.max_connections_per_destination,
                                config.messages_per_connection, config.rate_per_minute)
        self.providers = tuple(
            Provider(p.name, tuple(m.lower() for m in p.mx), tuple(d.lower() for d in p.domains),
                     p.max_connections or self.default.max_connections,
                     p.messages_per_connection or self.default.messages_per_connection,
                     p.rate_per_minute or self.default.rate_per_minute)
            for p in config.providers)
        self._by_name = {p.name: p for p in (*self.providers, self.default)}
        self._learned: OrderedDict[str, str] = OrderedDict()

    def named(self, name: str) -> Provider:
        """The provider called ``name`` (the default for an unknown name)."""
        return self._by_name.get(name, self.default)

    def all(self) -> tuple[Provider, ...]:
        """Every provider, the default last."""
        return (*self.providers, self.default)

    def of(self, domain: str) -> Provider:
        """The provider of a recipient domain, as far as is known now."""
        domain = domain.lower()
        name = self._learned.get(domain)
        if name is not None:
            return self.named(name)
        for provider in self.providers:
            if provider.claims_domain(domain):
                return provider
        return self.default

    def warmup_name(self, domain: str, mx_host: str, fallback: Callable[[str, str], str]) -> str:
        """The provider a source address warms up with (issue 21 with issue 19): a
        configured provider's name when one claims the domain or its MX host (so
        every domain hosted there shares one warm-up schedule), else ``fallback``'s
        answer for the destination (the MX host's parent domain).
        """
        found = self.learn(domain, mx_host)
        return found.name if found is not self.default else fallback(domain, mx_host)

    def learn(self, domain: str, mx_host: str | None) -> Provider:
        """Note the MX host ``domain`` was reached through (the MX roll-up).

        Args:
            domain: the recipient domain.
            mx_host: the host connected to.

        Returns:
            the domain's provider from now on.
        """
        domain = domain.lower()
        found = self.of(domain)
        if found is self.default and mx_host:
            host = mx_host.lower().rstrip(".")
            for provider in self.providers:
                if provider.claims_mx(host):
                    found = provider
                    break
        if found is not self.default or domain in self._learned:
            self._learned[domain] = found.name
            self._learned.move_to_end(domain)
            while len(self._learned) > _MAX_LEARNED:
                self._learned.popitem(last=False)
        return found

    def budget(self, domain: str) -> str:
        """The name of the budget ``domain`` draws on: its provider's, or for
        the default provider the domain's own (``default:example.org``: the
        ``[delivery]`` limits stay per destination domain, as without providers)."""
        provider = self.of(domain)
        if provider is self.default:
            return f"{DEFAULT_PROVIDER}:{domain.lower()}"
        return provider.name

    def domains(self, name: str) -> list[str]:
        """The domains known to draw on budget ``name``."""
        if name.startswith(f"{DEFAULT_PROVIDER}:"):
            return [name.split(":", 1)[1]]
        return sorted(d for d, n in self._learned.items() if n == name)


@dataclass
class ProviderState:
    """A provider's adaptive state, shared through the store.

    Attributes:
        provider: its name.
        rate: messages per minute allowed now, in total over the nodes (0: no limit).
        ceiling: the rate a ramp goes back to.
        paused_until: no send before this time (a throttling refusal).
        suspended_until: no send before this time (a block), and no claim.
        cause: the last action's cause.
        updated_at: the last action's time (the newest state wins between nodes).
        streak: successes in a row (this node's own count).
    """

    provider: str
    rate: float
    ceiling: float
    paused_until: float = 0.0
    suspended_until: float = 0.0
    cause: str | None = None
    updated_at: float = 0.0
    streak: int = 0

    def suspended(self, now: float) -> bool:
        """True while the provider is suspended."""
        return now < self.suspended_until

    def describe(self) -> str:
        """The limit as a short text for an event's before/after."""
        rate = f"{self.rate:.0f}/min" if self.rate > 0 else "unlimited"
        return f"rate {rate}"


@dataclass(frozen=True)
class PolicyAction:
    """One automatic (or operator) action, recorded as a ``policy`` event.

    Attributes:
        at: when.
        scope: ``provider`` or ``mailing``.
        subject: the provider name or the mailing id.
        action: ``throttle``, ``suspend``, ``ramp``, ``restore``, ``hold``,
            ``release``, ``cancel``.
        cause: the reason word or rate that caused it.
        before: the limit (or state) before.
        after: the limit (or state) after.
        evidence: the counts it was decided on.
        until: the end of a pause or suspension, if any.
    """

    at: float
    scope: str
    subject: str
    action: str
    cause: str
    before: str
    after: str
    evidence: Mapping[str, int] = field(default_factory=dict)
    until: float | None = None

    def as_json(self) -> dict[str, object]:
        """The action as a JSON object."""
        return {"at": self.at, "scope": self.scope, "subject": self.subject,
                "action": self.action, "cause": self.cause, "before": self.before,
                "after": self.after, "evidence": dict(self.evidence), "until": self.until}


@dataclass(frozen=True)
class LateCounts:
    """A provider's rolling window, as counted by the store.

    Attributes:
        deliveries: deliveries accepted by the provider in the window.
        sender_bounces: late bounces among them whose reason blames the sender.
        complaints: complaints among them.
    """

    deliveries: int
    sender_bounces: int
    complaints: int


class ProviderLimiter:
    """Every provider's adaptive state on this node.

    Args:
        providers: the provider map.
        settings: ``[delivery.adaptive]``.
    """

    def __init__(self, providers: ProviderMap, settings: AdaptiveConfig) -> None:
        self.providers = providers
        self.settings = settings
        #: Nodes sharing the budgets (each takes its share of the rate).
        self.nodes = 1
        self._states: dict[str, ProviderState] = {}
        self._next_send: dict[str, float] = {}
        self._sends: dict[str, deque[float]] = {}
        self._late_acted: dict[str, tuple[int, int]] = {}

    def state(self, name: str) -> ProviderState:
        """The state of provider ``name`` (its configured limits at first)."""
        state = self._states.get(name)
        if state is None:
            configured = float(self.providers.named(name).rate_per_minute)
            state = self._states[name] = ProviderState(name, configured, configured)
        return state

    def states(self) -> list[ProviderState]:
        """Every budget's state: the configured providers, the default, then the
        default's domains that have one."""
        named = [self.state(p.name) for p in self.providers.all()]
        seen = {s.provider for s in named}
        return named + sorted((s for n, s in self._states.items() if n not in seen),
                              key=lambda s: s.provider)

    def suspended_budgets(self, now: float) -> list[str]:
        """The budgets suspended now (cheap: the scheduler asks at every claim)."""
        return [name for name, s in self._states.items() if s.suspended(now)]

    def adopt(self, stored: ProviderState) -> bool:
        """Take a state another node (or a previous run) stored, when it is newer.

        Returns:
            True when it replaced ours.
        """
        mine = self.state(stored.provider)
        if stored.updated_at <= mine.updated_at:
            return False
        self._states[stored.provider] = replace(stored, streak=mine.streak)
        return True

    def suspended(self, domain: str, now: float) -> bool:
        """True while the provider of ``domain`` is suspended."""
        return self.state(self.providers.budget(domain)).suspended(now)

    def rate_share(self, name: str) -> float:
        """This node's share of the provider's rate, per minute (0: no limit)."""
        rate = self.state(name).rate
        return rate / max(1, self.nodes) if rate > 0 else 0.0

    def reserve(self, domain: str, now: float, max_wait: float | None = None) -> float:
        """Book the next send slot of the provider of ``domain``.

        Args:
            domain: the recipient domain.
            now: the time.
            max_wait: book nothing when the wait would be longer.

        Returns:
            seconds to wait before sending (a suspension's remaining time is
            returned as it is, and books nothing).
        """
        name = self.providers.budget(domain)
        state = self.state(name)
        if state.suspended(now):
            return state.suspended_until - now
        slot = max(now, state.paused_until, self._next_send.get(name, 0.0))
        if max_wait is not None and slot - now > max_wait:
            return slot - now
        rate = self.rate_share(name)
        if rate > 0:
            self._next_send[name] = slot + 60.0 / rate
        sends = self._sends.setdefault(name, deque(maxlen=_RECENT_SENDS))
        sends.append(slot)
        return slot - now

    def observed_rate(self, name: str) -> float:
        """Messages per minute this node sent to provider ``name`` lately (0: unknown)."""
        sends = self._sends.get(name)
        if not sends or len(sends) < 2 or sends[-1] <= sends[0]:
            return 0.0
        return (len(sends) - 1) * 60.0 / (sends[-1] - sends[0])

    def observe(self, domain: str, result: AttemptResult, now: float) -> PolicyAction | None:
        """Adapt the provider of ``domain`` to one attempt's result.

        Returns:
            the action taken, if any.
        """
        signal = signal_of(result)
        if signal is Signal.neutral:
            return None
        name = self.providers.budget(domain)
        state = self.state(name)
        cause = (result.reason.value if isinstance(result.reason, Reason)
                 else str(result.reason or signal.value))
        if signal is Signal.success:
            return self._success(state, now)
        state.streak = 0
        if signal is Signal.throttle:
            if now < state.paused_until:
                return None  # the same pushback, answered to sends already under way
            return self._cut(state, now, cause, {"refusals": 1}, pause=True)
        if state.suspended(now):
            return None
        return self._suspend(state, now, cause, {"refusals": 1})

    def late(self, name: str, counts: LateCounts, now: float) -> PolicyAction | None:
        """Adapt provider ``name`` to its rolling window of late outcomes.

        Acts once per worsening: a window that stays as bad does not cut again.

        Returns:
            the action taken, if any.
        """
        s = self.settings
        if counts.deliveries < s.window_min_deliveries:
            return None
        evidence = {"deliveries": counts.deliveries, "sender_bounces": counts.sender_bounces,
                    "complaints": counts.complaints}
        acted_bounces, acted_complaints = self._late_acted.get(name, (0, 0))
        state = self.state(name)
        if counts.complaints / counts.deliveries > s.complaint_rate \
                and counts.complaints > acted_complaints:
            self._late_acted[name] = (acted_bounces, counts.complaints)
            if state.suspended(now):
                return None
            return self._suspend(state, now, "complaint_rate", evidence)
        if counts.sender_bounces / counts.deliveries > s.late_block_rate \
                and counts.sender_bounces > acted_bounces:
            self._late_acted[name] = (counts.sender_bounces, acted_complaints)
            return self._cut(state, now, "late_sender_bounces", evidence, pause=False)
        return None

    # -- the actions -------------------------------------------------------------

    def _cut(self, state: ProviderState, now: float, cause: str,
             evidence: Mapping[str, int], *, pause: bool) -> PolicyAction:
        s = self.settings
        before = state.describe()
        # An unlimited budget is cut from what it was taking (never from less
        # than _FALLBACK_RATE: two sends a minute apart say nothing of a rate).
        base = state.rate if state.rate > 0 else max(
            self.observed_rate(state.provider) * self.nodes, _FALLBACK_RATE)
        if state.ceiling <= 0:
            state.ceiling = base  # an unlimited provider ramps back to what it took
        state.rate = max(float(s.min_rate_per_minute), base * s.throttle_factor)
        if pause:
            state.paused_until = now + s.throttle_pause
        state.cause = cause
        state.updated_at = now
        return PolicyAction(now, "provider", state.provider, PolicyVerb.throttle.value,
                            cause, before,
                            state.describe(), evidence,
                            until=state.paused_until if pause else None)

    def _suspend(self, state: ProviderState, now: float, cause: str,
                 evidence: Mapping[str, int]) -> PolicyAction:
        before = state.describe()
        state.suspended_until = now + self.settings.suspend_seconds
        state.cause = cause
        state.updated_at = now
        return PolicyAction(now, "provider", state.provider, PolicyVerb.suspend.value, cause,
                            before, "suspended", evidence, until=state.suspended_until)

    def _success(self, state: ProviderState, now: float) -> PolicyAction | None:
        state.streak += 1
        s = self.settings
        configured = float(self.providers.named(state.provider).rate_per_minute)
        if state.rate <= 0 or (configured > 0 and state.rate >= configured) \
                or state.streak < s.ramp_after:
            return None
        streak, state.streak = state.streak, 0
        before = state.describe()
        rate = state.rate * s.ramp_factor
        action = PolicyVerb.ramp
        if configured > 0:
            rate = min(rate, configured)
            action = PolicyVerb.restore if rate >= configured else PolicyVerb.ramp
        elif rate >= state.ceiling:
            rate, action = 0.0, PolicyVerb.restore  # back to no limit
        state.rate = rate
        state.cause = "success"
        state.updated_at = now
        return PolicyAction(now, "provider", state.provider, action.value, "success", before,
                            state.describe(), {"successes": streak})
