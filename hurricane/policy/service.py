"""The loop that closes it: provider state to and from the store, late
outcomes per provider, and the breaker per mailing (issue 19).

:class:`PolicyService` runs on every node that delivers. Every
``[delivery.adaptive] interval`` seconds it:

1. says this node is alive and counts the live nodes (each node takes its
   share of a provider's rate);
2. adopts provider states another node stored since (the newest wins), and
   stores the actions taken here (``policy`` events);
3. counts each provider's rolling window of late sender-side bounces and
   complaints, and adapts (cut or suspend);
4. gives back the queued rows of suspended providers, and wakes queues whose
   budget has room again;
5. looks at the mailings that had outcomes: a breaker that trips holds the
   mailing's recipients that are not on a connection yet.

A breaker also trips between two rounds, as soon as this node's own results
cross a threshold (:class:`~hurricane.policy.breaker.Tally`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hurricane.config import DeliveryConfig
from hurricane.model import AttemptResult, Delivery
from hurricane.outbound.providers import ProviderGate
from hurricane.outbound.queue import OutboundService
from hurricane.outcome import State
from hurricane.policy.breaker import Evidence, Tally, judge
from hurricane.policy.providers import LateCounts, PolicyAction
from hurricane.store.policy import PolicyStore

__all__ = ["PolicyService", "PolicySettings"]

log = Logger()

#: Mailings whose store counts are read in one round at most.
MAX_MAILINGS_PER_ROUND = 50
#: Seconds between two reads of one mailing's store counts (a count reads all
#: its rows; this node's own results trip the breaker between them).
RECHECK = 30.0


@dataclass(frozen=True)
class PolicySettings:
    """What the policy loop needs of the configuration."""

    node_id: str
    delivery: DeliveryConfig


class PolicyService(Service):
    """Provider state sharing, late-outcome adaptation and mailing breakers.

    Args:
        store: the policy store.
        outbound: the scheduler (its pool's queues, its results).
        gate: the provider budgets the pool uses.
        settings: node id and ``[delivery]``.
        clock: the round timer.
        on_action: called with every action stored (webhooks, accounting log).
    """

    name = "policy"

    def __init__(self, store: PolicyStore, outbound: OutboundService, gate: ProviderGate,
                 settings: PolicySettings, clock: IReactorTime,
                 on_action: Callable[[PolicyAction], None] = lambda action: None) -> None:
        self._store = store
        self._outbound = outbound
        self._gate = gate
        self._settings = settings
        self._clock = clock
        self._on_action = on_action
        self._pending: list[PolicyAction] = []
        self._tally = Tally()
        #: Mailings whose breaker tripped once (held, released, cancelled): never again.
        self._tripped: set[str] = set()
        #: Mailings with results since the last round (keys lower-cased -> id).
        self._active: dict[str, str] = {}
        self._holding: set[str] = set()
        #: When each mailing's store counts may be read again.
        self._next_check: dict[str, float] = {}
        #: Mailings held now (keys lower-cased): claimed rows of theirs are held too.
        self.held: set[str] = set()
        self._event_mark: int | None = None
        self._call: IDelayedCall | None = None
        self._round: Deferred[None] | None = None
        self.rounds = 0
        outbound.observers.append(self.observe)
        outbound.intake = self.intake

    # -- hooks ------------------------------------------------------------------

    def action(self, action: PolicyAction) -> None:
        """An action taken on this node: stored at the next round (soon)."""
        log.info("policy: {scope} {subject} {action} ({cause}): {before} -> {after}",
                 scope=action.scope, subject=action.subject, action=action.action,
                 cause=action.cause, before=action.before, after=action.after)
        self._pending.append(action)
        self._schedule(0.0)

    def observe(self, delivery: Delivery, result: AttemptResult) -> None:
        """One attempt's result: count it for its mailing's breaker."""
        breaker = self._settings.delivery.circuit_breaker
        mailing = delivery.mailing_id
        if not mailing or not breaker.enabled:
            return
        key = mailing.lower()
        if key in self._tripped or key in self._holding:
            return
        self._active[key] = mailing
        evidence = self._tally.add(mailing, result)
        if evidence is not None and judge(mailing, evidence, breaker,
                                          self._clock.seconds()) is not None:
            self._holding.add(key)
            d = Deferred.fromCoroutine(self._check_mailing(mailing, evidence))
            d.addErrback(lambda f: log.failure("checking mailing {mailing} failed", f,
                                               mailing=mailing))

    def intake(self, deliveries: Sequence[Delivery]) -> Sequence[Delivery]:
        """Keep claimed rows of held mailings from being sent, and hold them."""
        if not self.held:
            return deliveries
        keep: list[Delivery] = []
        hold: dict[str, list[Delivery]] = {}
        for d in deliveries:
            key = d.mailing_id.lower() if d.mailing_id else None
            if key is not None and key in self.held:
                hold.setdefault(d.mailing_id or "", []).append(d)
            else:
                keep.append(d)
        for mailing, rows in hold.items():
            pending = Deferred.fromCoroutine(self._hold_rows(mailing,
                                                             [r.delivery_id for r in rows]))
            pending.addErrback(lambda f: log.failure("holding rows failed", f))
        return keep

    async def _hold_rows(self, mailing: str, ids: list[int]) -> None:
        held = await self._store.hold_rows(mailing, ids, self._settings.node_id,
                                           self._clock.seconds())
        if held < 0:
            self.held.discard(mailing.lower())  # released meanwhile: the rows come again
            self._outbound.wake()

    # -- service ----------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Start the rounds."""
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule(0.0)

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted API)
        """Stop the rounds; the round under way finishes (its actions are stored)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        d: Deferred[None] = Deferred()
        if self._round is None:
            d.callback(None)
        else:
            self._round.addBoth(lambda _: d.callback(None))
        return d

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= self._clock.seconds() + delay:
                return
            call.cancel()
        self._call = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        if self._round is not None:
            self._schedule(self._settings.delivery.adaptive.interval)
            return
        d = Deferred.fromCoroutine(self.run_round())

        def done(result: object) -> None:
            self._round = None
            self._schedule(self._settings.delivery.adaptive.interval)

        d.addErrback(lambda f: log.failure("policy round failed", f))
        d.addBoth(done)
        self._round = d

    # -- one round ----------------------------------------------------------------

    async def run_round(self) -> None:
        """One round (see the module's description)."""
        self.rounds += 1
        now = self._clock.seconds()
        adaptive = self._settings.delivery.adaptive
        limiter = self._gate.limiter
        limiter.nodes = await self._store.heartbeat(self._settings.node_id, now,
                                                    3 * adaptive.interval + 5)
        await self._flush()
        for stored in await self._store.provider_states():
            limiter.adopt(stored)
        if adaptive.enabled:
            await self._late_outcomes(now)
        await self._flush()
        await self._release_suspended(now)
        self._outbound.pool.pump_all()
        self.held = {b.mailing_id.lower() for b in await self._store.breakers(1000)
                     if b.state == State.held.value}
        await self._check_mailings()

    async def _flush(self) -> None:
        """Store the actions taken since the last flush, and the states they changed."""
        actions, self._pending = self._pending, []
        if not actions:
            return
        limiter = self._gate.limiter
        names = {a.subject for a in actions if a.scope == "provider"}
        try:
            await self._store.save_provider_states([limiter.state(n) for n in sorted(names)])
            await self._store.record_actions(actions, self._settings.node_id)
        except Exception:
            self._pending[:0] = actions
            raise
        for a in actions:
            self._on_action(a)

    async def _late_outcomes(self, now: float) -> None:
        adaptive = self._settings.delivery.adaptive
        providers = self._gate.limiter.providers
        totals: dict[str, list[int]] = {}
        for w in await self._store.provider_windows(now - adaptive.window):
            providers.learn(w.domain, w.host)
            name = providers.budget(w.domain)
            t = totals.setdefault(name, [0, 0, 0])
            t[0] += w.deliveries
            t[1] += w.sender_bounces
            t[2] += w.complaints
        for name, (deliveries, bounces, complaints) in sorted(totals.items()):
            action = self._gate.limiter.late(name, LateCounts(deliveries, bounces, complaints),
                                             now)
            if action is not None:
                self.action(action)

    async def _release_suspended(self, now: float) -> None:
        limiter = self._gate.limiter
        suspended = {s.provider for s in limiter.states() if s.suspended(now)}
        if not suspended:
            return
        providers = limiter.providers

        def wanted(d: Delivery) -> bool:
            return providers.budget(d.domain) in suspended

        count = await self._outbound.release_where(wanted, "provider suspended")
        if count:
            log.info("policy: gave back {count} deliveries of suspended providers", count=count)

    async def _check_mailings(self) -> None:
        """The breakers of the mailings with outcomes since the last round."""
        if not self._settings.delivery.circuit_breaker.enabled:
            return
        if self._event_mark is None:
            self._event_mark = await self._store.last_event_id()
        late, self._event_mark = await self._store.mailings_with_outcomes(self._event_mark)
        candidates = dict(self._active)
        self._active.clear()
        for mailing in late:
            candidates.setdefault(mailing.lower(), mailing)
        now = self._clock.seconds()
        due = [(k, m) for k, m in candidates.items()
               if k not in self._tripped and k not in self._holding
               and self._next_check.get(k, 0.0) <= now]
        for key, mailing in due[:MAX_MAILINGS_PER_ROUND]:
            self._next_check[key] = now + RECHECK
            self._holding.add(key)
            await self._check_mailing(mailing, Evidence(0, 0, 0))
        for key, mailing in due[MAX_MAILINGS_PER_ROUND:]:
            self._active[key] = mailing  # next round
        if len(self._next_check) > 10_000:
            self._next_check = {k: t for k, t in self._next_check.items() if t > now}

    async def _check_mailing(self, mailing: str, local: Evidence) -> None:
        """Trip the breaker of ``mailing`` if its counts (ours and the store's) say so."""
        key = mailing.lower()
        try:
            if await self._store.breaker(mailing) is not None:
                self._tripped.add(key)
                self._tally.forget(mailing)
                return
            counts = await self._store.mailing_counts(mailing)
            evidence = local.merge(Evidence(counts.decided, counts.hard, counts.complaints))
            now = self._clock.seconds()
            action = judge(mailing, evidence, self._settings.delivery.circuit_breaker, now)
            if action is None:
                return
            await self.hold(mailing, action)
        finally:
            self._holding.discard(key)

    async def hold(self, mailing: str, action: PolicyAction) -> int:
        """Hold a mailing: its rows queued here come out of the pool, and every
        pending row nobody is sending moves to ``held``.

        Returns:
            rows held (-1: its breaker had tripped before).
        """
        key = mailing.lower()
        taken = self._outbound.take_back_where(
            lambda d: d.mailing_id is not None and d.mailing_id.lower() == key)
        ids = [d.delivery_id for d in taken]
        held = await self._store.hold_mailing(mailing, self._clock.seconds(),
                                              self._settings.node_id, ids, action)
        self._tripped.add(key)
        self._tally.forget(mailing)
        if held >= 0:
            self.held.add(key)
        if held < 0:
            return held  # the store released the rows taken: they come again
        log.warn("policy: mailing {mailing} held ({cause}): {held} recipients",
                 mailing=mailing, cause=action.cause, held=held)
        self._on_action(action)
        return held
