"""Bounce analysis in worker processes, so it runs beside the reactor, not under its GIL.

The bounce listener, the store's writes and the recording of outcomes all run
on the reactor thread. Analysis is pure CPU work; in a thread it takes the GIL
from the reactor for milliseconds at a time. In a process it runs on another
core.

Why each choice:

- **The reactor drives the workers; no thread in the server.** Each worker
  is ``reactor.spawnProcess`` of ``python -m hurricane.inbound.analysis_worker``
  with a :class:`~twisted.internet.protocol.ProcessProtocol`; a call is a
  length-prefixed pickle written to the worker's stdin, its answer one read
  from its stdout (see :mod:`hurricane.inbound.analysis_worker`). A
  ``concurrent.futures`` pool needed two threads in the server (a queue
  feeder and a manager) and a wake-up pipe per call, and every hand-off
  between them and the reactor waited for the GIL.
- **A fresh interpreter, never fork.** The server process runs a reactor, a
  store connection and thread pools; a forked copy would inherit their locks
  in whatever state they were and every listening socket. A spawned worker
  inherits no descriptor but its stdin, stdout and stderr (the server's,
  where its tracebacks go).
- **The classifier is loaded once per worker** (the first frame carries the
  arguments of ``init_worker``), not sent with each call: a call carries only
  the raw bytes and the envelope recipient, and brings back the picklable
  :class:`Analysis`.
- **Started lazily**, on the first analysis, every worker at once (none is
  left to start cold under the first burst): many service trees (tests, the
  CLI) never analyze anything, and a spawned interpreter costs ~0.2 s.
- **A worker that dies** (killed, out of memory, a crash in C code) fails
  the calls handed to it with :class:`WorkerLost`; the other workers go on,
  and the next call starts a new worker in its place. The messages are still
  pending in the store; the processor retries them (see
  :mod:`hurricane.inbound.analysis`). A worker that died while idle costs
  nothing: it is replaced before any call reaches it, unless the call was
  written to its pipe before its death was seen.
- **Workers exit when the server dies**, even by ``kill -9``: their stdin
  reaches end of file when the server's end closes, and a worker ends there
  (after the batch it is analyzing, if any). :meth:`stop` closes their stdin
  the same way, or kills them.
- The analyzer's own limits (size, depth, CPU via ``time.process_time``)
  apply inside the worker, where the CPU clock is the worker's alone. They
  are cooperative: a hang in C code (a catastrophic regex) never checks
  them. So each call also has a **deadline** on the reactor's clock
  (``cpu_seconds`` per message plus ``call_margin``); past it its worker is
  killed and the call fails with :class:`WorkerLost`, like any dead worker.
- **Two calls per worker are handed over** (``depth``), so a worker that
  finishes one call starts the next at once instead of idling while its
  result crosses the busy reactor and the next call comes back. A worker
  answers its calls in order, so a call's deadline covers the messages
  handed to the same worker before it as well as its own. A call goes to
  the ready worker with the fewest calls; the calls beyond ``depth`` per
  worker wait here, so deadlines stay bounded. A hang past a deadline kills
  its worker and so fails the calls handed to it (up to ``depth``), whose
  messages the processor then analyzes one by one.
- **Each new worker is pinged first**, before any message reaches it.
  Workers that cannot start (a rules file deleted or invalid since
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
"""

from __future__ import annotations

import collections
import os
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import (
    IDelayedCall,
    IProcessTransport,
    IReactorProcess,
    IReactorTime,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as default_analyze
from hurricane.inbound.analysis_worker import (
    BATCH,
    PING,
    Analyzed,
    Work,
    WorkerInitFailed,
    frame,
)

__all__ = ["AnalysisProcessPool", "Analyzed", "PoolUnavailable", "WorkerLost"]

log = Logger()

#: The worker's command line after the interpreter.
WORKER_ARGS = ("-m", "hurricane.inbound.analysis_worker")


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
    worker: _Worker | None = None
    timer: IDelayedCall | None = field(default=None, repr=False)
    deadline: float = 0.0


# -- in the server ------------------------------------------------------------------


class _Worker(ProcessProtocol):
    """One worker process: frames in, answers out, in order (reactor thread only)."""

    def __init__(self, pool: AnalysisProcessPool) -> None:
        self.pool = pool
        self.pid: int | None = None
        #: Answered its ping: calls may go to it.
        self.ready = False
        #: Gone (or being killed): nothing more is sent to it.
        self.lost = False
        #: The calls handed to it, in the order it answers them.
        self.calls: collections.deque[_Call] = collections.deque()
        self._buffer = bytearray()
        self._proc: IProcessTransport | None = None
        #: Fires once both its pipes are closed (the reactor holds nothing of it but
        #: the process to reap, which it does on SIGCHLD) or it was reaped.
        self.ended: Deferred[None] = Deferred()
        self._open_pipes = {0, 1}

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's name)
        self._proc = self.transport
        self.pid = self._proc.pid if self._proc is not None else None

    def send(self, obj: Any) -> None:
        """Write one frame to the worker's stdin."""
        assert self._proc is not None
        self._proc.write(frame(obj))

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802
        if childFD != 1:
            return
        buf = self._buffer
        buf += data
        while len(buf) >= 4 and not self.lost:
            size = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + size:
                return
            body = bytes(buf[4:4 + size])
            del buf[:4 + size]
            self.pool._answered(self, body)

    def childConnectionLost(self, childFD: int) -> None:  # noqa: N802
        if childFD == 1:  # no more answers can come
            self.pool._lost(self)
        self._open_pipes.discard(childFD)
        if not self._open_pipes:
            self._ended()

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.pool._lost(self)
        self._ended()

    def _ended(self) -> None:
        self.pool._alive.discard(self)
        if not self.ended.called:
            self.ended.callback(None)

    def close(self) -> None:
        """End of file on its stdin: it exits after the calls it was handed."""
        self.lost = True
        if self._proc is not None:
            self._proc.closeStdin()

    def kill(self) -> None:
        """SIGKILL it now (the reactor reaps it)."""
        self.lost = True
        if self._proc is not None:
            try:
                self._proc.signalProcess("KILL")
            except (ProcessExitedAlready, OSError):
                pass

    def exit_code(self) -> int | None:
        """Its exit status if it has exited (peeked at, not reaped: the reactor reaps)."""
        if self.pid is None:
            return None
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (OSError, AttributeError):
            return None
        return None if info is None else info.si_status


class AnalysisProcessPool:
    """Runs batches of analyses in ``processes`` spawned worker processes.

    Args:
        reactor: spawns the workers and carries their pipes.
        processes: worker processes (at least 1).
        rules_files: operator rule files; each worker loads the classifier
            from them once (``ReplyClassifier.load``). Relative paths are
            made absolute here, against the current directory at
            construction (start-up), as the server's own classifier reads
            them: workers start later, maybe after a change of directory.
        limits: the analyzer's limits; None uses its defaults.
        analyze: the analysis function, a module-level function (it is
            pickled by name, once per worker); tests inject their own.
        context: kept for configuration compatibility: "spawn" (what the
            workers are) or "forkserver" (taken as "spawn"); "fork" is refused.
        clock: the clock of the deadlines; defaults to ``reactor``.
        call_margin: added to ``limits.cpu_seconds`` per message to make a
            call's deadline (scheduling, a worker spawned for the call,
            pickling, CPU shared with other processes).
        depth: calls handed to each worker process (the rest wait in the
            pool); 1 hands a call over only when a worker is free, so that
            each deadline measures its own call alone.
        start_timeout: how long new workers have to answer their first ping.
        executable: the Python interpreter of the workers.
    """

    def __init__(
        self,
        reactor: IReactorProcess,
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
        executable: str = sys.executable,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        if depth < 1:
            raise ValueError("depth must be at least 1")
        if context == "fork":
            raise ValueError("never fork a process that runs a reactor and threads")
        if context not in ("spawn", "forkserver"):
            raise ValueError(f"unknown start method {context!r}")
        self._reactor = reactor
        self._clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self._processes = processes
        self._depth = depth
        self._executable = executable
        rules = tuple(os.path.abspath(os.fspath(f)) for f in rules_files)
        # pickled now: an analyze function that does not pickle fails here, at start-up
        self._initargs = pickle.dumps((analyze, rules, limits))
        self._cpu_seconds = (limits if limits is not None else AnalysisLimits()).cpu_seconds
        self._call_margin = call_margin
        self._start_timeout = start_timeout
        #: Live workers, ready or still answering their ping.
        self._workers: list[_Worker] = []
        #: Every worker process not reaped yet (live, lost, closed or killed).
        self._alive: set[_Worker] = set()
        #: How long a stop waits for closed workers to exit before killing them.
        self.stop_grace = 10.0
        self._ping_timer: IDelayedCall | None = None
        self._queue: collections.deque[_Call] = collections.deque()
        self._alone: collections.deque[_Call] = collections.deque()
        self._running: set[_Call] = set()
        self._dispatching = False
        #: The cause last logged for workers that could not start.
        self._start_error: str | None = None
        self._stopped = False
        #: Sets of workers started so far (a dead worker costs one).
        self.generation = 0

    @property
    def processes(self) -> int:
        """How many worker processes the pool runs at most."""
        return self._processes

    def pids(self) -> list[int]:
        """The live workers' process ids (empty before the first analysis)."""
        return [w.pid for w in self._workers if w.pid is not None]

    def analyze(self, work: list[Work], *, alone: bool = False) -> Deferred[list[Analyzed]]:
        """Analyze ``work`` in a worker.

        Args:
            work: the messages (raw bytes, envelope recipient).
            alone: run with no other call in the pool (after a worker died
                under a batch, to learn whether this message kills it).

        Returns:
            A Deferred firing with one (Analysis or the exception the
            analyzer raised, fingerprint, record) per message, in order; it
            fails with :class:`WorkerLost` when the worker died, passed its
            deadline or the pool stopped first, and with
            :class:`PoolUnavailable` when no worker could start.
        """
        if self._stopped:
            return fail(WorkerLost("the analysis pool is stopped"))
        call = _Call(list(work), Deferred(), alone)
        (self._alone if alone else self._queue).append(call)
        self._dispatch()
        return call.d

    # -- dispatching --------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand queued calls to workers while they may run (loop, not recursion)."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while not self._stopped and (self._queue or self._alone):
                if (len(self._workers) < self._processes
                        and all(w.ready for w in self._workers)):
                    self._start()
                    continue  # started (wait for the pings) or every call failed
                worker = self._free_worker()
                call = self._next(worker)
                if call is None or worker is None:
                    return
                self._submit(call, worker)
        finally:
            self._dispatching = False

    def _free_worker(self) -> _Worker | None:
        """The ready worker with the fewest calls, if it may take one more."""
        ready = [w for w in self._workers if w.ready and not w.lost]
        if not ready:
            return None
        worker = min(ready, key=lambda w: len(w.calls))
        return worker if len(worker.calls) < self._depth else None

    def _next(self, worker: _Worker | None) -> _Call | None:
        """The call that may go to ``worker`` now, taken off its queue."""
        if worker is None or any(c.alone for c in self._running):
            return None  # nothing beside a call made alone
        if self._alone:
            # first in line; it waits for the calls in flight to finish
            return None if self._running else self._alone.popleft()
        return self._queue.popleft() if self._queue else None

    def _start(self) -> None:
        """Start the missing workers and ping them; calls wait for the answers."""
        started: list[_Worker] = []
        try:
            for _ in range(self._processes - len(self._workers)):
                worker = _Worker(self)
                self._reactor.spawnProcess(
                    worker, self._executable, [self._executable, *WORKER_ARGS],
                    env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2})
                started.append(worker)
                self._workers.append(worker)
                self._alive.add(worker)
                worker.send((list(sys.path), self._initargs))
                worker.send((PING, None))
        except Exception as e:
            # no process or descriptor left (OSError)...
            self._kill(started, "could not start")
            self._unavailable(f"{type(e).__name__}: {e}")
            return
        self.generation += 1
        self._cancel_ping_timer()
        self._ping_timer = self._clock.callLater(self._start_timeout, self._ping_timed_out)

    def _answered(self, worker: _Worker, body: bytes) -> None:
        """One answer from a worker: its ping's, else its oldest call's."""
        try:
            ok, value = pickle.loads(body)
        except Exception as e:  # an answer that does not unpickle in the server
            ok, value = False, e
        if not worker.ready:
            self._pinged(worker, value if ok else f"{type(value).__name__}: {value}")
            return
        if not worker.calls:
            return  # an answer to a call already failed and forgotten (stop)
        call = worker.calls.popleft()
        if call not in self._running:
            return  # already failed (deadline, stop)
        self._finish(call)
        outcome: BaseException | None = None
        if not ok:
            if isinstance(value, WorkerInitFailed):
                # a worker started later than the ping could not initialize
                self._log_cause(str(value))
                self._kill([worker], "a worker could not initialize")
                outcome = PoolUnavailable(f"analysis workers cannot start: {value}")
            else:
                # the call itself failed (arguments or results that would not pickle)
                outcome = value
        # the next call goes to the worker before this one's results are used
        self._dispatch()
        if outcome is None:
            call.d.callback(value)
        else:
            call.d.errback(outcome)

    def _pinged(self, worker: _Worker, error: str | None) -> None:
        """A new worker's answer to its ping: ready, or every new worker is dropped."""
        if error is not None:
            self._cancel_ping_timer()
            self._kill([w for w in self._workers if not w.ready], error)
            self._unavailable(error)
            return
        worker.ready = True
        if all(w.ready for w in self._workers):
            self._cancel_ping_timer()
        if self._start_error is not None:
            log.info("analysis workers started again")
            self._start_error = None
        self._dispatch()

    def _lost(self, worker: _Worker) -> None:
        """A worker's stdout closed or it exited: fail what it was handed."""
        if worker not in self._workers:
            return  # killed or stopped on purpose, already accounted for
        self._workers.remove(worker)
        worker.lost = True
        code = worker.exit_code()
        if not worker.ready:
            self._cancel_ping_timer()
            error = ("the workers exited while starting"
                     + (f" (exit code {code})" if code is not None else "")
                     + "; their traceback is on the server's stderr")
            self._kill([w for w in self._workers if not w.ready], error)
            self._unavailable(error)
            return
        why = "it exited" + (f" with code {code}" if code is not None else "")
        if worker.calls and not self._stopped:
            log.warn("an analysis worker died ({error}); starting another", error=why)
        self._fail_calls(worker, why)
        self._dispatch()

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        late = [w for w in self._workers if not w.ready]
        if late and not self._stopped:
            error = f"the workers did not answer within {self._start_timeout:g} s"
            self._kill(late, error)
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

    def _submit(self, call: _Call, worker: _Worker) -> None:
        """Send one call to a ready worker, with its deadline."""
        try:
            worker.send((BATCH, call.work))
        except Exception as e:  # work that does not pickle
            call.d.errback(e)
            return
        # The worker answers in order: the calls handed to it before run first.
        ahead = sum(len(c.work) for c in worker.calls)
        call.worker = worker
        call.deadline = self._cpu_seconds * (ahead + len(call.work)) + self._call_margin
        call.timer = self._clock.callLater(call.deadline, self._timed_out, call)
        worker.calls.append(call)
        self._running.add(call)

    def _finish(self, call: _Call) -> None:
        self._running.discard(call)
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None

    def _timed_out(self, call: _Call) -> None:
        """A call passed its deadline: kill its worker; it fails with :class:`WorkerLost`."""
        call.timer = None
        if call not in self._running:
            return
        log.warn("an analysis of {count} messages did not finish within {deadline} s; "
                 "killing its worker", count=len(call.work), deadline=call.deadline)
        self._finish(call)
        if call.worker is not None:
            self._kill([call.worker], "killed after another call's deadline")
        self._dispatch()
        call.d.errback(WorkerLost(
            f"the analysis did not finish within {call.deadline:g} s; its worker was killed"))

    # -- workers ------------------------------------------------------------------

    def _cancel_ping_timer(self) -> None:
        if self._ping_timer is not None and self._ping_timer.active():
            self._ping_timer.cancel()
        self._ping_timer = None

    def _fail_calls(self, worker: _Worker, why: str) -> None:
        calls = [c for c in worker.calls if c in self._running]
        worker.calls.clear()
        for call in calls:
            self._finish(call)
            call.d.errback(WorkerLost(f"analysis worker lost: {why}"))

    def _kill(self, workers: list[_Worker], why: str) -> None:
        """Kill workers; the calls handed to them fail with WorkerLost."""
        for worker in workers:
            if worker in self._workers:
                self._workers.remove(worker)
            worker.kill()
            self._fail_calls(worker, why)

    def stop(self, wait: bool = True) -> Deferred[None]:
        """Stop the workers; calls queued or in flight fail with :class:`WorkerLost`.

        Args:
            wait: let the workers end on their own (end of file on their
                stdin, after the call they are analyzing; killed if they
                have not exited ``stop_grace`` seconds later); otherwise they
                are killed at once (an analysis is stuck past the stop
                timeout).

        Returns:
            Fires when the reactor holds no pipe of any worker any more (a
            service stops with no selectable of its own left in the
            reactor; the processes, at end of file or killed, are reaped on
            SIGCHLD); it never blocks the reactor.
        """
        self._stopped = True
        self._cancel_ping_timer()
        workers, self._workers = self._workers, []
        calls = list(self._running) + list(self._alone) + list(self._queue)
        self._alone.clear()
        self._queue.clear()
        for call in list(self._running):
            self._finish(call)
        for worker in workers:
            worker.calls.clear()
            if wait:
                worker.close()
            else:
                worker.kill()
        for call in calls:
            call.d.errback(WorkerLost("the analysis pool is stopped"))
        return self._reaped()

    def _reaped(self) -> Deferred[None]:
        """Fires when no worker started so far has a pipe open in the reactor."""
        alive = [w for w in self._alive if not w.ended.called]
        if not alive:
            return succeed(None)
        grace = self._clock.callLater(self.stop_grace, self._kill_alive)
        done: Deferred[None] = Deferred()

        def one_ended(_: None) -> None:
            if all(w.ended.called for w in alive) and not done.called:
                if grace.active():
                    grace.cancel()
                done.callback(None)

        for w in alive:
            w.ended.addCallback(one_ended)
        return done

    def _kill_alive(self) -> None:
        for w in list(self._alive):
            if not w.ended.called:
                w.kill()

    def restart(self) -> None:
        """Allow analyses again after :meth:`stop` (a service started again)."""
        self._stopped = False
