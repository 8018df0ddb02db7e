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
  them (see ``BounceProcessor._analyze_all``).
- **Workers exit when the server dies**, even by ``kill -9``: a thread in
  each worker waits on the parent's sentinel, which closes with the parent,
  and ends the worker. Nothing else would: an idle worker blocks reading a
  pipe that its own copy of the pool's queue keeps open.
- The analyzer's own limits (size, depth, CPU via ``time.process_time``)
  apply inside the worker, where the CPU clock is the worker's alone.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as default_analyze
from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis_worker import Work, analyze_batch, init_worker

__all__ = ["AnalysisProcessPool", "Analyzed", "WorkerLost"]

log = Logger()

#: Per message: its analysis (or the exception the analyzer raised) and its
#: fingerprint (``message_fingerprint``).
Analyzed = tuple[Analysis | BaseException, bytes]


class WorkerLost(Exception):
    """The analysis did not come back: its worker died, or the pool was stopped.

    The message was not analyzed; it is still pending in the store.
    """


# -- in the server ------------------------------------------------------------------


class AnalysisProcessPool:
    """Runs batches of analyses in ``processes`` spawned worker processes.

    Args:
        reactor: where results are delivered (``callFromThread``).
        processes: worker processes (at least 1).
        rules_files: operator rule files; each worker loads the classifier
            from them once (``ReplyClassifier.load``).
        limits: the analyzer's limits; None uses its defaults.
        analyze: the analysis function, a module-level function (it is
            pickled by name, once per worker); tests inject their own.
        context: the multiprocessing start method: "spawn" or "forkserver".
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
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        if context == "fork":
            raise ValueError("never fork a process that runs a reactor and threads")
        self._reactor = reactor
        self._processes = processes
        self._initargs = (analyze, tuple(rules_files), limits)
        self._context = multiprocessing.get_context(context)
        self._executor: ProcessPoolExecutor | None = None
        self._stopped = False
        #: Pools created so far (a dead worker costs one).
        self.generation = 0

    @property
    def processes(self) -> int:
        """How many worker processes the pool runs at most."""
        return self._processes

    def pids(self) -> list[int]:
        """The live workers' process ids (empty before the first analysis)."""
        ex = self._executor
        procs = getattr(ex, "_processes", None) or {}
        return [p.pid for p in list(procs.values()) if p.is_alive()]

    def analyze(self, work: list[Work]) -> Deferred[list[Analyzed]]:
        """Analyze ``work`` in a worker.

        Returns:
            A Deferred firing on the reactor thread with one
            (Analysis or the exception the analyzer raised, fingerprint)
            per message, in order; it fails
            with :class:`WorkerLost` when the worker died or the pool stopped
            first.
        """
        if self._stopped:
            return fail(WorkerLost("the analysis pool is stopped"))
        executor = self._executor
        if executor is None:
            executor = self._executor = ProcessPoolExecutor(
                self._processes, mp_context=self._context,
                initializer=init_worker, initargs=self._initargs,
            )
            self.generation += 1
        try:
            future = executor.submit(analyze_batch, work)
        except (BrokenProcessPool, RuntimeError) as e:
            # broken already (a worker died since), or shut down
            self._drop(executor)
            return fail(WorkerLost(f"analysis worker lost: {e}"))
        d: Deferred[list[Analyzed]] = Deferred()

        def done(f: Future[list[Analyzed]]) -> None:
            # in the pool's management thread (or here, if already done)
            self._reactor.callFromThread(self._settle, d, f, executor)

        future.add_done_callback(done)
        return d

    def _settle(self, d: Deferred[list[Analyzed]],
                f: Future[list[Analyzed]], executor: ProcessPoolExecutor) -> None:
        """Fire ``d`` with the future's outcome (reactor thread)."""
        try:
            results = f.result()
        except (BrokenProcessPool, CancelledError) as e:
            if isinstance(e, BrokenProcessPool) and not self._stopped:
                log.warn("an analysis worker died ({error}); starting new workers",
                         error=str(e))
            self._drop(executor)
            d.errback(WorkerLost(f"analysis worker lost: {e or type(e).__name__}"))
            return
        except BaseException as e:
            # the call itself failed (arguments or results that would not pickle)
            d.errback(e)
            return
        d.callback(results)

    def _drop(self, executor: ProcessPoolExecutor) -> None:
        """Forget a broken pool, so the next call starts a new one."""
        if self._executor is executor:
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)

    def stop(self, wait: bool = True) -> None:
        """Stop the workers; calls still in flight fail with :class:`WorkerLost`.

        Args:
            wait: join the (idle) workers here; otherwise they are killed at
                once (an analysis is stuck past the stop timeout) and reaped
                by a helper thread.
        """
        self._stopped = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if wait:
            executor.shutdown(wait=True, cancel_futures=True)
            return
        procs = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.kill()

        def reap() -> None:
            for p in procs:
                p.join(10)

        threading.Thread(target=reap, name="hurricane-analysis-reap", daemon=True).start()

    def restart(self) -> None:
        """Allow analyses again after :meth:`stop` (a service started again)."""
        self._stopped = False
