"""Attempt results on their way to the store: batched, and kept until written.

A finished attempt's result waits up to ``delay`` seconds for others to
share its ``record_attempts`` call (never more than ``batch`` results in
one). Nobody waits on that write (the sender had its 250 long ago, the
connection goes on), and at low concurrency each result would otherwise be
its own store transaction and commit.

A result not written yet keeps its delivery's slot: the claim loop counts
:meth:`ResultWriter.pending` results as taken (until a result is written, a
crash would send that mail again, and ``max_in_flight`` is also the bound on
what a crash can send twice), and :class:`ResultWriter` tells it when a
write frees them (``on_written``). A failed write keeps the results and
tries again after ``retry_interval``; results finishing meanwhile join that
retry instead of each causing another failing write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from hurricane.model import AttemptResult

__all__ = ["RECORD_BATCH", "RECORD_DELAY", "ResultWriter", "WriterSettings"]

log = Logger()

#: Results written in one ``record_attempts`` call at most.
RECORD_BATCH = 200
#: Seconds from a finished attempt to the write of its result (the server's
#: setting; tests use 0). A result still in memory when the process dies is
#: sent again: at least once, never lost, as for the transaction under way.
RECORD_DELAY = 0.02


class AttemptRecorder(Protocol):
    """Where results go (the store)."""

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        """Record attempt outcomes in one transaction."""


@dataclass(frozen=True)
class WriterSettings:
    """How results are batched.

    Attributes:
        delay: seconds a result waits for others (0: the next reactor turn).
        batch: results per write at most; a full batch is written at once.
        retry_interval: seconds before a failed write is tried again.
    """

    delay: float = 0.0
    batch: int = RECORD_BATCH
    retry_interval: float = 1.0


class ResultWriter:
    """Writes attempt results in batches with ``record_attempts``.

    Args:
        recorder: the store.
        clock: the write timer.
        settings: delay, batch size, retry interval.
        on_written: called after each batch written (its slots are free).
        on_settled: called when a write round ends (the service may be idle).
    """

    def __init__(self, recorder: AttemptRecorder, clock: IReactorTime, settings: WriterSettings,
                 on_written: Callable[[], None], on_settled: Callable[[], None]) -> None:
        self._recorder = recorder
        self._clock = clock
        self._settings = WriterSettings(max(0.0, settings.delay), max(1, settings.batch),
                                        settings.retry_interval)
        self._on_written = on_written
        self._on_settled = on_settled
        self._results: list[AttemptResult] = []
        self._call: IDelayedCall | None = None
        self._writing = False
        #: The scheduled write is the retry of a failed one.
        self._retrying = False
        #: No retry is scheduled after a failure (the service stops).
        self._stopping = False

    @property
    def pending(self) -> int:
        """Results not written yet (each still holds its delivery's slot)."""
        return len(self._results)

    @property
    def busy(self) -> bool:
        """True while a write is on its way."""
        return self._writing

    def add(self, result: AttemptResult) -> None:
        """Queue one result; it is written within ``delay`` seconds.

        Args:
            result: the attempt's outcome.
        """
        self._results.append(result)
        full = len(self._results) >= self._settings.batch
        self._schedule(0 if full else self._settings.delay)

    def _schedule(self, delay: float) -> None:
        """Write in ``delay`` seconds, or sooner when a write is already due."""
        if self._writing:
            return  # the running write loops until the list is empty
        call = self._call
        if call is not None and call.active():
            if self._retrying or call.getTime() <= self._clock.seconds() + delay:
                # an earlier write is due, or a failed write waits out the
                # retry interval (new results must not bring it forward)
                return
            call.cancel()
        self._call = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        self._retrying = False
        d = Deferred.fromCoroutine(self.write())
        d.addErrback(lambda f: log.failure("recording attempt results failed", f))

    async def write(self) -> None:
        """Write every pending result now, a batch at a time.

        A failed batch stays pending and is tried again after
        ``retry_interval`` (unless the service stops).
        """
        if self._writing:
            return
        self._writing = True
        retry = False
        try:
            while self._results:
                batch = self._results[: self._settings.batch]
                try:
                    await self._recorder.record_attempts(batch)
                except CancelledError:
                    raise
                except Exception:
                    # Keep the results: writing them late is better than
                    # losing them (the rows would be sent again).
                    log.failure("recording {count} attempt results failed; retrying in "
                                "{delay}s", count=len(batch), delay=self._settings.retry_interval)
                    retry = True
                    return
                # results added while we waited are behind this batch
                del self._results[: len(batch)]
                self._on_written()
        finally:
            self._writing = False
            if retry and not self._stopping:
                self._schedule(self._settings.retry_interval)
                self._retrying = True
            self._on_settled()

    def stop_retrying(self) -> None:
        """No retry is scheduled after a failed write from now on (the service stops)."""
        self._stopping = True

    def cancel(self) -> None:
        """Cancel the scheduled write, if any."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._retrying = False

    def start(self) -> None:
        """Allow retries again (the service starts)."""
        self._stopping = False
