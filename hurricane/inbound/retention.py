"""Retention of returned mail: drop the raw bytes once they are old enough.

The bounce listener accepts mail from anyone, so what it stores must not grow
without bound. Each returned message keeps its raw bytes for ``[bounce]
retention`` seconds after it was received (for replays after a rule change,
and for the operator to read); after that, once it is analyzed (or its
analysis failed for good), :class:`BounceRetention` drops the bytes and keeps
the analysis, the envelope recipients and the events. A message still
pending analysis is never purged: it has not been looked at yet.

The purge runs at start and then every ``interval`` seconds, in bounded
batches (one short statement each), so that a backlog after a long pause is
worked off over a few runs instead of in one long transaction.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from hurricane.store.interface import IOutcomeStore, StoreUnavailable

__all__ = ["BounceRetention"]

log = Logger()


class BounceRetention(Service):
    """Purges the raw bytes of returned mail older than the retention period.

    Args:
        store: the outcome store.
        clock: the reactor's time (runs and the age cut-off).
        retention: seconds a returned message keeps its bytes (> 0).
        interval: seconds between purges.
        batch: messages purged per statement.
        max_batches: statements per run at most (bounds a run after a long
            pause; the rest waits for the next run).
    """

    name = "bounce-retention"

    def __init__(self, store: IOutcomeStore, clock: IReactorTime, retention: float, *,
                 interval: float = 3600.0, batch: int = 1000, max_batches: int = 100) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive (0 means: do not build the service)")
        self._store = store
        self._clock = clock
        self._retention = retention
        self._interval = interval
        self._batch = batch
        self._max_batches = max_batches
        self._loop: LoopingCall | None = None
        self._running: Deferred[None] | None = None
        #: Messages purged since start, for the admin console.
        self.purged = 0

    def startService(self) -> None:
        """Purge at once, then every ``interval`` seconds."""
        super().startService()  # type: ignore[no-untyped-call]
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self) -> Deferred[None] | None:
        """Stop the timer; wait for a purge in progress (one short statement)."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self._running

    def _tick(self) -> Deferred[None]:
        running = self._running = Deferred.fromCoroutine(self._purge())

        def done(_: None) -> None:
            if self._running is running:
                self._running = None

        running.addCallback(done)
        return running

    async def _purge(self) -> None:
        await self.purge()

    async def purge(self) -> int:
        """One run: purge what is past the retention period, in batches.

        Never raises: a store outage is logged and the next run tries again.

        Returns:
            How many messages lost their raw bytes in this run.
        """
        total = 0
        try:
            for _ in range(self._max_batches):
                now = self._clock.seconds()
                count = await self._store.purge_bounces(now - self._retention, now,
                                                        self._batch)
                total += count
                if count < self._batch or not self.running:
                    break
        except StoreUnavailable as e:
            log.warn("retention: store unavailable, will try again in {interval} s: {error}",
                     interval=self._interval, error=str(e))
        except Exception:
            log.failure("retention: purging returned mail failed")
        if total:
            self.purged += total
            log.info("retention: dropped the raw bytes of {count} returned messages older "
                     "than {days} days", count=total, days=round(self._retention / 86400, 1))
        return total
