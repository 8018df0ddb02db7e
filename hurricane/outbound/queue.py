"""The delivery scheduler's claim loop: what is due, leases, wake-ups, room.

:class:`OutboundService` leases due rows from the store (``claim_due``),
woken by :meth:`OutboundService.wake` after each enqueue (many wakes
coalesce into one claim) and by a ``poll_interval`` timer otherwise, and
composes the parts that do the rest, each an object with its own tests:

- :class:`~hurricane.outbound.pool.DestinationPool`: per-destination queues,
  workers, connection reuse, per-destination limits and rate, idle dismissal;
- :class:`~hurricane.outbound.dispatch.Dispatcher`: one transaction per
  batch, each recipient's answer judged by
  :func:`hurricane.decisions.decide_attempt` (the queue decides nothing);
- :class:`~hurricane.outbound.bodies.BodyCache`: bodies loaded and signed
  once, fresh ones kept after enqueue;
- :class:`~hurricane.outbound.results.ResultWriter`: results batched into
  ``record_attempts``.

At most ``max_in_flight`` deliveries are held at once, from their claim until
their result is written (so a crash sends at most that many twice): a result
not written yet keeps its delivery's slot, and its write wakes a claim loop
that found no room. Destinations whose queue is already long are excluded
from the claim so one big domain cannot hold every slot (and leases do not
run out while rows wait in memory). When every slot is taken anyway (one
claim of a retry wave), rows waiting for a busy destination are traded for
due work of other destinations (:meth:`OutboundService._make_room`), so a
slow receiver does not hold up everyone else.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hurricane.config import Config, DeliveryConfig
from hurricane.decisions import Classifier
from hurricane.model import AttemptResult, Delivery
from hurricane.outbound.bodies import BodyCache, BodyCacheSettings, Signer
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.dispatch import AttemptJudge, Dispatcher, StreamHeaders
from hurricane.outbound.pool import IDLE_GRACE, DestinationPool, PoolSettings
from hurricane.outbound.providers import ProviderGate
from hurricane.outbound.results import RECORD_DELAY, ResultWriter, WriterSettings
from hurricane.outbound.retry import RetryPolicy
from hurricane.store.interface import IOutcomeStore, StoreUnavailable
from hurricane.verp import VerpCodec

__all__ = ["Classifier", "OutboundService", "OutboundSettings"]

log = Logger()

#: Seconds ``stopService`` waits for transactions under way.
SHUTDOWN_GRACE = 30.0
#: Seconds from "new mail committed" to the claim it causes. A submission
#: session commits one message every few milliseconds; claiming each alone
#: costs a store transaction, a body load and a record per message, all on
#: the reactor thread the submissions need. 10 ms let a claim take several
#: (bench/outbound.py, concurrency 1: ~290 -> ~400 delivered msg/s); 30 ms
#: takes a few more (concurrency 1: -5 % CPU per message; concurrency 10:
#: -6.5 %; 60 ms gained nothing more) and still adds nothing a mail relay's
#: users would notice.
WAKE_DELAY = 0.03


@dataclass(frozen=True)
class OutboundSettings:
    """Everything the scheduler and its parts are tuned by.

    Attributes:
        node_id: this node's name in leases.
        delivery: ``[delivery]``.
        shutdown_grace: seconds ``stopService`` lets transactions finish.
        idle_grace: seconds a connection whose queue ran empty stays open.
        wake_delay: seconds between a wake (new mail committed) and the claim
            it causes; wakes in between share the claim. The server uses
            :data:`WAKE_DELAY`; 0 claims at once (the tests' clock).
        record_delay: seconds a finished attempt's result waits for others
            to share its ``record_attempts`` call. The server uses
            :data:`~hurricane.outbound.results.RECORD_DELAY`; 0 records in
            the next reactor turn.
        bodies: the bounds of the bodies kept after enqueue.
        stream_headers: a stream's per-recipient headers (issue 20), or None.
    """

    node_id: str
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    shutdown_grace: float = SHUTDOWN_GRACE
    idle_grace: float = IDLE_GRACE
    wake_delay: float = 0.0
    record_delay: float = 0.0
    bodies: BodyCacheSettings = field(default_factory=BodyCacheSettings)
    #: Adds a stream's per-recipient headers (a bulk stream's List-Unsubscribe,
    #: Feedback-ID) before signing; its streams go one recipient per transaction.
    stream_headers: StreamHeaders | None = None
    #: (stream, IP pool) for every stream that names its pool (issue 21 via issue 20).
    stream_pools: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_server(cls, config: Config) -> OutboundSettings:
        """The settings of the server process (with its wake and record delays).

        Args:
            config: the whole configuration.

        Returns:
            the settings.
        """
        return cls(node_id=config.node_id, delivery=config.delivery, wake_delay=WAKE_DELAY,
                   record_delay=RECORD_DELAY,
                   stream_pools=tuple((s.name, s.pool) for s in config.stream_set if s.pool))

    @property
    def pool(self) -> PoolSettings:
        """The destination pool's settings."""
        return dataclasses.replace(PoolSettings.from_config(self.delivery, self.idle_grace),
                                   stream_pools=dict(self.stream_pools))

    @property
    def writer(self) -> WriterSettings:
        """The result writer's settings (a failed write waits a poll interval)."""
        return WriterSettings(delay=self.record_delay,
                              retry_interval=self.delivery.poll_interval)


class OutboundService(Service):
    """Delivers queued mail and records every attempt.

    Args:
        store: the durable queue and outcome store.
        dialer: opens sessions to destinations (resolver, connector, TLS policy).
        codec: makes the VERP return path of each delivery.
        classifier: turns a refusal into a reason word.
        settings: limits, delays and the node id.
        clock: the clock for timers, durations and record times.
        dkim: signs messages, or None for no signing.
        rng: jitter and shuffles; seed it in tests.

    Provider budgets (issue 19) come with :meth:`use_gate`, before the start.
    """

    name = "outbound"

    def __init__(
        self, store: IOutcomeStore, dialer: Dialer, codec: VerpCodec, classifier: Classifier,
        settings: OutboundSettings, clock: IReactorTime, dkim: Signer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._config = settings.delivery
        self._node_id = settings.node_id
        self._clock = clock
        self._stopping = False
        self._claim_call: IDelayedCall | None = None
        self._claiming = False
        self._wake_again = False
        #: True when a claim found no room: the write of results triggers one.
        self._starved = False
        self._in_flight: dict[int, Delivery] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self.gate: ProviderGate | None = None
        #: Called with every attempt's delivery and result (the policy service's breaker).
        self.observers: list[Callable[[Delivery, AttemptResult], None]] = []
        #: Sees every claim first and returns what to send (the policy service
        #: keeps the rows of held mailings, and holds them in the store).
        self.intake: Callable[[Sequence[Delivery]], Sequence[Delivery]] | None = None

        self.bodies = BodyCache(store, clock, dkim, settings.bodies)
        self.writer = ResultWriter(store, clock, settings.writer,
                                   on_written=self._written, on_settled=self._check_idle)
        judge = AttemptJudge(classifier, RetryPolicy.from_config(self._config),
                             self._config.max_age, self._node_id,
                             rng if rng is not None else random.Random())
        headers = settings.stream_headers
        self._dialer = dialer
        self._dispatcher = Dispatcher(self.bodies, codec, judge, clock, self._finish,
                                      self._give_back, headers)
        #: The pool's settings: a bulk stream's decorated messages go one recipient
        #: per transaction (issue 20); use_gate builds the pool again with them.
        self._pool_settings = dataclasses.replace(
            settings.pool,
            single_streams=headers.decorated if headers is not None else frozenset())
        self.pool = DestinationPool(dialer, self._dispatcher, clock, self._pool_settings,
                                    on_settled=self._check_idle)

    def use_gate(self, gate: ProviderGate) -> None:
        """Draw on provider budgets that adapt (issue 19); call before the start.

        Args:
            gate: the budgets; it hears every attempt's result.
        """
        if self.running:
            raise RuntimeError("use_gate after the start")
        self.gate = gate
        self.pool = DestinationPool(self._dialer, self._dispatcher, self._clock,
                                    self._pool_settings, on_settled=self._check_idle, gate=gate)

    # -- service ---------------------------------------------------------------

    def startService(self) -> Deferred[None]:  # noqa: N802 (Twisted API)
        """Take back this node's leases from before a restart, then start claiming.

        The node id is stable across restarts (``[server] node_id``, or host
        name plus data directory), so rows this node had claimed when it was
        killed are due again at once rather than after ``lease_seconds``.
        Those that were in flight at the kill may be sent twice: delivery is
        at least once, never lost.
        """
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self.pool.start()
        self.writer.start()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        try:
            released = await self._store.release_owner(self._node_id)
        except Exception:
            log.failure("could not release the leases of {node}", node=self._node_id)
        else:
            if released:
                log.info("took back {count} leases held by {node} before a restart",
                         count=released, node=self._node_id)
        if not self._stopping:
            self._schedule_claim(0)

    def stopService(self) -> Deferred[None]:  # noqa: N802 (Twisted API)
        """Stop claiming, let transactions under way finish (for ``shutdown_grace``
        seconds), write pending results, give back unstarted leases, close every
        connection and cancel every timer.

        Returns:
            Fires when all of that is done; never fails.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        d = Deferred.fromCoroutine(self._stop())
        d.addErrback(lambda f: log.failure("outbound stop failed", f))
        return d

    async def _stop(self) -> None:
        grace = self._settings.shutdown_grace
        self._stopping = True
        self.writer.stop_retrying()
        self._cancel_call(self._claim_call)
        self._claim_call = None

        # Deliveries not started yet go back to the store at once; workers
        # find their queues empty and close their connections.
        unstarted = self.pool.stop()
        if not await self._wait(self._idle(), grace):
            stuck = self.pool.abandon()
            log.warn(
                "outbound stop: {count} connections still busy after {grace}s; "
                "their deliveries stay leased until the lease runs out",
                count=stuck, grace=grace,
            )
        await self._write_last_results()
        self.bodies.clear_fresh()
        for delivery in unstarted:
            self._forget(delivery)
        if unstarted:
            await self._release_at_stop(unstarted)
        # Idle connections were dismissed at the start of the stop: let
        # their QUIT finish (bounded by the client's QUIT timeout) so no
        # socket outlives the service.
        await self._wait(self.pool.close_all(), grace)

    async def _write_last_results(self) -> None:
        """Write the results still waiting (bounded by the grace period)."""
        self.writer.cancel()
        if self.writer.pending:
            await self._wait(Deferred.fromCoroutine(self.writer.write()),
                             self._settings.shutdown_grace)
        if self.writer.pending:
            # the rows stay leased and come back after the lease: sent twice
            # at worst, never lost
            log.warn("outbound stop: {count} attempt results could not be recorded",
                     count=self.writer.pending)
        self.writer.cancel()

    async def _release_at_stop(self, unstarted: Sequence[Delivery]) -> None:
        ids = [d.delivery_id for d in unstarted]
        try:
            ok = await self._wait(
                Deferred.fromCoroutine(self._store.release(ids, self._node_id)),
                self._settings.shutdown_grace,
            )
        except Exception:
            log.failure("outbound stop: releasing {count} leases failed", count=len(ids))
        else:
            if ok:
                log.info("outbound stop: released {count} unstarted deliveries",
                         count=len(ids))

    async def _wait(self, d: Deferred[object] | Deferred[None], timeout: float) -> bool:
        """Wait for ``d`` at most ``timeout`` seconds on our clock; False on timeout."""
        d.addTimeout(timeout, self._clock)
        try:
            await d
        except (TimeoutError, CancelledError):
            return False
        return True

    def _idle(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if self.pool.busy or self._claiming or self.writer.busy:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    # -- claim loop ------------------------------------------------------------

    def wake(self, message_pk: int | None = None, body: bytes | None = None) -> None:
        """New mail is due: claim soon. Cheap; many calls make one claim.

        Args:
            message_pk: the key of the message just committed (with ``body``).
            body: that message's raw body as stored. It is kept (within the
                body cache's bounds) for the message's first delivery, which
                then does not read it back from the store.
        """
        if not self.running or self._stopping:
            return
        if message_pk is not None and body is not None:
            self.bodies.keep_fresh(message_pk, body)
        if self._claiming:
            self._wake_again = True
            return
        self._schedule_claim(self._settings.wake_delay)

    def _schedule_claim(self, delay: float) -> None:
        if not self.running or self._stopping:
            return
        call = self._claim_call
        if call is not None and call.active():
            if call.getTime() <= self._clock.seconds() + delay:
                return  # an earlier claim is already scheduled: coalesce
            call.cancel()
        self._claim_call = self._clock.callLater(delay, self._claim_tick)

    def _claim_tick(self) -> None:
        self._claim_call = None
        if self._claiming:
            self._wake_again = True
            return
        d = Deferred.fromCoroutine(self._claim())
        d.addErrback(lambda f: log.failure("outbound claim loop failed", f))

    async def _claim(self) -> None:
        self._claiming = True
        self._wake_again = False
        self.bodies.trim()
        failed = False
        try:
            capacity = self._room()
            if capacity <= 0:
                self._starved = True
                if len(self._in_flight) >= self._config.max_in_flight:
                    await self._make_room()
                # else the results' write frees the room, and claims then
                return
            try:
                deliveries = await self._store.claim_due(
                    self._clock.seconds(), self._node_id, self._config.lease_seconds,
                    capacity, exclude_domains=self._excluded(),
                )
            except StoreUnavailable:
                log.failure("claiming due deliveries failed; retrying in {delay}s",
                            delay=self._config.poll_interval)
                failed = True
                return
            except Exception:
                log.failure("claiming due deliveries failed unexpectedly; retrying in {delay}s",
                            delay=self._config.poll_interval)
                failed = True
                return
            if not self.running or self._stopping:
                # stopped while the claim was on its way: give them back
                await self._release(deliveries, "claimed during stop")
                return
            if len(deliveries) >= capacity:
                self._starved = True
            self._accept(deliveries)
        finally:
            self._claiming = False
            self._after_claim(failed)

    def _after_claim(self, failed: bool) -> None:
        """Schedule the next claim: at once for room freed meanwhile, after the
        wake delay for mail woken meanwhile, else at the poll interval."""
        if self._starved and not failed and self._room() > 0:
            # Results were written while the claim was on its way: their
            # write found no starved loop to wake, so claim for the room.
            self._starved = False
            self._schedule_claim(0)
        elif self._wake_again and not self._starved and not failed:
            self._schedule_claim(self._settings.wake_delay)
        else:
            self._schedule_claim(self._config.poll_interval)
        self._check_idle()

    def _excluded(self) -> list[str]:
        """Domains left out of the next claim: queues long enough already, and
        the known domains of suspended providers."""
        excluded = self.pool.saturated()
        return excluded + self.gate.suspended_domains() if self.gate is not None else excluded

    def _room(self) -> int:
        """Deliveries this node may still claim.

        A result not written yet still counts: until it is, a crash would
        send that mail again, and ``max_in_flight`` is also the bound on
        what a crash can send twice.
        """
        return self._config.max_in_flight - len(self._in_flight) - self.writer.pending

    def _written(self) -> None:
        """A batch of results was written: its slots are free for a starved claim loop."""
        if self._starved:
            self._starved = False
            self._schedule_claim(0)

    async def _make_room(self) -> None:
        """Every slot is taken: trade rows waiting here for due work of other domains.

        One claim can fill ``max_in_flight`` with a single slow destination
        (a retry wave, a message with many recipients there); without this,
        every other destination waits until that one drains. Rows that are
        waiting (not being sent) are given back, newest first from the
        longest queues, for as many rows of other domains as the store has
        due; ``max_in_flight`` is never exceeded for longer than the claim.
        """
        waiting = self.pool.waiting()
        if not waiting or not self.running or self._stopping:
            return
        want = min(waiting, max(1, self._config.max_in_flight // 10))
        try:
            others = await self._store.claim_due(
                self._clock.seconds(), self._node_id, self._config.lease_seconds, want,
                exclude_domains=self.pool.domains(),
            )
        except Exception:
            log.failure("claiming work for other destinations failed; retrying in {delay}s",
                        delay=self._config.poll_interval)
            return
        others = [d for d in others if d.delivery_id not in self._in_flight]
        if not others:
            return
        if not self.running or self._stopping:
            await self._release(others, "claimed during stop")
            return
        victims = self.pool.take_back(len(others))  # fewer when sends started meanwhile
        for delivery in victims:
            self._forget(delivery)
        take, back = others[:len(victims)], others[len(victims):]
        log.info("made room for {count} deliveries to other destinations",
                 count=len(take))
        self._accept(take)
        await self._release([*victims, *back], "making room for other destinations")

    def _accept(self, deliveries: Sequence[Delivery]) -> None:
        """Hold claimed deliveries (a slot and a body reference each) and queue them."""
        if self.intake is not None:
            deliveries = self.intake(deliveries)
        fresh = []
        for delivery in deliveries:
            if delivery.delivery_id in self._in_flight:
                continue  # already ours (a lease renewed under us)
            self._in_flight[delivery.delivery_id] = delivery
            self.bodies.hold(delivery.message_pk)
            fresh.append(delivery)
        self.pool.add(fresh)

    # -- deliveries leaving flight --------------------------------------------

    def _finish(self, delivery: Delivery, result: AttemptResult) -> None:
        """Log one attempt, queue its result for writing, free its body reference.

        A delivery no longer in flight (recorded already, or given back) is skipped.
        """
        if delivery.delivery_id not in self._in_flight:
            return
        if self.gate is not None:
            self.gate.observe(delivery.domain, result)
            delay = self.gate.retry_delay(result)
            if delay is not None and result.next_attempt_at is not None:
                # throttled: due again after the provider's pause, not after
                # the message's own backoff
                result = replace(result, next_attempt_at=min(result.next_attempt_at,
                                                              result.at + delay))
        for observer in self.observers:
            observer(delivery, result)
        log.info(
            "delivery {delivery_id} to {recipient} via {host}: {state} {code} {text}",
            delivery_id=delivery.delivery_id, recipient=delivery.recipient,
            host=result.remote_host or "-", state=result.state.value, code=result.code or "",
            text=result.text or "", reason=result.reason and result.reason.value,
            status=result.status,
            queue_id=delivery.queue_id, remote_ip=result.remote_ip, tls=result.tls,
            duration=result.duration,
        )
        # The slot stays taken until the result is written (see _room):
        # the write, not this, wakes a starved claim loop.
        self.writer.add(result)
        self._forget(delivery)

    def _forget(self, delivery: Delivery) -> None:
        if self._in_flight.pop(delivery.delivery_id, None) is not None:
            self.bodies.release(delivery.message_pk)

    def take_back_where(self, wanted: Callable[[Delivery], bool]) -> list[Delivery]:
        """The ``wanted`` deliveries waiting in the pool (not on a connection),
        out of flight; the caller releases their leases (or holds them)."""
        taken = self.pool.take_back_where(wanted)
        for delivery in taken:
            self._forget(delivery)
        return taken

    async def release_where(self, wanted: Callable[[Delivery], bool], why: str) -> int:
        """Give back the leases of the ``wanted`` waiting deliveries; how many."""
        taken = self.take_back_where(wanted)
        await self._release(taken, why)
        return len(taken)

    async def _give_back(self, deliveries: Sequence[Delivery], why: str) -> None:
        """Return leases without an attempt (the rows come again)."""
        for delivery in deliveries:
            self._forget(delivery)
        await self._release(deliveries, why)

    async def _release(self, deliveries: Sequence[Delivery], why: str) -> None:
        if not deliveries:
            return
        try:
            await self._store.release([d.delivery_id for d in deliveries], self._node_id)
        except Exception:
            # the leases run out by themselves; nothing is lost
            log.failure("releasing {count} leases ({why}) failed", count=len(deliveries),
                        why=why)

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _cancel_call(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    def stats(self) -> dict[str, object]:
        """A snapshot for the admin console and metrics.

        Returns:
            ``in_flight``, ``unrecorded`` results, ``stopping``, and per
            destination domain its open ``connections``, ``idle`` ones,
            ``workers``, ``queued`` deliveries and ``transactions`` sent
            since it was last idle.
        """
        return {
            "in_flight": len(self._in_flight),
            "unrecorded": self.writer.pending,
            "stopping": self._stopping,
            "destinations": self.pool.stats(),
        }
