"""The delivery scheduler: claims due deliveries, sends them, records what happened.

How a delivery moves through this module:

1. The claim loop leases due rows from the store (``claim_due``), woken by
   :meth:`OutboundService.wake` after each enqueue (many wakes coalesce into
   one claim) and by a ``poll_interval`` timer otherwise. At most
   ``max_in_flight`` deliveries are held at once, from their claim until
   their result is written (so a crash sends at most that many twice);
   destinations whose queue is
   already long are excluded from the claim so one big domain cannot hold
   every slot (and leases do not run out while rows wait in memory). When
   every slot is taken anyway (one claim of a retry wave), rows waiting for
   a busy destination are traded for due work of other destinations
   (``_make_room``), so a slow receiver does not hold up everyone else.
2. Claimed rows go to a FIFO queue per destination domain. The store hands
   out new mail before retries, and the FIFO keeps that order.
3. Per destination, a few workers (``max_connections_per_destination``) each
   hold one connection and send transactions on it until the queue is empty
   or ``messages_per_connection`` is reached (the client sends RSET between
   transactions). A connection whose queue runs empty stays open, idle, for
   ``idle_grace`` seconds; new claims for its destination go to idle
   connections before any new one is opened. One worker starts first; more
   start only once a connection has worked, so a dead destination costs
   one failed round, not five.
4. Each result becomes an :class:`~hurricane.model.AttemptResult`; results
   are written in batches with ``record_attempts``.

What each reply, broken session, failed connection or DNS answer does to a
delivery is not decided here: :func:`hurricane.decisions.decide_attempt`
decides it (2xx after the dot *delivered*, a classified 5xx *failed*, a 4xx
or a connection problem *deferred*, or *expired* past ``max_age``...); this
module adds the retry policy's next time and records the result.
"""

from __future__ import annotations

import random
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.config import DeliveryConfig
from hurricane.decisions import (
    Attempt,
    Classifier,
    LocalFailure,
    RecipientAnswer,
    SessionFailure,
    decide_attempt,
)
from hurricane.model import AttemptResult, Delivery
from hurricane.outbound.dkim import DkimSigner
from hurricane.outbound.interface import (
    ConnectionFailed,
    IConnector,
    ISMTPConnection,
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
)
from hurricane.outbound.mx import Destination, DestinationError, MXResolver
from hurricane.outbound.prepare import normalise_message, prepare_message, wire_address
from hurricane.outbound.retry import RetryPolicy, expired
from hurricane.outcome import Phase, Reason, TlsPolicy
from hurricane.store.interface import IOutcomeStore, StoreUnavailable
from hurricane.verp import VerpCodec

__all__ = ["Classifier", "OutboundService"]

log = Logger()

#: Addresses (MX hosts times their A/AAAA records) tried for one destination in one round.
MAX_ADDRESSES_PER_ROUND = 10
#: Results written in one ``record_attempts`` call at most.
RECORD_BATCH = 200
#: Seconds ``stopService`` waits for transactions under way.
SHUTDOWN_GRACE = 30.0
#: Seconds an idle connection stays open waiting for more mail to its destination.
IDLE_GRACE = 2.0
#: Seconds from "new mail committed" to the claim it causes. A submission
#: session commits one message every few milliseconds; claiming each alone
#: costs a store transaction, a body load and a record per message, all on
#: the reactor thread the submissions need. 10 ms let a claim take several
#: (bench/outbound.py, concurrency 1: ~290 -> ~400 delivered msg/s); 30 ms
#: takes a few more (concurrency 1: -5 % CPU per message; concurrency 10:
#: -6.5 %; 60 ms gained nothing more) and still adds nothing a mail relay's
#: users would notice.
WAKE_DELAY = 0.03
#: Seconds from a finished attempt to the write of its result. Nobody waits
#: on that write (the sender had its 250 long ago, the connection goes on),
#: and at low concurrency each result would otherwise be its own store
#: transaction and commit. A result still in memory when the process dies is
#: sent again: at least once, never lost, as for the transaction under way.
RECORD_DELAY = 0.02
#: Bytes of just-submitted message bodies kept for their first delivery
#: (:meth:`OutboundService.wake`), so that it need not read back from the
#: store what submission wrote a few milliseconds before. Oldest go first,
#: and none stays longer than FRESH_BODY_SECONDS (a body nobody here takes:
#: another node claimed the message, or a claim read the store first).
FRESH_BODY_BYTES = 8 * 1024 * 1024
FRESH_BODY_SECONDS = 10.0


@dataclass
class _DestinationQueue:
    """Claimed deliveries waiting for one destination domain, and its connections."""

    domain: str
    queue: deque[Delivery] = field(default_factory=deque)
    workers: int = 0
    connecting: int = 0
    sending: int = 0
    connections: set[ISMTPConnection] = field(default_factory=set)
    #: Workers whose connection is open and idle, oldest first: each waits on
    #: its Deferred (True: work arrived; False: give up and close).
    idle: deque[Deferred[bool]] = field(default_factory=deque)
    #: Earliest time the next transaction may start (``rate_per_minute``).
    next_send_at: float = 0.0
    transactions: int = 0


class OutboundService(Service):
    """Delivers queued mail and records every attempt.

    Args:
        store: the durable queue and outcome store.
        connector: opens ESMTP sessions.
        resolver: finds the addresses of a destination domain.
        codec: makes the VERP return path of each delivery.
        classifier: turns a refusal into a reason word.
        config: ``[delivery]``.
        helo: the name we EHLO with.
        node_id: this node's name in leases.
        clock: the clock for timers, durations and record times.
        dkim: signs messages, or None for no signing.
        rng: jitter and shuffles; seed it in tests.
        shutdown_grace: seconds ``stopService`` lets transactions finish.
        idle_grace: seconds a connection whose destination queue ran empty
            stays open for more mail (0 closes it at once). Submissions
            arrive in bursts a few milliseconds apart; without this every
            gap cost a new TCP/EHLO/TLS handshake (1,764 connections for
            1,000 messages in bench/outbound.py).
        wake_delay: seconds between a wake (new mail committed) and the
            claim it causes; wakes in between share the claim. The server
            uses :data:`WAKE_DELAY`; 0 claims at once (the tests' clock).
        record_delay: seconds a finished attempt's result waits for others
            to share its ``record_attempts`` call (never more than
            ``RECORD_BATCH`` results). The server uses :data:`RECORD_DELAY`;
            0 records in the next reactor turn.
    """

    name = "outbound"

    def __init__(
        self,
        store: IOutcomeStore,
        connector: IConnector,
        resolver: MXResolver,
        codec: VerpCodec,
        classifier: Classifier,
        config: DeliveryConfig,
        helo: str,
        node_id: str,
        clock: IReactorTime,
        dkim: DkimSigner | None = None,
        rng: random.Random | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
        idle_grace: float = IDLE_GRACE,
        wake_delay: float = 0.0,
        record_delay: float = 0.0,
    ) -> None:
        self._store = store
        self._connector = connector
        self._resolver = resolver
        self._codec = codec
        self._classifier = classifier
        self._config = config
        self._helo = helo
        self._node_id = node_id
        self._clock = clock
        self._dkim = dkim
        self._rng = rng if rng is not None else random.Random()
        self._grace = shutdown_grace
        self._idle_grace = max(0.0, idle_grace)
        self._wake_delay = max(0.0, wake_delay)
        self._record_delay = max(0.0, record_delay)
        self._policy = RetryPolicy.from_config(config)
        self._per_message = config.verp == "per-message"

        self._stopping = False
        self._claim_call: IDelayedCall | None = None
        self._claiming = False
        self._wake_again = False
        #: True when a claim found no capacity: a finished delivery triggers one.
        self._starved = False
        self._in_flight: dict[int, Delivery] = {}
        self._destinations: dict[str, _DestinationQueue] = {}
        self._workers: set[Deferred[None]] = set()
        self._sleeps: set[Deferred[None]] = set()

        # Message bytes (normalised and signed), loaded once per message and
        # kept while any delivery of that message is in flight.
        self._body_refs: Counter[int] = Counter()
        self._bodies: dict[int, bytes] = {}
        self._body_loading: dict[int, list[Deferred[bytes]]] = {}
        #: (time kept, raw body) handed over by :meth:`wake`, by message key,
        #: oldest first.
        self._fresh: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        self._fresh_bytes = 0

        self._results: list[AttemptResult] = []
        self._flush_call: IDelayedCall | None = None
        self._flushing = False
        #: The scheduled flush is the retry of a failed write.
        self._record_retry = False
        self._idle_waiters: list[Deferred[None]] = []
        #: Connections being closed (QUIT sent): stopService waits for them.
        self._closing: set[Deferred[None]] = set()

    # -- service ---------------------------------------------------------------

    def startService(self) -> Deferred[None]:
        """Take back this node's leases from before a restart, then start claiming.

        The node id is stable across restarts (``[server] node_id``, or host
        name plus data directory), so rows this node had claimed when it was
        killed are due again at once rather than after ``lease_seconds``.
        Those that were in flight at the kill may be sent twice: delivery is
        at least once, never lost.
        """
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
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

    def stopService(self) -> Deferred[None]:
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
        self._stopping = True
        self._cancel_call(self._claim_call)
        self._claim_call = None

        # Deliveries not started yet go back to the store at once; workers
        # find their queues empty and close their connections.
        unstarted: list[Delivery] = []
        for dest in self._destinations.values():
            unstarted.extend(dest.queue)
            dest.queue.clear()
        for sleep in list(self._sleeps):
            sleep.cancel()  # workers waiting for a rate slot leave now
        for dest in list(self._destinations.values()):
            self._dismiss_idle(dest)  # idle connections close now, their timers go

        if not await self._wait(self._idle(), self._grace):
            stuck = list(self._workers)
            log.warn(
                "outbound stop: {count} connections still busy after {grace}s; "
                "their deliveries stay leased until the lease runs out",
                count=len(stuck), grace=self._grace,
            )
            for worker in stuck:
                worker.cancel()

        self._cancel_call(self._flush_call)
        self._flush_call = None
        self._record_retry = False
        if self._results:
            await self._wait(Deferred.fromCoroutine(self._flush()), self._grace)
        if self._results:
            # the rows stay leased and come back after the lease: sent twice
            # at worst, never lost
            log.warn("outbound stop: {count} attempt results could not be recorded",
                     count=len(self._results))
        self._cancel_call(self._flush_call)
        self._flush_call = None

        self._fresh.clear()
        self._fresh_bytes = 0
        for delivery in unstarted:
            self._forget(delivery)
        if unstarted:
            ids = [d.delivery_id for d in unstarted]
            try:
                ok = await self._wait(
                    Deferred.fromCoroutine(self._store.release(ids, self._node_id)), self._grace
                )
            except Exception:
                log.failure("outbound stop: releasing {count} leases failed", count=len(ids))
            else:
                if ok:
                    log.info("outbound stop: released {count} unstarted deliveries",
                             count=len(ids))

        for dest in self._destinations.values():
            for conn in list(dest.connections):
                self._close_quietly(dest, conn)
        for sleep in list(self._sleeps):
            sleep.cancel()
        if self._closing:
            # Idle connections were dismissed just above or at the start of
            # the stop: let their QUIT finish (bounded by the client's QUIT
            # timeout) so no socket outlives the service.
            await self._wait(DeferredList(list(self._closing)), self._grace)

    async def _wait(self, d: Deferred[Any], timeout: float) -> bool:
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
        if self._workers or self._claiming or self._flushing:
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
            body: that message's raw body as stored. It is kept (up to
                :data:`FRESH_BODY_BYTES` in all) for the message's first
                delivery, which then does not read it back from the store.
        """
        if not self.running or self._stopping:
            return
        if message_pk is not None and body is not None:
            self._keep_fresh(message_pk, body)
        if self._claiming:
            self._wake_again = True
            return
        self._schedule_claim(self._wake_delay)

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
        self._trim_fresh()
        failed = False
        try:
            # A result not written yet still counts: until it is, a crash
            # would send that mail again, and max_in_flight is also the
            # bound on what a crash can send twice.
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
                    capacity, exclude_domains=self._saturated(),
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
            if self._starved and not failed and self._room() > 0:
                # Results were written while the claim was on its way: their
                # write found no starved loop to wake, so claim for the room.
                self._starved = False
                self._schedule_claim(0)
            elif self._wake_again and not self._starved and not failed:
                self._schedule_claim(self._wake_delay)
            else:
                self._schedule_claim(self._config.poll_interval)
            self._check_idle()

    def _room(self) -> int:
        """Deliveries this node may still claim (see :meth:`_claim`)."""
        return self._config.max_in_flight - len(self._in_flight) - len(self._results)

    async def _make_room(self) -> None:
        """Every slot is taken: trade rows waiting here for due work of other domains.

        One claim can fill ``max_in_flight`` with a single slow destination
        (a retry wave, a message with many recipients there); without this,
        every other destination waits until that one drains. Rows that are
        waiting (not being sent) are given back, newest first from the
        longest queues, for as many rows of other domains as the store has
        due; ``max_in_flight`` is never exceeded for longer than the claim.
        """
        waiting = sum(len(d.queue) for d in self._destinations.values())
        if not waiting or not self.running or self._stopping:
            return
        want = min(waiting, max(1, self._config.max_in_flight // 10))
        try:
            others = await self._store.claim_due(
                self._clock.seconds(), self._node_id, self._config.lease_seconds, want,
                exclude_domains=sorted(self._destinations),
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
        victims: list[Delivery] = []
        while len(victims) < len(others):
            dest = max(self._destinations.values(), key=lambda d: len(d.queue), default=None)
            if dest is None or not dest.queue:
                break  # sends started meanwhile: fewer rows to trade
            victims.append(dest.queue.pop())
        for delivery in victims:
            self._forget(delivery)
        take, back = others[:len(victims)], others[len(victims):]
        log.info("made room for {count} deliveries to other destinations",
                 count=len(take))
        self._accept(take)
        await self._release([*victims, *back], "making room for other destinations")

    def _saturated(self) -> list[str]:
        """Domains with enough work queued here already.

        With a rate limit the bound is what can be sent within half a lease,
        so rows do not wait in memory until their lease runs out.
        """
        limit = max(50, 10 * self._config.max_connections_per_destination)
        if self._config.rate_per_minute > 0:
            per_lease = self._config.rate_per_minute * self._config.lease_seconds / 60 / 2
            limit = max(1, min(limit, int(per_lease)))
        return sorted(d.domain for d in self._destinations.values() if len(d.queue) >= limit)

    def _accept(self, deliveries: Sequence[Delivery]) -> None:
        touched: dict[str, _DestinationQueue] = {}
        for delivery in deliveries:
            if delivery.delivery_id in self._in_flight:
                continue  # already ours (a lease renewed under us)
            self._in_flight[delivery.delivery_id] = delivery
            self._body_refs[delivery.message_pk] += 1
            dest = self._destinations.get(delivery.domain)
            if dest is None:
                dest = self._destinations[delivery.domain] = _DestinationQueue(delivery.domain)
            dest.queue.append(delivery)
            touched[dest.domain] = dest
        for dest in touched.values():
            self._pump(dest)

    # -- per destination -------------------------------------------------------

    def _pump(self, dest: _DestinationQueue) -> None:
        """Start workers for a destination's queue."""
        if not self.running or self._stopping:
            return
        pending = self._pending_transactions(dest)
        if not pending:
            return
        # Idle connections first: they are open and greeted already.
        woken = 0
        while dest.idle and dest.queue and woken < pending:
            waiter = dest.idle.popleft()
            woken += 1
            if not waiter.called:
                waiter.callback(True)  # may run the worker's sends synchronously
        if woken:
            pending = self._pending_transactions(dest)
            if not pending:
                return
        if dest.workers == 0:
            self._start_worker(dest)
            return
        if not dest.connections:
            return  # the first worker is still finding out whether the host is up
        # Enough workers for the transactions waiting, within the limit.
        target = min(self._config.max_connections_per_destination, pending + dest.sending)
        if self._config.rate_per_minute > 0:
            # a rate-limited destination gains nothing from parallel connections
            target = min(target, 1)
        # A bounded loop: with synchronous fakes a new worker can drain the
        # queue and finish before this loop looks again.
        for _ in range(max(0, target - dest.workers)):
            if not dest.queue or self._stopping or dest.workers >= target:
                break
            self._start_worker(dest)

    def _pending_transactions(self, dest: _DestinationQueue) -> int:
        if not self._per_message:
            return len(dest.queue)
        per_tx = max(1, self._config.max_recipients_per_transaction)
        counts = Counter(d.message_pk for d in dest.queue)
        return sum(-(-n // per_tx) for n in counts.values())

    def _start_worker(self, dest: _DestinationQueue) -> None:
        dest.workers += 1
        d = Deferred.fromCoroutine(self._worker(dest))
        self._workers.add(d)

        def done(result: object) -> None:
            self._workers.discard(d)
            dest.workers -= 1
            failure = result if isinstance(result, Failure) else None
            if failure is not None and not failure.check(CancelledError):
                log.failure("outbound worker for {domain} failed", failure, domain=dest.domain)
                if dest.workers == 0:
                    # a bug, not the destination: defer what is left rather
                    # than start another worker that fails the same way
                    self._defer_all(dest, Reason.systemerror, failure.getErrorMessage())
            if (dest.workers == 0 and not dest.queue and not dest.connections
                    and dest.next_send_at <= self._clock.seconds()):
                # idle: forget it (kept while a rate-limit slot is pending,
                # so an idle moment does not reset the rate)
                self._destinations.pop(dest.domain, None)
            elif dest.queue:
                self._pump(dest)
            self._check_idle()

        d.addBoth(done)

    async def _worker(self, dest: _DestinationQueue) -> None:
        """Open a connection and send transactions on it while there is work."""
        while dest.queue and not self._stopping:
            conn = await self._connect(dest)
            if conn is None:
                return
            try:
                self._pump(dest)  # the destination works: more connections may help
                sent = 0
                while True:
                    while (
                        conn.usable
                        and conn in dest.connections
                        and dest.queue
                        and not self._stopping
                        and sent < self._config.messages_per_connection
                    ):
                        await self._rate_wait(dest)
                        batch = self._take(dest)
                        if not batch:
                            break
                        await self._transaction(dest, conn, batch)
                        sent += 1
                    if not (
                        self._idle_grace > 0
                        and not dest.queue
                        and conn.usable
                        and conn in dest.connections
                        and not self._stopping
                        and sent < self._config.messages_per_connection
                    ):
                        break
                    # The queue ran dry: keep the session for the next claim
                    # (_pump hands it work) rather than pay a new handshake.
                    if not await self._wait_for_work(dest):
                        break
            finally:
                if conn in dest.connections:
                    self._close_quietly(dest, conn)

    async def _wait_for_work(self, dest: _DestinationQueue) -> bool:
        """Wait, idle, up to ``idle_grace`` seconds for work for ``dest``.

        Returns:
            True when :meth:`_pump` handed us work, False on timeout or stop.
        """
        waiter: Deferred[bool] = Deferred()
        dest.idle.append(waiter)

        def timeout() -> None:
            if not waiter.called:
                waiter.callback(False)

        timer = self._clock.callLater(self._idle_grace, timeout)
        try:
            return await waiter
        finally:
            if timer.active():
                timer.cancel()
            if waiter in dest.idle:
                dest.idle.remove(waiter)

    def _dismiss_idle(self, dest: _DestinationQueue) -> None:
        """Tell every idle worker of ``dest`` to close its connection now."""
        while dest.idle:
            waiter = dest.idle.popleft()
            if not waiter.called:
                waiter.callback(False)

    async def _rate_wait(self, dest: _DestinationQueue) -> None:
        """Wait for this destination's next send slot (``rate_per_minute``)."""
        rate = self._config.rate_per_minute
        if rate <= 0:
            return
        now = self._clock.seconds()
        slot = max(now, dest.next_send_at)
        dest.next_send_at = slot + 60.0 / rate
        if slot > now:
            await self._sleep(slot - now)

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = deferLater(self._clock, seconds, lambda: None)
        self._sleeps.add(d)
        try:
            await d
        finally:
            self._sleeps.discard(d)

    def _take(self, dest: _DestinationQueue) -> list[Delivery]:
        """The deliveries of the next transaction, in FIFO order."""
        if not dest.queue:
            return []
        first = dest.queue.popleft()
        if not self._per_message:
            return [first]
        # One transaction for up to max_recipients_per_transaction recipients
        # of the same message; others keep their places in the queue.
        batch = [first]
        rest: deque[Delivery] = deque()
        limit = max(1, self._config.max_recipients_per_transaction)
        for delivery in dest.queue:
            if delivery.message_pk == first.message_pk and len(batch) < limit:
                batch.append(delivery)
            else:
                rest.append(delivery)
        dest.queue = rest
        return batch

    def _tls_policy(self, domain: str) -> TlsPolicy:
        policies = self._config.tls_policy
        return policies.domains.get(domain.lower()) or policies.default

    async def _connect(self, dest: _DestinationQueue) -> ISMTPConnection | None:
        """A connection to the destination, trying its addresses in order.

        When none works, every queued delivery of the destination is recorded
        (deferred, or failed for a permanent DNS answer) and None returned.
        """
        dest.connecting += 1
        try:
            try:
                targets = await self._resolver.resolve(dest.domain)
            except DestinationError as e:
                log.info("no destination for {domain}: {reason} {error}",
                         domain=dest.domain, reason=e.reason.value, error=e.message)
                self._dns_failure(dest, e)
                return None
            last: tuple[Destination, ConnectionFailed] | None = None
            for target in targets[:MAX_ADDRESSES_PER_ROUND]:
                if self._stopping:
                    return None
                try:
                    conn = await self._connector.connect(
                        target.host, target.ip, target.port,
                        tls_policy=self._tls_policy(dest.domain), helo=self._helo,
                    )
                except ConnectionFailed as e:
                    failure = e
                except CancelledError:
                    raise
                except Exception as e:
                    # a connector bug must not strand the queue: count it as
                    # a network error and move on
                    log.failure("connector failed for {host} [{ip}]",
                                host=target.host, ip=target.ip)
                    failure = ConnectionFailed(str(e) or e.__class__.__name__, Phase.connect,
                                               reason=Reason.networkerror)
                else:
                    self._resolver.mark_succeeded(target)
                    dest.connections.add(conn)
                    return conn
                log.info("connection to {domain} via {host} [{ip}]:{port} failed in "
                         "{phase}: {error}", domain=dest.domain, host=target.host,
                         ip=target.ip, port=target.port, phase=failure.phase.value,
                         error=str(failure))
                self._resolver.mark_failed(target)
                last = (target, failure)
            assert last is not None  # resolve() never returns an empty list
            self._connection_failure(dest, *last)
            return None
        finally:
            dest.connecting -= 1

    def _close_quietly(self, dest: _DestinationQueue, conn: ISMTPConnection) -> None:
        dest.connections.discard(conn)
        d = Deferred.fromCoroutine(conn.close())
        d.addErrback(lambda f: log.failure("closing connection to {host} failed", f,
                                           host=conn.info.host))
        if not d.called:
            self._closing.add(d)
            d.addBoth(lambda _: self._closing.discard(d))

    # -- one transaction -------------------------------------------------------

    async def _transaction(
        self, dest: _DestinationQueue, conn: ISMTPConnection, batch: list[Delivery]
    ) -> None:
        dest.sending += 1
        dest.transactions += 1
        try:
            await self._send_batch(dest, conn, batch)
        except CancelledError:
            raise
        except Exception as e:
            log.failure("transaction to {domain} failed", domain=dest.domain)
            self._defer_all(dest, Reason.systemerror, f"{e.__class__.__name__}: {e}", batch)
        finally:
            dest.sending -= 1

    async def _send_batch(
        self, dest: _DestinationQueue, conn: ISMTPConnection, batch: list[Delivery]
    ) -> None:
        info = conn.info
        first = batch[0]
        try:
            message = await self._message_bytes(first.message_pk)
        except CancelledError:
            raise
        except Exception:
            # Without the body nothing can be sent; give the leases back
            # so the rows come again, without counting an attempt.
            log.failure("loading message {message_pk} failed", message_pk=first.message_pk)
            for delivery in batch:
                self._forget(delivery)
            await self._release(batch, "body unavailable")
            return
        try:
            # A transaction to several recipients shares one return path: it
            # is marked per-message (under its MAC) so that it vouches for the
            # message only, never for one recipient a co-recipient names.
            token = self._codec.encode(first.delivery_id, first.mailing_id, first.message_id,
                                       per_message=len(batch) > 1)
        except ValueError as e:
            # identifiers that do not fit a return path: submission should
            # have refused them; no retry can fix it
            now = self._clock.seconds()
            failure = LocalFailure(Reason.mailererror, f"cannot make a return path: {e}",
                                   permanent=True)
            for delivery in batch:
                self._finish(delivery, self._decide(delivery, failure, now), None)
            return
        recipients = tuple(
            OutboundRecipient(
                delivery_id=d.delivery_id,
                address=wire_address(d.recipient),
                orcpt=d.orcpt or f"rfc822;{d.recipient}",
            )
            for d in batch
        )
        prepared = prepare_message(message, token, [token, *(r.address for r in recipients)])
        outbound = OutboundMessage(
            mail_from=token,
            recipients=recipients,
            body=prepared.body,
            envid=token,
            eight_bit=prepared.eight_bit,
            smtputf8=prepared.smtputf8,
        )
        started = self._clock.seconds()
        try:
            replies = await conn.send(outbound)
        except CancelledError:
            raise
        except Exception as e:
            # send() must not raise; if it does, the session is unusable
            # and nothing is known about the recipients
            log.failure("send to {host} failed", host=info.host)
            replies = [RecipientReply(d.delivery_id, None, Phase.data, error=str(e))
                       for d in batch]
            dest.connections.discard(conn)
            self._close_quietly(dest, conn)
        now = self._clock.seconds()
        by_id = {r.delivery_id: r for r in replies}
        for delivery in batch:
            rr = by_id.get(delivery.delivery_id)
            answer = (RecipientAnswer(rr.phase, rr.reply, rr.error) if rr is not None else
                      RecipientAnswer(Phase.data, None, "no reply for this recipient"))
            self._finish(delivery, self._decide(delivery, answer, now, host=info.host,
                                                ip=info.ip, tls=info.tls,
                                                duration=now - started), info.host)

    def _keep_fresh(self, message_pk: int, body: bytes) -> None:
        if len(body) <= FRESH_BODY_BYTES // 4 and message_pk not in self._fresh:
            self._fresh[message_pk] = (self._clock.seconds(), body)
            self._fresh_bytes += len(body)
        self._trim_fresh()

    def _trim_fresh(self) -> None:
        """Drop the oldest kept bodies: over FRESH_BODY_BYTES, or too old."""
        too_old = self._clock.seconds() - FRESH_BODY_SECONDS
        while self._fresh:
            kept, body = next(iter(self._fresh.values()))
            if self._fresh_bytes <= FRESH_BODY_BYTES and kept > too_old:
                break
            self._fresh.popitem(last=False)
            self._fresh_bytes -= len(body)

    def _take_fresh(self, message_pk: int) -> bytes | None:
        entry = self._fresh.pop(message_pk, None)
        if entry is None:
            return None
        self._fresh_bytes -= len(entry[1])
        return entry[1]

    async def _message_bytes(self, message_pk: int) -> bytes:
        """The normalised, signed bytes of a message, loaded and signed once."""
        cached = self._bodies.get(message_pk)
        if cached is not None:
            return cached
        waiters = self._body_loading.get(message_pk)
        if waiters is not None:
            # Another transaction is loading it: wait for that one. Each
            # waiter gets its own Deferred (a Deferred awaited twice would
            # hand the second awaiter None).
            d: Deferred[bytes] = Deferred()
            waiters.append(d)
            return await d
        self._body_loading[message_pk] = []
        try:
            raw = self._take_fresh(message_pk)
            if raw is None:
                raw = await self._store.load_body(message_pk)
            message = normalise_message(raw)
            if self._dkim is not None:
                message = await self._dkim.sign(message)
        except BaseException as e:
            for d in self._body_loading.pop(message_pk, []):
                d.errback(Failure(e))
            raise
        if self._body_refs.get(message_pk):
            self._bodies[message_pk] = message
        for d in self._body_loading.pop(message_pk, []):
            d.callback(message)
        return message

    # -- outcomes --------------------------------------------------------------

    def _decide(
        self, delivery: Delivery, attempt: Attempt, now: float, *, host: str | None = None,
        ip: str | None = None, tls: str | None = None, duration: float | None = None,
    ) -> AttemptResult:
        """The result to record for one delivery: :func:`decide_attempt`'s decision,
        with the next attempt time from the retry policy when it retries."""
        decision = decide_attempt(attempt, self._classifier,
                                  expired=expired(delivery.created_at, now, self._config.max_age))
        next_attempt = (self._policy.next_attempt(delivery.attempts + 1, now, self._rng)
                        if decision.retry else None)
        return decision.result(delivery.delivery_id, now, remote_host=host, remote_ip=ip,
                               tls=tls, duration=duration, next_attempt_at=next_attempt,
                               owner=self._node_id)

    def _defer_all(self, dest: _DestinationQueue, reason: Reason, text: str,
                   batch: Sequence[Delivery] | None = None) -> None:
        """Defer (or expire) deliveries after a local error; the whole queue by default."""
        now = self._clock.seconds()
        for delivery in self._take_all(dest) if batch is None else batch:
            if delivery.delivery_id not in self._in_flight:
                continue  # already recorded
            self._finish(delivery, self._decide(delivery, LocalFailure(reason, text), now), None)

    def _take_all(self, dest: _DestinationQueue) -> list[Delivery]:
        batch = list(dest.queue)
        dest.queue.clear()
        return batch

    def _connection_failure(
        self, dest: _DestinationQueue, target: Destination, error: ConnectionFailed
    ) -> None:
        """Record every queued delivery of the destination with the cause."""
        attempt = SessionFailure(error.phase, error.reply, str(error), error.reason)
        now = self._clock.seconds()
        for delivery in self._take_all(dest):
            self._finish(delivery, self._decide(delivery, attempt, now, host=target.host,
                                                ip=target.ip), target.host)

    def _dns_failure(self, dest: _DestinationQueue, error: DestinationError) -> None:
        """Record every queued delivery of a destination DNS could not resolve."""
        attempt = LocalFailure(error.reason, error.message, error.permanent, error.status)
        now = self._clock.seconds()
        for delivery in self._take_all(dest):
            self._finish(delivery, self._decide(delivery, attempt, now), None)

    def _finish(self, delivery: Delivery, result: AttemptResult, host: str | None) -> None:
        """Log one attempt, queue its result for recording, free its slot."""
        log.info(
            "delivery {delivery_id} to {recipient} via {host}: {state} {code} {text}",
            delivery_id=delivery.delivery_id, recipient=delivery.recipient,
            host=host or "-", state=result.state.value, code=result.code or "",
            text=result.text or "", reason=result.reason and result.reason.value,
            status=result.status,
            queue_id=delivery.queue_id, remote_ip=result.remote_ip, tls=result.tls,
            duration=result.duration,
        )
        self._results.append(result)
        self._forget(delivery)
        # The slot stays taken until the result is written (see _claim):
        # the write, not this, wakes a starved claim loop.
        self._schedule_flush(0 if len(self._results) >= RECORD_BATCH else self._record_delay)

    def _forget(self, delivery: Delivery) -> None:
        if self._in_flight.pop(delivery.delivery_id, None) is None:
            return
        pk = delivery.message_pk
        self._body_refs[pk] -= 1
        if self._body_refs[pk] <= 0:
            del self._body_refs[pk]
            self._bodies.pop(pk, None)

    async def _release(self, deliveries: Sequence[Delivery], why: str) -> None:
        if not deliveries:
            return
        try:
            await self._store.release([d.delivery_id for d in deliveries], self._node_id)
        except Exception:
            # the leases run out by themselves; nothing is lost
            log.failure("releasing {count} leases ({why}) failed", count=len(deliveries),
                        why=why)

    # -- recording -------------------------------------------------------------

    def _schedule_flush(self, delay: float) -> None:
        """Write the results in ``delay`` seconds (or sooner, when a flush is
        already due): everything finished until then goes in one
        ``record_attempts`` call."""
        if self._flushing:
            return  # the running flush loops until the list is empty
        call = self._flush_call
        if call is not None and call.active():
            if self._record_retry or call.getTime() <= self._clock.seconds() + delay:
                # an earlier flush is due, or a failed write waits out the
                # poll interval (new results must not bring it forward)
                return
            call.cancel()
        self._flush_call = self._clock.callLater(delay, self._flush_tick)

    def _flush_tick(self) -> None:
        self._flush_call = None
        self._record_retry = False
        d = Deferred.fromCoroutine(self._flush())
        d.addErrback(lambda f: log.failure("recording attempt results failed", f))

    async def _flush(self) -> None:
        if self._flushing:
            return
        self._flushing = True
        retry = False
        try:
            while self._results:
                batch = self._results[:RECORD_BATCH]
                try:
                    await self._store.record_attempts(batch)
                except CancelledError:
                    raise
                except Exception:
                    # Keep the results: writing them late is better than
                    # losing them (the rows would be sent again).
                    log.failure("recording {count} attempt results failed; retrying in "
                                "{delay}s", count=len(batch), delay=self._config.poll_interval)
                    retry = True
                    return
                # results added while we waited are behind this batch
                del self._results[: len(batch)]
                if self._starved:
                    self._starved = False
                    self._schedule_claim(0)
        finally:
            self._flushing = False
            if retry and not self._stopping:
                self._schedule_flush(self._config.poll_interval)
                self._record_retry = True
            self._check_idle()

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _cancel_call(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    def stats(self) -> dict[str, Any]:
        """A snapshot for the admin console and metrics.

        Returns:
            ``in_flight``, ``unrecorded`` results, and per destination domain
            its open ``connections``, ``workers``, ``queued`` deliveries and
            ``transactions`` sent since it was last idle.
        """
        return {
            "in_flight": len(self._in_flight),
            "unrecorded": len(self._results),
            "stopping": self._stopping,
            "destinations": {
                dest.domain: {
                    "connections": len(dest.connections),
                    "idle": len(dest.idle),
                    "workers": dest.workers,
                    "queued": len(dest.queue),
                    "transactions": dest.transactions,
                }
                for dest in self._destinations.values()
            },
        }

