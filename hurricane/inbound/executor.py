"""Where bounce analyses run: one interface, three ways (inline, threads, processes).

The processor hands an :class:`Executor` a batch of work (raw bytes and the
envelope recipient per message) and gets back a Deferred of one
:data:`Analyzed` per message. Which executor runs is decided once, from
``[bounce] analysis_processes``, by :func:`build_executor`:

- :class:`ProcessExecutor` (the default, ``analysis_processes >= 1``): spawned
  worker processes (:class:`hurricane.inbound.workers.AnalysisProcessPool`),
  off the reactor's GIL, each call under a deadline. A call can be *lost*
  (:class:`WorkerLost`: its worker died or passed the deadline); such an
  executor ``isolates``: the processor then runs each message of the batch
  once more, alone (see :mod:`hurricane.inbound.analysis`).
- :class:`ThreadExecutor` (``analysis_processes = 0``): a thread pool, one
  hop per batch.
- :class:`CallExecutor` with :func:`run_inline` (tests, command-line tools):
  at once, in the calling thread.

Exceptions raised by the analyzer come back in the list (one bad message
fails only itself); the Deferred itself fails only when the whole call did.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as default_analyze
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis_worker import Analyzed, Work
from hurricane.inbound.workers import AnalysisProcessPool
from hurricane.reactors import IAnalysisReactor

__all__ = [
    "AnalyzeFunction",
    "Analyzed",
    "CallExecutor",
    "Executor",
    "ProcessExecutor",
    "Runner",
    "ThreadExecutor",
    "build_executor",
    "run_inline",
]

#: The analyzer's signature: ``analyze(raw, envelope_rcpt, *, classifier=, limits=)``
#: (``hurricane.bounce.analyze.analyze``).
AnalyzeFunction = Callable[..., Analysis]

#: Runs ``f(*args, **kwargs)`` somewhere and returns a Deferred of its result.
Runner = Callable[..., "Deferred[Any]"]



def run_inline(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """A :data:`Runner` that calls ``f`` at once in the calling thread.

    For tests and command-line tools; the server runs analyses elsewhere.
    """
    return maybeDeferred(f, *args, **kwargs)


class Executor(Protocol):
    """Runs batches of analyses somewhere; chosen once, from configuration."""

    #: A call may be lost (:class:`~hurricane.inbound.workers.WorkerLost`)
    #: because of one of its messages: the processor then retries each of
    #: them once, alone (``submit(..., alone=True)``).
    isolates: bool

    def submit(self, work: Sequence[Work], *, alone: bool = False) -> Deferred[list[Analyzed]]:
        """Analyze ``work``; one :data:`Analyzed` per message, in order.

        Args:
            work: (raw bytes, envelope recipient) per message.
            alone: run with nothing else beside it (only meaningful when
                ``isolates``).
        """

    def start(self) -> None:
        """Accept work (again, after :meth:`stop`)."""

    def stop(self, wait: bool) -> Deferred[None] | None:
        """Stop; ``wait`` False: do not block on an analysis that is stuck.

        Returns None, or a Deferred that fires once the executor's processes
        are gone.
        """


def _analyze_many(
    analyze: AnalyzeFunction, work: Sequence[Work], kwargs: dict[str, Any],
    yield_gil: bool = False,
) -> list[Analyzed]:
    """Analyze several messages in one call (in a worker thread, or inline).

    Exceptions are returned, not raised, so one hostile message fails only
    itself; they are logged on the reactor thread. ``yield_gil``: in a
    thread, hand the GIL over between messages (inline, on the reactor
    thread, that would only wait on the other threads).
    """
    out: list[Analyzed] = []
    for raw, rcpt in work:
        try:
            out.append(Analyzed(analyze(raw, rcpt, **kwargs)))
        except Exception as e:
            out.append(Analyzed(e))
        if yield_gil:
            # Hand the GIL to the reactor between messages. Otherwise this
            # thread keeps it for up to the interpreter's switch interval
            # (5 ms) each time the reactor blocks on a send or poll, which
            # is what a busy SMTP listener does thousands of times a second.
            time.sleep(0)
    return out


class CallExecutor:
    """Runs the analyzer through a :data:`Runner`: one call per batch.

    Args:
        runner: runs a function and returns a Deferred of its result
            (:func:`run_inline`; tests hold calls with their own).
        analyze: the analysis function; defaults to
            ``hurricane.bounce.analyze.analyze``.
        limits: the analyzer's limits; None uses its defaults.
        classifier: the reply classifier; None uses the analyzer's default.
    """

    isolates = False
    #: Analyses run in another thread (see :func:`_analyze_many`).
    in_thread = False

    def __init__(self, runner: Runner = run_inline, *, analyze: AnalyzeFunction | None = None,
                 limits: AnalysisLimits | None = None,
                 classifier: ReplyClassifier | None = None) -> None:
        self._runner = runner
        self._analyze: AnalyzeFunction = analyze if analyze is not None else default_analyze
        self._kwargs: dict[str, Any] = {}
        if limits is not None:
            self._kwargs["limits"] = limits
        if classifier is not None:
            self._kwargs["classifier"] = classifier

    def submit(self, work: Sequence[Work], *, alone: bool = False) -> Deferred[list[Analyzed]]:
        """One runner call for the batch; a failed call fails every message."""
        n = len(work)
        if n == 1:
            # alone: the analyzer itself, so a runner sees the usual call
            raw, rcpt = work[0]
            d: Deferred[Any] = self._runner(self._analyze, raw, rcpt, **self._kwargs)
            d.addCallback(lambda one: [Analyzed(one)])
        else:
            d = self._runner(_analyze_many, self._analyze, list(work), self._kwargs,
                             self.in_thread)

        def failed(f: Failure) -> list[Analyzed]:
            e = f.value
            assert isinstance(e, BaseException)
            return [Analyzed(e)] * n

        d.addErrback(failed)
        return d

    def start(self) -> None:
        """Nothing to start."""

    def stop(self, wait: bool) -> None:
        """Nothing to stop."""


class ThreadExecutor(CallExecutor):
    """Analyses in a thread pool, one hop per batch.

    Args:
        reactor: where results are delivered (``IReactorFromThreads``).
        threadpool: the pool (owned by the caller); None: this executor
            starts and stops its own of ``threads`` threads.
        threads: the size of its own pool.

    Raises:
        TypeError: ``reactor`` cannot take calls from threads (a test clock).
    """

    def __init__(self, reactor: IReactorTime | IReactorFromThreads,
                 threadpool: ThreadPool | None = None, *, threads: int = 2,
                 analyze: AnalyzeFunction | None = None, limits: AnalysisLimits | None = None,
                 classifier: ReplyClassifier | None = None) -> None:
        if not IReactorFromThreads.providedBy(reactor):
            raise TypeError("analyses in threads need a reactor (IReactorFromThreads) to "
                            "report back to; run them some other way (CallExecutor)")
        from_threads: IReactorFromThreads = reactor
        self.own_pool: ThreadPool | None = None
        if threadpool is None:
            threadpool = self.own_pool = ThreadPool(
                minthreads=0, maxthreads=threads, name="hurricane-bounce-analysis")
        pool = threadpool

        def in_pool(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            return deferToThreadPool(from_threads, pool, f, *args, **kwargs)

        super().__init__(in_pool, analyze=analyze, limits=limits, classifier=classifier)
        self.in_thread = True

    def start(self) -> None:
        """Start the pool this executor owns."""
        if self.own_pool is not None:
            self.own_pool.start()

    def stop(self, wait: bool) -> None:
        """Stop the pool this executor owns (by a helper thread unless ``wait``)."""
        pool = self.own_pool
        if pool is None or not pool.started:
            return
        if wait:
            pool.stop()
        else:
            threading.Thread(target=pool.stop, name="hurricane-bounce-pool-stop",
                             daemon=True).start()


class ProcessExecutor:
    """Analyses in worker processes (each call under a deadline); the processor owns it.

    Its workers start with the first analysis and stop with the service.
    """

    isolates = True

    def __init__(self, pool: AnalysisProcessPool) -> None:
        self.pool = pool

    def submit(self, work: Sequence[Work], *, alone: bool = False) -> Deferred[list[Analyzed]]:
        """The pool's analysis (fingerprints computed in the worker)."""
        return self.pool.analyze(list(work), alone=alone)

    def start(self) -> None:
        """Allow analyses again after a stop."""
        self.pool.restart()

    def stop(self, wait: bool) -> Deferred[None]:
        """Stop the workers (killed at once unless ``wait``); fires when they are reaped."""
        return self.pool.stop(wait=wait)


def build_executor(
    reactor: IAnalysisReactor, *, processes: int, threadpool: ThreadPool | None,
    limits: AnalysisLimits | None, classifier: ReplyClassifier | None,
    rules_files: Sequence[str] = (),
) -> Executor:
    """The executor ``[bounce] analysis_processes`` asks for.

    Args:
        processes: worker processes; 0 runs analyses in ``threadpool``.
        rules_files: what each worker process loads its classifier from.
    """
    if processes:
        # Off the reactor's GIL, which serves SMTP and the store.
        return ProcessExecutor(AnalysisProcessPool(reactor, processes,
                                                   rules_files=rules_files, limits=limits))
    return ThreadExecutor(reactor, threadpool, limits=limits, classifier=classifier)
