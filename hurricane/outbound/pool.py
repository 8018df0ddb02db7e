"""Per-destination queues, the workers that drain them, and their connections.

Claimed deliveries wait in a FIFO queue per destination (the store hands
out new mail before retries, and the FIFO keeps that order). Per
destination, a few workers (``max_connections``) each hold one connection and
send transactions on it until the queue is empty or
``messages_per_connection`` is reached. A connection whose queue runs empty
stays open, idle, for ``idle_grace`` seconds; new work for its destination
goes to idle connections before any new one is opened. One worker starts
first; more start only once a connection has worked, so a dead destination
costs one failed round, not five. ``rate_per_minute`` spaces transactions.

A destination is a :class:`DestinationKey` and its limits come from a
function of the key, so that a provider grouping many domains (issue 19's
MX roll-up, with limits that adapt) or a stream's own pool (issues 20, 21)
can key and limit the queues without changing this module.

What a transaction sends and what becomes of its recipients is the
:class:`Dispatch`'s business; this module decides only when and on which
connection.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.config import DeliveryConfig
from hurricane.decisions import Attempt, LocalFailure, SessionFailure
from hurricane.model import Delivery
from hurricane.outbound.dialer import Dialer, DialFailed
from hurricane.outbound.interface import ISMTPConnection, TransportFacts
from hurricane.outbound.mx import DestinationError
from hurricane.outcome import Reason
from hurricane.streams import DEFAULT_STREAM

__all__ = [
    "IDLE_GRACE",
    "DestinationKey",
    "DestinationLimits",
    "DestinationPool",
    "Dispatch",
    "Gate",
    "PoolSettings",
]

log = Logger()

#: Seconds an idle connection stays open waiting for more mail to its destination.
IDLE_GRACE = 2.0


@dataclass(frozen=True)
class DestinationKey:
    """Which queue a delivery waits in, and whose limits apply: today its domain.

    ``pool`` is the sending pool its connections come from ("" = the
    default): a connection keeps its source address, so mail for one domain
    from two pools waits in two queues (issue 21; streams, issue 20, set it).
    """

    domain: str
    pool: str = ""

    @classmethod
    def of(cls, delivery: Delivery, stream_pools: Mapping[str, str] | None = None
           ) -> DestinationKey:
        """The key of a delivery: its recipient domain, and the IP pool its stream
        names in ``stream_pools`` (stream name -> pool; "" = the default pool)."""
        if not stream_pools:
            return cls(delivery.domain)
        return cls(delivery.domain, stream_pools.get(delivery.stream or DEFAULT_STREAM, ""))


@dataclass(frozen=True)
class DestinationLimits:
    """What one destination may take.

    Attributes:
        max_connections: connections open at once.
        messages_per_connection: transactions on one connection before a new one.
        rate_per_minute: transactions per minute, 0 = no limit (a rate-limited
            destination gets one connection: parallel ones gain nothing).
    """

    max_connections: int = 5
    messages_per_connection: int = 100
    rate_per_minute: int = 0


@dataclass(frozen=True)
class PoolSettings:
    """The pool's settings (see :meth:`from_config`).

    Attributes:
        limits: every destination's limits, unless a ``limits_for`` says otherwise.
        idle_grace: seconds a connection whose queue ran empty stays open
            (0 closes it at once). Submissions arrive in bursts a few
            milliseconds apart; without this every gap cost a new
            TCP/EHLO/TLS handshake (1,764 connections for 1,000 messages in
            bench/outbound.py).
        per_message: one transaction carries several recipients of a message.
        max_recipients_per_transaction: their number at most.
        lease_seconds: how long claimed rows stay ours (a rate-limited queue
            holds no more than half a lease can send).
    """

    limits: DestinationLimits = field(default_factory=DestinationLimits)
    idle_grace: float = IDLE_GRACE
    per_message: bool = False
    max_recipients_per_transaction: int = 50
    lease_seconds: float = 600.0
    #: Streams whose transactions carry one recipient whatever ``per_message``
    #: (a bulk stream's unsubscribe link names its recipient).
    single_streams: frozenset[str] = frozenset()
    #: stream name -> the IP pool its mail leaves from (streams without one use
    #: ``[delivery] pool``).
    stream_pools: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: DeliveryConfig, idle_grace: float = IDLE_GRACE) -> PoolSettings:
        """The settings of a ``[delivery]`` section.

        Args:
            config: ``[delivery]``.
            idle_grace: seconds an idle connection is kept.

        Returns:
            the settings.
        """
        return cls(
            limits=DestinationLimits(config.max_connections_per_destination,
                                     config.messages_per_connection, config.rate_per_minute),
            idle_grace=max(0.0, idle_grace), per_message=config.verp == "per-message",
            max_recipients_per_transaction=max(1, config.max_recipients_per_transaction),
            lease_seconds=config.lease_seconds,
        )


class Dispatch(Protocol):
    """Sends transactions and records what became of deliveries."""

    async def send(self, conn: ISMTPConnection, batch: list[Delivery]) -> bool:
        """Send one transaction on ``conn`` and record its recipients.

        Returns:
            False when the connection must not be used again.
        """

    def fail(self, batch: Iterable[Delivery], attempt: Attempt, *, host: str | None = None,
             ip: str | None = None, facts: TransportFacts | None = None) -> None:
        """Record deliveries that could not be sent (skipping any recorded already)."""


class Gate(Protocol):
    """Budgets shared by several destinations (issue 19's providers): their
    connections, their send rate, their pauses and suspensions.

    With a gate, a destination's rate slot is the gate's, not its own.
    """

    def limits(self, domain: str) -> DestinationLimits:
        """The limits that apply to ``domain`` now."""

    def room(self, domain: str) -> int:
        """Connections the budget of ``domain`` may still open."""

    def blocked(self, domain: str) -> bool:
        """True while nothing may be sent to ``domain`` (a suspension)."""

    def reserve(self, domain: str) -> float | None:
        """Book the next send to ``domain``: seconds to wait, or None to stop
        sending for now (a suspension; the rows stay queued)."""

    def connected(self, domain: str, host: str | None) -> None:
        """A connection to ``domain`` opened (through MX ``host``)."""

    def disconnected(self, domain: str) -> None:
        """A connection to ``domain`` closed."""


@dataclass(eq=False)
class _Destination:
    """Claimed deliveries waiting for one destination, and its connections."""

    key: DestinationKey
    queue: deque[Delivery] = field(default_factory=deque)
    workers: int = 0
    sending: int = 0
    connections: set[ISMTPConnection] = field(default_factory=set)
    #: Workers whose connection is open and idle, oldest first: each waits on
    #: its Deferred (True: work arrived; False: give up and close).
    idle: deque[Deferred[bool]] = field(default_factory=deque)
    #: Earliest time the next transaction may start (``rate_per_minute``).
    next_send_at: float = 0.0
    transactions: int = 0


class DestinationPool:
    """Queues, workers and connections per destination.

    Args:
        dialer: opens a session to a destination.
        dispatch: sends transactions and records outcomes.
        clock: idle and rate timers.
        settings: the pool's settings.
        limits_for: a destination's limits (default: ``settings.limits`` for all,
            or the gate's).
        on_settled: called when a worker ends (the service may be idle now).
        gate: budgets shared by several destinations, if any.
    """

    def __init__(self, dialer: Dialer, dispatch: Dispatch, clock: IReactorTime,
                 settings: PoolSettings, *,
                 limits_for: Callable[[DestinationKey], DestinationLimits] | None = None,
                 on_settled: Callable[[], None] = lambda: None,
                 gate: Gate | None = None) -> None:
        self._dialer = dialer
        self._dispatch = dispatch
        self._clock = clock
        self._settings = settings
        self._gate = gate
        if limits_for is None and gate is not None:
            limits_for = lambda key: gate.limits(key.domain)  # noqa: E731
        self._limits_for = limits_for or (lambda key: settings.limits)
        self._on_settled = on_settled
        self._destinations: dict[DestinationKey, _Destination] = {}
        self._workers: set[Deferred[None]] = set()
        self._sleeps: set[Deferred[None]] = set()
        #: Connections being closed (QUIT sent): a stop waits for them.
        self._closing: set[Deferred[None]] = set()
        self._stopping = False

    # -- what the claim loop asks ----------------------------------------------

    @property
    def busy(self) -> bool:
        """True while any worker runs."""
        return bool(self._workers)

    def waiting(self) -> int:
        """Deliveries queued here, not yet being sent."""
        return sum(len(d.queue) for d in self._destinations.values())

    def domains(self) -> list[str]:
        """The domains with a queue here (busy or idle), sorted."""
        return sorted({key.domain for key in self._destinations})

    def saturated(self) -> list[str]:
        """Domains with enough work queued here already (left out of the next claim).

        With a rate limit the bound is what can be sent within half a lease,
        so rows do not wait in memory until their lease runs out.
        """
        found = set()
        for dest in self._destinations.values():
            limits = self._limits_for(dest.key)
            bound = max(50, 10 * limits.max_connections)
            if limits.rate_per_minute > 0:
                per_lease = limits.rate_per_minute * self._settings.lease_seconds / 60 / 2
                bound = max(1, min(bound, int(per_lease)))
            if len(dest.queue) >= bound:
                found.add(dest.key.domain)
        return sorted(found)

    def add(self, deliveries: Iterable[Delivery]) -> None:
        """Queue claimed deliveries and start sending them.

        Args:
            deliveries: in the order the store gave them.
        """
        touched: dict[DestinationKey, _Destination] = {}
        for delivery in deliveries:
            key = DestinationKey.of(delivery, self._settings.stream_pools)
            dest = self._destinations.get(key)
            if dest is None:
                dest = self._destinations[key] = _Destination(key)
            dest.queue.append(delivery)
            touched[key] = dest
        for dest in touched.values():
            self._pump(dest)

    def take_back_where(self, wanted: Callable[[Delivery], bool]) -> list[Delivery]:
        """Every waiting delivery ``wanted`` says yes to, out of its queue
        (a held mailing, a suspended provider).

        Returns:
            the deliveries taken (none of them was on a connection yet).
        """
        taken: list[Delivery] = []
        for dest in self._destinations.values():
            keep: deque[Delivery] = deque()
            for delivery in dest.queue:
                (taken if wanted(delivery) else keep).append(delivery)
            dest.queue = keep
        return taken

    def pump_all(self) -> None:
        """Start workers for every queue with work and none (a budget has room again)."""
        for dest in list(self._destinations.values()):
            if dest.queue and dest.workers == 0:
                self._pump(dest)

    def take_back(self, count: int) -> list[Delivery]:
        """Up to ``count`` waiting deliveries, newest first from the longest queues.

        Args:
            count: how many the caller wants to give back.

        Returns:
            the deliveries taken out of their queues (fewer when sends started).
        """
        taken: list[Delivery] = []
        while len(taken) < count:
            dest = max(self._destinations.values(), key=lambda d: len(d.queue), default=None)
            if dest is None or not dest.queue:
                break
            taken.append(dest.queue.pop())
        return taken

    # -- stopping ---------------------------------------------------------------

    def stop(self) -> list[Delivery]:
        """Start no more transactions; idle connections close now.

        Returns:
            the deliveries that had not started (the caller gives them back).
        """
        self._stopping = True
        unstarted: list[Delivery] = []
        for dest in self._destinations.values():
            unstarted.extend(dest.queue)
            dest.queue.clear()
        self._cancel_sleeps()  # workers waiting for a rate slot leave now
        for dest in list(self._destinations.values()):
            self._dismiss_idle(dest)
        return unstarted

    def abandon(self) -> int:
        """Cancel the workers still running (their deliveries stay leased).

        Returns:
            how many were cancelled.
        """
        stuck = list(self._workers)
        for worker in stuck:
            worker.cancel()
        return len(stuck)

    def close_all(self) -> Deferred[object]:
        """Close every connection left.

        Returns:
            fires once every QUIT under way has finished.
        """
        for dest in self._destinations.values():
            for conn in list(dest.connections):
                self._close_quietly(dest, conn)
        self._cancel_sleeps()
        return DeferredList(list(self._closing)).addCallback(lambda _: None)

    def start(self) -> None:
        """Accept work again (the service starts)."""
        self._stopping = False

    def _cancel_sleeps(self) -> None:
        for sleep in list(self._sleeps):
            sleep.cancel()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per destination domain: open ``connections``, ``idle`` ones, ``workers``,
        deliveries waiting (``queued``) and ``transactions`` sent since it was last idle."""
        return {
            dest.key.domain: {
                "connections": len(dest.connections),
                "idle": len(dest.idle),
                "workers": dest.workers,
                "queued": len(dest.queue),
                "transactions": dest.transactions,
            }
            for dest in self._destinations.values()
        }

    # -- workers ------------------------------------------------------------------

    def _pump(self, dest: _Destination) -> None:
        """Start workers for a destination's queue."""
        if self._stopping:
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
        gate = self._gate
        if gate is not None and (gate.blocked(dest.key.domain)
                                 or gate.room(dest.key.domain) <= 0):
            return  # pump_all starts it when the shared budget allows
        if dest.workers == 0:
            self._start_worker(dest)
            return
        if not dest.connections:
            return  # the first worker is still finding out whether the host is up
        limits = self._limits_for(dest.key)
        # Enough workers for the transactions waiting, within the limit.
        target = min(limits.max_connections, pending + dest.sending)
        if gate is not None:
            target = min(target, dest.workers + gate.room(dest.key.domain))
        if limits.rate_per_minute > 0:
            # a rate-limited destination gains nothing from parallel connections
            target = min(target, 1)
        # A bounded loop: with synchronous fakes a new worker can drain the
        # queue and finish before this loop looks again.
        for _ in range(max(0, target - dest.workers)):
            if not dest.queue or self._stopping or dest.workers >= target:
                break
            self._start_worker(dest)

    def _pending_transactions(self, dest: _Destination) -> int:
        if not self._settings.per_message:
            return len(dest.queue)
        per_tx = self._settings.max_recipients_per_transaction
        counts = Counter(d.message_pk for d in dest.queue)
        return sum(-(-n // per_tx) for n in counts.values())

    def _start_worker(self, dest: _Destination) -> None:
        dest.workers += 1
        d = Deferred.fromCoroutine(self._worker(dest))
        self._workers.add(d)

        def done(result: object) -> None:
            self._workers.discard(d)
            dest.workers -= 1
            failure = result if isinstance(result, Failure) else None
            if failure is not None and not failure.check(CancelledError):
                log.failure("outbound worker for {domain} failed", failure,
                            domain=dest.key.domain)
                if dest.workers == 0:
                    # a bug, not the destination: defer what is left rather
                    # than start another worker that fails the same way
                    self._dispatch.fail(self._take_all(dest), LocalFailure(
                        Reason.systemerror, failure.getErrorMessage()))
            if (dest.workers == 0 and not dest.queue and not dest.connections
                    and dest.next_send_at <= self._clock.seconds()):
                # idle: forget it (kept while a rate-limit slot is pending,
                # so an idle moment does not reset the rate)
                self._destinations.pop(dest.key, None)
            elif dest.queue:
                self._pump(dest)
            self._on_settled()

        d.addBoth(done)

    async def _worker(self, dest: _Destination) -> None:
        """Open a connection and send transactions on it while there is work."""
        while dest.queue and not self._stopping:
            conn = await self._connect(dest)
            if conn is None:
                return
            try:
                self._pump(dest)  # the destination works: more connections may help
                if not await self._use(dest, conn):
                    return  # the gate said stop: no new connection until it says go
            finally:
                if conn in dest.connections:
                    self._close_quietly(dest, conn)

    def _open(self, dest: _Destination, conn: ISMTPConnection, sent: int) -> bool:
        """True while ``conn`` may carry another transaction."""
        return (conn.usable and conn in dest.connections and not self._stopping
                and sent < self._limits_for(dest.key).messages_per_connection)

    async def _use(self, dest: _Destination, conn: ISMTPConnection) -> bool:
        """Send on ``conn`` while there is work, then keep it idle for a while.

        Returns:
            False when the gate said stop (the rows stay queued).
        """
        sent = 0
        while True:
            while dest.queue and self._open(dest, conn, sent):
                if not await self._rate_wait(dest):
                    return False
                batch = self._take(dest)
                if not batch:
                    break
                await self._transaction(dest, conn, batch)
                sent += 1
            if not (self._settings.idle_grace > 0 and not dest.queue
                    and self._open(dest, conn, sent)):
                return True
            # The queue ran dry: keep the session for the next claim
            # (_pump hands it work) rather than pay a new handshake.
            if not await self._wait_for_work(dest):
                return True

    async def _transaction(self, dest: _Destination, conn: ISMTPConnection,
                           batch: list[Delivery]) -> None:
        dest.sending += 1
        dest.transactions += 1
        try:
            if not await self._dispatch.send(conn, batch):
                self._close_quietly(dest, conn)
        except CancelledError:
            raise
        except Exception as e:
            log.failure("transaction to {domain} failed", domain=dest.key.domain)
            self._dispatch.fail(batch, LocalFailure(Reason.systemerror,
                                                    f"{e.__class__.__name__}: {e}"))
        finally:
            dest.sending -= 1

    async def _wait_for_work(self, dest: _Destination) -> bool:
        """Wait, idle, up to ``idle_grace`` seconds for work for ``dest``.

        Returns:
            True when :meth:`_pump` handed us work, False on timeout or stop.
        """
        waiter: Deferred[bool] = Deferred()
        dest.idle.append(waiter)

        def timeout() -> None:
            if not waiter.called:
                waiter.callback(False)

        timer = self._clock.callLater(self._settings.idle_grace, timeout)
        try:
            return await waiter
        finally:
            if timer.active():
                timer.cancel()
            if waiter in dest.idle:
                dest.idle.remove(waiter)

    def _dismiss_idle(self, dest: _Destination) -> None:
        """Tell every idle worker of ``dest`` to close its connection now."""
        while dest.idle:
            waiter = dest.idle.popleft()
            if not waiter.called:
                waiter.callback(False)

    async def _rate_wait(self, dest: _Destination) -> bool:
        """Wait for this destination's next send slot (``rate_per_minute``, or
        the gate's); False when the gate says not to send now."""
        now = self._clock.seconds()
        if self._gate is not None:
            wait = self._gate.reserve(dest.key.domain)
            if wait is None:
                return False
            slot = now + wait
        else:
            rate = self._limits_for(dest.key).rate_per_minute
            if rate <= 0:
                return True
            slot = max(now, dest.next_send_at)
            dest.next_send_at = slot + 60.0 / rate
        if slot > now:
            d: Deferred[None] = deferLater(self._clock, slot - now, lambda: None)
            self._sleeps.add(d)
            try:
                await d
            finally:
                self._sleeps.discard(d)
        return not self._stopping

    def _take(self, dest: _Destination) -> list[Delivery]:
        """The deliveries of the next transaction, in FIFO order."""
        if not dest.queue:
            return []
        first = dest.queue.popleft()
        if not self._settings.per_message or first.stream in self._settings.single_streams:
            return [first]
        # One transaction for up to max_recipients_per_transaction recipients
        # of the same message; others keep their places in the queue.
        batch = [first]
        rest: deque[Delivery] = deque()
        limit = self._settings.max_recipients_per_transaction
        for delivery in dest.queue:
            if delivery.message_pk == first.message_pk and len(batch) < limit:
                batch.append(delivery)
            else:
                rest.append(delivery)
        dest.queue = rest
        return batch

    @staticmethod
    def _take_all(dest: _Destination) -> list[Delivery]:
        batch = list(dest.queue)
        dest.queue.clear()
        return batch

    # -- connections ------------------------------------------------------------

    async def _connect(self, dest: _Destination) -> ISMTPConnection | None:
        """A connection to the destination, or None after recording every
        queued delivery of it (deferred, or failed for a permanent DNS answer)."""
        domain = dest.key.domain
        try:
            conn = await self._dialer.dial(domain, lambda: self._stopping, dest.key.pool)
        except DestinationError as e:
            log.info("no destination for {domain}: {reason} {error}",
                     domain=domain, reason=e.reason.value, error=e.message)
            self._dispatch.fail(self._take_all(dest), LocalFailure(
                e.reason, e.message, e.permanent, e.status))
            return None
        except DialFailed as e:
            error = e.error
            self._dispatch.fail(
                self._take_all(dest),
                SessionFailure(error.phase, error.reply, str(error), error.reason),
                host=e.target.host, ip=e.target.ip, facts=e.facts,
            )
            return None
        if conn is not None:
            dest.connections.add(conn)
            if self._gate is not None:
                self._gate.connected(domain, conn.info.host)
        return conn

    def _close_quietly(self, dest: _Destination, conn: ISMTPConnection) -> None:
        if conn in dest.connections and self._gate is not None:
            self._gate.disconnected(dest.key.domain)
            if self._gate.room(dest.key.domain) == 1:
                # a shared budget has room again: a queue without a worker may start
                self._clock.callLater(0, self.pump_all)
        dest.connections.discard(conn)
        d = Deferred.fromCoroutine(conn.close())
        d.addErrback(lambda f: log.failure("closing connection to {host} failed", f,
                                           host=conn.info.host))
        if not d.called:
            self._closing.add(d)
            d.addBoth(lambda _: self._closing.discard(d))

