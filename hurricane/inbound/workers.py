"""Bounce analysis in worker processes, so it runs beside the reactor, not under its GIL.

The bounce listener, the store's writes and the recording of outcomes all run
on the reactor thread. Analysis is pure CPU work; in a thread it takes the GIL
from the reactor for milliseconds at a time. In a process it runs on another
core.

Why each choice:

- **spawn, never fork.** The server process runs a reactor, a store
  connection and thread pools; a forked copy would inherit their locks in
  whatever state they were and every listening socket. A spawned worker is
  a fresh interpreter: it inherits no descriptor but the pipes of the pool.
- **The classifier is loaded once per worker** (the initializer), not sent
  with each call: a call carries only the raw bytes and the envelope
  recipient, and brings back the picklable :class:`Analysis`.
- **Started lazily**, on the first analysis: many service trees (tests, the
  CLI) never analyze anything, and a spawned interpreter costs ~0.2 s.
- **A worker that dies** (killed, out of memory, a crash in C code) breaks
  the whole ``ProcessPoolExecutor``. The calls in flight fail with
  :class:`WorkerLost`, the broken pool is dropped and the next call starts a
  new one. The messages are still pending in the store; the processor retries
  them (see :mod:`hurricane.inbound.analysis`).
- **Workers exit when the server dies**, even by ``kill -9``: a thread in
  each worker waits on the parent's sentinel, which closes with the parent,
  and ends the worker. Nothing else would: an idle worker blocks reading a
  pipe that its own copy of the pool's queue keeps open.
- The analyzer's own limits (size, depth, CPU via ``time.process_time``)
  apply inside the worker, where the CPU clock is the worker's alone. They
  are cooperative: a hang in C code (a catastrophic regex) never checks
  them. So each call also has a **deadline** on the reactor's clock
  (``cpu_seconds`` per message plus ``call_margin``); past it the pool's
  workers are killed and the call fails with :class:`WorkerLost`, like any
  dead worker.
- **Two calls per worker are handed to the executor** (``depth``), so a
  worker that finishes one call starts the next at once instead of idling
  while its result crosses the busy reactor and the next call comes back.
  When every worker is busy, a call's deadline covers the messages handed
  over before it as well as its own; the calls beyond ``depth`` wait here,
  on the reactor thread, so deadlines stay bounded. A hang past a deadline
  kills the workers and so fails every call handed over (up to
  ``processes * depth``), whose messages the processor then analyzes one by
  one.
- **Each new set of workers is pinged first**, before any message reaches
  it. Workers that cannot start (a rules file deleted or invalid since
  start-up, a package upgraded in place under the server, no process or
  descriptor left) fail every call queued with :class:`PoolUnavailable`: a
  fault of the installation, not of the messages, which the processor
  retries with backoff like a store outage instead of counting them as
  having killed their workers. The worker reports its initializer's error
  through the ping rather than dying, so the log names the cause.
- **A call made "alone"** (``analyze(work, alone=True)``, the processor's
  retry of a message whose worker died) runs with nothing else in the pool:
  it waits for the calls in flight, and later calls wait for it, so a death
  during it is this message's doing (or the OOM killer's), not another
  batch's.
- **A pool found broken at submit** (a worker died while idle) costs
  nothing: the call goes to a fresh pool, once.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as default_analyze
from hurricane.inbound.analysis_worker import (
    Analyzed,
    Work,
    WorkerInitFailed,
    analyze_batch,
    init_worker,
    ping,
)

__all__ = ["AnalysisProcessPool", "Analyzed", "PoolUnavailable", "WorkerLost"]

log = Logger()



class WorkerLost(Exception):
    """The analysis did not come back: its worker died, or the pool was stopped.

    The message was not analyzed; it is still pending in the store.
    """


class PoolUnavailable(WorkerLost):
    """No worker could be started, or none could initialize; nothing was analyzed.

    Not the messages' fault: retry them later (with backoff), count nothing
    against them.
    """


@dataclass(eq=False)
class _Call:
    """One call to :meth:`AnalysisProcessPool.analyze`, queued or in flight."""

    work: list[Work]
    d: Deferred[list[Analyzed]]
    alone: bool
    #: Sent to a fresh pool once already after finding the pool broken at submit.
    resubmitted: bool = False
    executor: ProcessPoolExecutor | None = None
    timer: IDelayedCall | None = field(default=None, repr=False)
    deadline: float = 0.0


# -- in the server ------------------------------------------------------------------


class AnalysisProcessPool:
    """Runs batches of analyses in ``processes`` spawned worker processes.

    Args:
        reactor: where results are delivered (``callFromThread``).
        processes: worker processes (at least 1).
        rules_files: operator rule files; each worker loads the classifier
            from them once (``ReplyClassifier.load``). Relative paths are
            made absolute here, against the current directory at
            construction (start-up), as the server's own classifier reads
            them: workers start later, maybe after a change of directory.
        limits: the analyzer's limits; None uses its defaults.
        analyze: the analysis function, a module-level function (it is
            pickled by name, once per worker); tests inject their own.
        context: the multiprocessing start method: "spawn" or "forkserver".
        clock: the clock of the deadlines; defaults to ``reactor``.
        call_margin: added to ``limits.cpu_seconds`` per message to make a
            call's deadline (scheduling, a worker spawned for the call,
            pickling, CPU shared with other processes).
        depth: calls handed to the executor per worker process (the rest
            wait in the pool); 1 hands a call over only when a worker is
            free, so that each deadline measures its own call alone.
        start_timeout: how long new workers have to answer their first ping.
    """

    def __init__(
        self,
        reactor: IReactorFromThreads,
        processes: int,
        *,
        rules_files: Sequence[str] = (),
        limits: AnalysisLimits | None = None,
        analyze: Any = default_analyze,
        context: str = "spawn",
        clock: IReactorTime | None = None,
        call_margin: float = 10.0,
        start_timeout: float = 60.0,
        depth: int = 2,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        if depth < 1:
            raise ValueError("depth must be at least 1")
        if context == "fork":
            raise ValueError("never fork a process that runs a reactor and threads")
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self._processes = processes
        self._depth = depth
        rules = tuple(os.path.abspath(os.fspath(f)) for f in rules_files)
        self._initargs = (analyze, rules, limits)
        self._cpu_seconds = (limits if limits is not None else AnalysisLimits()).cpu_seconds
        self._call_margin = call_margin
        self._start_timeout = start_timeout
        self._context = multiprocessing.get_context(context)
        self._executor: ProcessPoolExecutor | None = None
        #: The current executor answered its ping: calls may go to it.
        self._ready = False
        #: Pings of the current executor not answered yet.
        self._pings_left = 0
        self._ping_timer: IDelayedCall | None = None
        self._queue: collections.deque[_Call] = collections.deque()
        self._alone: collections.deque[_Call] = collections.deque()
        self._running: set[_Call] = set()
        self._dispatching = False
        #: The cause last logged for workers that could not start.
        self._start_error: str | None = None
        self._stopped = False
        #: Pools created so far (a dead worker costs one).
        self.generation = 0

    @property
    def processes(self) -> int:
        """How many worker processes the pool runs at most."""
        return self._processes

    def pids(self) -> list[int]:
        """The live workers' process ids (empty before the first analysis)."""
        return [p.pid for p in _procs(self._executor) if p.is_alive()]

    def analyze(self, work: list[Work], *, alone: bool = False) -> Deferred[list[Analyzed]]:
        """Analyze ``work`` in a worker.

        Args:
            work: the messages (raw bytes, envelope recipient).
            alone: run with no other call in the pool (after a worker died
                under a batch, to learn whether this message kills it).

        Returns:
            A Deferred firing on the reactor thread with one
            (Analysis or the exception the analyzer raised, fingerprint)
            per message, in order; it fails with :class:`WorkerLost` when
            the worker died, passed its deadline or the pool stopped first,
            and with :class:`PoolUnavailable` when no worker could start.
        """
        if self._stopped:
            return fail(WorkerLost("the analysis pool is stopped"))
        call = _Call(list(work), Deferred(), alone)
        (self._alone if alone else self._queue).append(call)
        self._dispatch()
        return call.d

    # -- dispatching (reactor thread) -------------------------------------------

    def _dispatch(self) -> None:
        """Hand queued calls to the executor while they may run (loop, not recursion)."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while not self._stopped and (self._queue or self._alone):
                if self._executor is None:
                    self._start()
                    continue  # started (wait for the ping) or every call failed
                if not self._ready:
                    return  # the ping is out
                call = self._next()
                if call is None:
                    return
                self._submit(call)
        finally:
            self._dispatching = False

    def _next(self) -> _Call | None:
        """The call that may go to the executor now, taken off its queue."""
        if any(c.alone for c in self._running):
            return None  # nothing beside a call made alone
        if self._alone:
            # first in line; it waits for the calls in flight to finish
            return None if self._running else self._alone.popleft()
        if self._queue and len(self._running) < self._processes * self._depth:
            return self._queue.popleft()
        return None

    def _start(self) -> None:
        """Start new workers and ping them; calls wait for the answer."""
        executor: ProcessPoolExecutor | None = None
        try:
            executor = ProcessPoolExecutor(
                self._processes, mp_context=self._context,
                initializer=init_worker, initargs=self._initargs,
            )
            self.generation += 1
            # One ping per process: the executor spawns a worker per call while
            # none is idle, so every worker starts (and loads the analyzer) now,
            # not cold in the middle of the first burst of returns.
            futures = [executor.submit(ping) for _ in range(self._processes)]
        except Exception as e:
            # no process or descriptor left (OSError), no thread (RuntimeError)...
            if executor is not None:
                self._kill(executor, "could not start")
            self._unavailable(f"{type(e).__name__}: {e}")
            return
        self._executor = executor
        self._ready = False
        self._pings_left = len(futures)
        self._ping_timer = self._clock.callLater(
            self._start_timeout, self._ping_timed_out, executor)
        for future in futures:
            future.add_done_callback(
                lambda f: self._reactor.callFromThread(self._pinged, executor, f))

    def _pinged(self, executor: ProcessPoolExecutor, f: Future[str | None]) -> None:
        """An answer to one of new workers' pings (reactor thread); ready after all."""
        if executor is not self._executor or self._stopped or self._ready:
            return
        try:
            error = f.result()
        except BaseException as e:
            codes = [p.exitcode for p in _procs(executor) if p.exitcode is not None]
            error = (f"the workers exited while starting ({type(e).__name__}"
                     + (f", exit code {codes[0]}" if codes else "")
                     + "; their traceback is on the server's stderr)")
        if error is not None:
            self._cancel_ping_timer()
            self._kill(executor, error)
            self._unavailable(error)
            return
        self._pings_left -= 1
        if self._pings_left > 0:
            return
        self._cancel_ping_timer()
        self._ready = True
        if self._start_error is not None:
            log.info("analysis workers started again")
            self._start_error = None
        self._dispatch()

    def _ping_timed_out(self, executor: ProcessPoolExecutor) -> None:
        self._ping_timer = None
        if executor is self._executor and not self._ready:
            error = f"the workers did not answer within {self._start_timeout:g} s"
            self._kill(executor, error)
            self._unavailable(error)

    def _unavailable(self, cause: str) -> None:
        """Workers could not start: fail every queued call with :class:`PoolUnavailable`."""
        self._log_cause(cause)
        calls = list(self._alone) + list(self._queue)
        self._alone.clear()
        self._queue.clear()
        for call in calls:
            call.d.errback(PoolUnavailable(f"analysis workers cannot start: {cause}"))

    def _log_cause(self, cause: str) -> None:
        """One error per cause while workers cannot start, not one per message."""
        if cause != self._start_error:
            log.error("analysis workers cannot start: {cause}; returned messages stay "
                      "pending and are retried", cause=cause)
            self._start_error = cause
        else:
            log.info("analysis workers still cannot start: {cause}", cause=cause)

    def _submit(self, call: _Call) -> None:
        """Send one call to the (ready) executor, with its deadline."""
        executor = self._executor
        assert executor is not None
        try:
            future = executor.submit(analyze_batch, call.work)
        except (BrokenProcessPool, RuntimeError) as e:
            # A worker died while idle (or the executor was shut down):
            # nothing ran; a fresh pool gets the call, once.
            self._drop(executor)
            if call.resubmitted:
                call.d.errback(WorkerLost(f"analysis worker lost: {e}"))
            else:
                call.resubmitted = True
                (self._alone if call.alone else self._queue).appendleft(call)
            return
        except Exception as e:
            # Could not spawn a worker for it (OSError): not the messages'
            # fault. Calls in flight finish in the dropped executor.
            self._drop(executor)
            (self._alone if call.alone else self._queue).appendleft(call)
            self._unavailable(f"{type(e).__name__}: {e}")
            return
        # With every worker busy, the messages handed over before this call
        # may all run first; with one free, it starts at once.
        on_executor = [c for c in self._running if c.executor is executor]
        ahead = (sum(len(c.work) for c in on_executor)
                 if len(on_executor) >= self._processes else 0)
        call.executor = executor
        call.deadline = self._cpu_seconds * (ahead + len(call.work)) + self._call_margin
        call.timer = self._clock.callLater(call.deadline, self._timed_out, call)
        self._running.add(call)
        future.add_done_callback(
            lambda f: self._reactor.callFromThread(self._settle, call, f))

    def _settle(self, call: _Call, f: Future[list[Analyzed]]) -> None:
        """Fire the call's Deferred with the future's outcome (reactor thread)."""
        if call not in self._running:
            return  # already failed (deadline, stop)
        self._finish(call)
        try:
            results = f.result()
        except WorkerInitFailed as e:
            # a worker started later than the ping could not initialize
            self._kill(call.executor, "a worker could not initialize")
            self._log_cause(str(e))
            outcome: Any = PoolUnavailable(f"analysis workers cannot start: {e}")
        except (BrokenProcessPool, CancelledError) as e:
            if isinstance(e, BrokenProcessPool) and not self._stopped:
                log.warn("an analysis worker died ({error}); starting new workers",
                         error=str(e))
            self._drop(call.executor)
            outcome = WorkerLost(f"analysis worker lost: {e or type(e).__name__}")
        except BaseException as e:
            # the call itself failed (arguments or results that would not pickle)
            outcome = e
        else:
            outcome = None
        # the next call goes to the worker before this one's results are used
        self._dispatch()
        if outcome is None:
            call.d.callback(results)
        else:
            call.d.errback(outcome)

    def _finish(self, call: _Call) -> None:
        self._running.discard(call)
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None

    def _timed_out(self, call: _Call) -> None:
        """A call passed its deadline: kill its workers; it fails with :class:`WorkerLost`."""
        call.timer = None
        if call not in self._running:
            return
        log.warn("an analysis of {count} messages did not finish within {deadline} s; "
                 "killing its workers", count=len(call.work), deadline=call.deadline)
        self._finish(call)
        self._kill(call.executor, "killed after another call's deadline")
        self._dispatch()
        call.d.errback(WorkerLost(
            f"the analysis did not finish within {call.deadline:g} s; its worker was killed"))

    # -- executors ----------------------------------------------------------------

    def _cancel_ping_timer(self) -> None:
        if self._ping_timer is not None and self._ping_timer.active():
            self._ping_timer.cancel()
        self._ping_timer = None

    def _drop(self, executor: ProcessPoolExecutor | None) -> None:
        """Forget a broken pool, so the next call starts a new one."""
        if executor is not None and self._executor is executor:
            self._executor = None
            self._ready = False
            self._cancel_ping_timer()
            executor.shutdown(wait=False, cancel_futures=True)

    def _kill(self, executor: ProcessPoolExecutor | None, why: str) -> None:
        """Drop a pool and kill its workers; its calls in flight fail with WorkerLost."""
        if executor is None:
            return
        _kill_workers(executor)
        self._drop(executor)
        for call in [c for c in self._running if c.executor is executor]:
            self._finish(call)
            call.d.errback(WorkerLost(f"analysis worker lost: {why}"))

    def stop(self, wait: bool = True) -> None:
        """Stop the workers; calls queued or in flight fail with :class:`WorkerLost`.

        Args:
            wait: join the (idle) workers here; otherwise they are killed at
                once (an analysis is stuck past the stop timeout) and reaped
                by a helper thread.
        """
        self._stopped = True
        self._cancel_ping_timer()
        executor, self._executor = self._executor, None
        self._ready = False
        calls = list(self._running) + list(self._alone) + list(self._queue)
        self._alone.clear()
        self._queue.clear()
        for call in list(self._running):
            self._finish(call)
        if executor is not None:
            if wait:
                executor.shutdown(wait=True, cancel_futures=True)
            else:
                _kill_workers(executor)
        for call in calls:
            call.d.errback(WorkerLost("the analysis pool is stopped"))

    def restart(self) -> None:
        """Allow analyses again after :meth:`stop` (a service started again)."""
        self._stopped = False


def _procs(executor: ProcessPoolExecutor | None) -> list[Any]:
    """The worker processes of an executor (a private attribute of it)."""
    return list((getattr(executor, "_processes", None) or {}).values())


def _kill_workers(executor: ProcessPoolExecutor) -> None:
    """Kill an executor's workers now; a helper thread reaps them."""
    procs = _procs(executor)  # before shutdown(), which forgets them
    executor.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()

    def reap() -> None:
        for p in procs:
            p.join(10)

    threading.Thread(target=reap, name="hurricane-analysis-reap", daemon=True).start()
