"""The one executor interface: chosen once from configuration, same answers everywhere."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis import AnalysisStage
from hurricane.inbound.analysis_worker import Analyzed
from hurricane.inbound.executor import (
    CallExecutor,
    ProcessExecutor,
    ThreadExecutor,
    build_executor,
)
from hurricane.inbound.workers import WorkerLost
from hurricane.model import StoredBounce

from .test_processor import _ThreadClock


def _analyze(raw: bytes, rcpt: str | None = None, **kw: Any) -> Analysis:
    if raw == b"BUG":
        raise ValueError("analyzer bug")
    return Analysis("other", error=f"{raw!r} {rcpt} {sorted(kw)}")


class BuildExecutorTests(SynchronousTestCase):
    """build_executor picks processes or threads from ``analysis_processes``."""

    def test_processes(self) -> None:
        """analysis_processes >= 1: worker processes, which isolate a lost call."""
        ex = build_executor(_ThreadClock(), processes=2, threadpool=None,
                            limits=AnalysisLimits(), classifier=None)
        assert isinstance(ex, ProcessExecutor)
        self.assertEqual(ex.pool.processes, 2)
        self.assertTrue(ex.isolates)
        self.assertEqual(ex.pool.pids(), [])  # started lazily, on the first analysis

    def test_threads(self) -> None:
        """analysis_processes = 0: the given thread pool; a lost call is not retried alone."""
        ex = build_executor(_ThreadClock(), processes=0, threadpool=None, limits=None,
                            classifier=None)
        assert isinstance(ex, ThreadExecutor)
        self.assertFalse(ex.isolates)
        self.assertTrue(ex.in_thread)

    def test_threads_need_a_reactor(self) -> None:
        """A clock threads cannot report back to is refused at construction."""
        self.assertRaises(TypeError, build_executor, Clock(), processes=0, threadpool=None,
                          limits=None, classifier=None)


class CallExecutorTests(SynchronousTestCase):
    """Results per message, in order; one bad message fails only itself."""

    def test_batch_and_alone(self) -> None:
        """One message: the analyzer called as usual (limits passed); several: one call."""
        calls: list[Any] = []

        def runner(f: Any, *a: Any, **kw: Any) -> Deferred[Any]:
            calls.append(f)
            return maybeDeferred(f, *a, **kw)

        limits = AnalysisLimits()
        ex = CallExecutor(runner, analyze=_analyze, limits=limits)
        [one] = self.successResultOf(ex.submit([(b"a", "r@x")]))
        self.assertEqual(calls, [_analyze])
        assert isinstance(one.result, Analysis)
        self.assertEqual(one.result.error, "b'a' r@x ['limits']")
        many = self.successResultOf(ex.submit([(b"a", None), (b"BUG", None), (b"c", None)]))
        self.assertEqual(len(calls), 2)
        self.assertIsInstance(many[0].result, Analysis)
        self.assertIsInstance(many[1].result, ValueError)
        self.assertIsInstance(many[2].result, Analysis)
        self.assertTrue(all(a.fingerprint is None and a.record is None for a in many))

    def test_failed_call_fails_every_message(self) -> None:
        """A runner whose call fails gives that exception for each message."""
        ex = CallExecutor(lambda f, *a, **kw: fail(RuntimeError("pool gone")), analyze=_analyze)
        got = self.successResultOf(ex.submit([(b"a", None), (b"b", None)]))
        self.assertEqual([type(a.result) for a in got], [RuntimeError, RuntimeError])


class _Losing:
    """An executor whose batches are lost once (as after a worker's death)."""

    def __init__(self, isolates: bool) -> None:
        self.isolates = isolates
        self.calls: list[tuple[int, bool]] = []

    def submit(self, work: Any, *, alone: bool = False) -> Deferred[list[Analyzed]]:
        self.calls.append((len(work), alone))
        if not alone:
            return fail(WorkerLost("worker died"))
        return Deferred.fromCoroutine(self._one(work))

    async def _one(self, work: Any) -> list[Analyzed]:
        return [Analyzed(_analyze(raw, rcpt)) for raw, rcpt in work]

    def start(self) -> None:
        pass

    def stop(self, wait: bool) -> None:
        pass


class AnalysisStageTests(SynchronousTestCase):
    """The retry-once-alone rule applies to executors that isolate, and not while stopping."""

    def bounces(self, n: int) -> list[StoredBounce]:
        return [StoredBounce(i, b"m%d" % i, "", "r@x", 0.0, None, "pending") for i in range(n)]

    def test_lost_batch_is_retried_alone(self) -> None:
        """Each message of a lost batch goes once more, alone, in order."""
        ex = _Losing(isolates=True)
        stage = AnalysisStage(ex, lambda: False)
        got = self.successResultOf(Deferred.fromCoroutine(stage.analyze(self.bounces(3))))
        self.assertEqual(ex.calls, [(3, False), (1, True), (1, True), (1, True)])
        self.assertTrue(all(isinstance(a.result, Analysis) for a in got))

    def test_not_retried_without_isolation_or_while_stopping(self) -> None:
        """Threads (no isolation) or a stop: the loss is each message's answer (a retry later)."""
        for isolates, stopping in ((False, False), (True, True)):
            ex = _Losing(isolates=isolates)
            stage = AnalysisStage(ex, lambda s=stopping: s)
            got = self.successResultOf(Deferred.fromCoroutine(stage.analyze(self.bounces(2))))
            self.assertEqual(ex.calls, [(2, False)])
            self.assertEqual([type(a.result) for a in got], [WorkerLost, WorkerLost])
