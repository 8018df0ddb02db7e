"""Tests for hurricane.inbound.workers: analyses in spawned worker processes.

These start real processes, so they take a second or two; every wait is
bounded. The workers' pipes are carried by a reactor of their own (never the
global one, never run: the tests iterate it), while deadlines and the
processor run on a fake clock that the tests advance.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import AnalysisLimits
from hurricane.bounce.analyze import analyze as real_analyze
from hurricane.bounce.classify import ReplyClassifier
from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis_worker import encode_analysis
from hurricane.inbound.executor import ProcessExecutor
from hurricane.inbound.processor import BounceProcessor, message_fingerprint
from hurricane.inbound.workers import AnalysisProcessPool, PoolUnavailable, WorkerLost
from hurricane.model import State
from tests.peers import require_corpus

from .helpers import World, build_processor, dsn
from .test_processor import _ThreadClock


def pool_of(p: BounceProcessor) -> AnalysisProcessPool:
    """The worker pool of a processor built with ``processes=``."""
    assert isinstance(p.executor, ProcessExecutor)
    return p.executor.pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- analysis functions the workers run (module level: pickled by name) -------------


def _marked(raw: bytes) -> tuple[bytes, bytes]:
    """Split ``MARKER-PATH\\n`` off the front of a test message."""
    first, _, rest = raw.partition(b"\n")
    return first, rest


def _first_sight(raw: bytes) -> tuple[bool, bytes]:
    """(True the first time a marked message is seen, the message without its mark)."""
    path, rest = _marked(raw)
    if not path.startswith(b"/"):
        return False, raw
    if os.path.exists(path):
        return False, rest
    open(path, "w").close()
    return True, rest


def die_once(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """Kill this worker the first time a marked message is seen, then analyze it."""
    first, message = _first_sight(raw)
    if first:
        os._exit(3)
    return real_analyze(message, envelope_rcpt, **kw)


def die_always(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """Kill this worker on every message that starts with POISON; ``POISON <path>``
    also notes each death in <path>."""
    if raw.startswith(b"POISON"):
        first = raw.partition(b"\n")[0]
        if first.startswith(b"POISON "):
            with open(first[7:], "ab") as fp:
                fp.write(b"x")
        os._exit(3)
    return real_analyze(raw, envelope_rcpt, **kw)


def hang_once(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """Block (up to 30 s) the first time a marked message is seen, else analyze it."""
    first, message = _first_sight(raw)
    if first:
        time.sleep(30)
    return real_analyze(message, envelope_rcpt, **kw)


def hang_always(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """``HANG <path>``: note each start in <path>, then block (a C-level hang, as far
    as the analyzer's cooperative CPU limit knows); anything else is analyzed."""
    if raw.startswith(b"HANG "):
        with open(raw.partition(b"\n")[0][5:], "ab") as fp:
            fp.write(b"x")
        time.sleep(30)
    return real_analyze(raw, envelope_rcpt, **kw)


def gate(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """``GATE <dir>``: kill the worker the first time; later, create <dir>/started
    and wait for <dir>/release before analyzing. ``POISON``: note it in
    <dir-of-argv>/poison-ran (path on the first line) and kill the worker."""
    first, _, rest = raw.partition(b"\n")
    if first.startswith(b"GATE "):
        d = first[5:].decode()
        if not os.path.exists(os.path.join(d, "died")):
            open(os.path.join(d, "died"), "w").close()
            os._exit(3)
        open(os.path.join(d, "started"), "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(d, "release")) and time.monotonic() < deadline:
            time.sleep(0.005)
        return real_analyze(rest, envelope_rcpt, **kw)
    if first.startswith(b"POISON "):
        open(first[7:].decode(), "w").close()
        os._exit(3)
    return real_analyze(raw, envelope_rcpt, **kw)


def hold(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """``HOLD <dir>``: create <dir>/started, then wait (up to 20 s) for <dir>/release."""
    first, _, rest = raw.partition(b"\n")
    if first.startswith(b"HOLD "):
        d = first[5:].decode()
        open(os.path.join(d, "started"), "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(d, "release")) and time.monotonic() < deadline:
            time.sleep(0.005)
        raw = rest
    return real_analyze(raw, envelope_rcpt, **kw)


def raises(raw: bytes, envelope_rcpt: str | None = None, **kw: Any) -> Analysis:
    """An analyzer bug: fails only its own message."""
    if raw.startswith(b"BUG"):
        raise ValueError("analyzer bug")
    return real_analyze(raw, envelope_rcpt, **kw)


# -- helpers ----------------------------------------------------------------------


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it holds nothing)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("State:"):
                    return "Z" in line.split(":", 1)[1]
    except OSError:  # gone while reading (ESRCH) or before (ENOENT)
        return True
    return False


def wait_until(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


_PROCESS_REACTOR: Any = None


def process_reactor() -> Any:
    """A real reactor for the workers' pipes, shared by these tests, never run or installed."""
    global _PROCESS_REACTOR
    if _PROCESS_REACTOR is None:
        from twisted.internet.pollreactor import PollReactor

        _PROCESS_REACTOR = PollReactor()
    return _PROCESS_REACTOR


class _PoolCase(SynchronousTestCase):
    """Workers on a reactor of their own and a fake clock, both pumped by the test."""

    def setUp(self) -> None:
        self.reactor = _ThreadClock()
        self.procs = process_reactor()
        self.tmp = tempfile.mkdtemp(prefix="hurricane-workers-")

    def pool(self, processes: int = 1, **kw: Any) -> AnalysisProcessPool:
        pool = AnalysisProcessPool(self.procs, processes, clock=self.reactor, **kw)
        self.addCleanup(self._kill, pool)
        return pool

    def _kill(self, pool: AnalysisProcessPool) -> None:
        """Kill the workers and let the reactor see their pipes close."""
        pids = pool.pids()
        pool.stop(False)
        wait_until(lambda: all(gone(pid) for pid in pids), timeout=10)
        self.procs.iterate(0)

    def pump_once(self, wait: float = 0.02) -> None:
        """Run one report from a thread, else the workers' pipes for up to ``wait``."""
        try:
            f, args, kwargs = self.reactor.from_threads.get_nowait()
        except queue.Empty:
            self.procs.iterate(wait)
            return
        f(*args, **kwargs)

    def pump_until(self, predicate: Any, timeout: float = 30.0) -> None:
        """Run the workers' answers (and reports from threads) until ``predicate()`` holds."""
        if not self.pump_while(predicate, timeout):
            self.fail("timed out waiting for the workers")

    def pump_while(self, predicate: Any, timeout: float = 15.0) -> bool:
        """Run the workers' answers as they come until ``predicate()`` holds.

        Like :func:`wait_until`, but new workers' first answer (their ping)
        reaches the pool, which sends no message before it.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.pump_once()
        return True

    def marker(self, name: str) -> bytes:
        return os.path.join(self.tmp, name).encode() + b"\n"


class PoolTests(_PoolCase):
    """The pool itself: same answers as in-process, lazily started, stopped for good."""

    def test_same_results_as_in_process(self) -> None:
        """Corpus messages analyzed in a worker equal the in-process analyses, fingerprints too."""
        d = require_corpus()
        names = sorted(os.listdir(os.path.join(d, "emails")))[::40][:12]
        raws = []
        for name in names:
            with open(os.path.join(d, "emails", name), "rb") as fp:
                raws.append(fp.read())
        limits = AnalysisLimits()
        classifier = ReplyClassifier.load(())
        expected = [real_analyze(raw, None, classifier=classifier, limits=limits)
                    for raw in raws]
        pool = self.pool(limits=limits)
        got: list[Any] = []
        pool.analyze([(raw, None) for raw in raws]).addBoth(got.append)
        self.pump_until(lambda: got)
        self.assertEqual([a.result for a in got[0]], expected)
        self.assertEqual([a.fingerprint for a in got[0]], [message_fingerprint(r) for r in raws])
        self.assertEqual([a.record for a in got[0]], [encode_analysis(a) for a in expected])

    def test_lazy_start_and_stop(self) -> None:
        """No worker before the first analysis; then every worker starts at once (none
        is left to start cold under the first burst); stop() ends every worker."""
        pool = self.pool(processes=2)
        self.assertEqual((pool.pids(), pool.generation), ([], 0))
        got: list[Any] = []
        pool.analyze([(b"Subject: hi\r\n\r\nhello\r\n", None)]).addBoth(got.append)
        self.pump_until(lambda: got)
        pids = pool.pids()
        self.assertEqual(len(pids), 2, pids)
        pool.stop()
        self.assertTrue(self.pump_while(lambda: all(gone(pid) for pid in pids)), pids)
        failed: list[Any] = []
        pool.analyze([(b"x", None)]).addErrback(failed.append)
        self.assertTrue(failed[0].check(WorkerLost))

    def test_two_calls_per_worker_with_deadlines_covering_the_first(self) -> None:
        """With one worker, a second call is handed over while the first runs
        (so the worker never waits for the reactor between calls); a third
        waits in the pool. The second call's deadline counts the first call's
        messages too; all three are answered in order."""
        pool = self.pool(analyze=hold, limits=AnalysisLimits(cpu_seconds=2.0),
                         call_margin=10.0)
        held = b"HOLD " + self.tmp.encode() + b"\nSubject: a\r\n\r\nx\r\n"
        plain = (b"Subject: b\r\n\r\ny\r\n", None)
        got: list[Any] = []
        for work in ([(held, None), plain], [plain], [plain]):
            pool.analyze(work).addBoth(got.append)
        self.assertTrue(self.pump_while(
            lambda: os.path.exists(os.path.join(self.tmp, "started"))))
        running = sorted(pool._running, key=lambda c: c.deadline)
        self.assertEqual([c.deadline for c in running], [2.0 * 2 + 10.0, 2.0 * 3 + 10.0])
        self.assertEqual(len(pool._queue), 1)
        open(os.path.join(self.tmp, "release"), "w").close()
        self.pump_until(lambda: len(got) == 3)
        self.assertEqual([len(r) for r in got], [2, 1, 1])
        self.assertTrue(all(isinstance(a.result, Analysis) for r in got for a in r))

    def test_deadlines_with_two_workers(self) -> None:
        """With two workers, the first two calls start at once and count only
        their own messages; the third, handed over while both are busy,
        counts the messages of the call before it on its worker too."""
        pool = self.pool(processes=2, analyze=hold, limits=AnalysisLimits(cpu_seconds=2.0),
                         call_margin=10.0)
        held = b"HOLD " + self.tmp.encode() + b"\nSubject: a\r\n\r\nx\r\n"
        got: list[Any] = []
        for work in ([(held, None)], [(held, None)], [(b"Subject: b\r\n\r\ny\r\n", None)]):
            pool.analyze(work).addBoth(got.append)
        self.assertTrue(self.pump_while(lambda: len(pool._running) == 3))
        self.assertEqual(sorted(c.deadline for c in pool._running),
                         [2.0 * 1 + 10.0, 2.0 * 1 + 10.0, 2.0 * 2 + 10.0])
        open(os.path.join(self.tmp, "release"), "w").close()
        self.pump_until(lambda: len(got) == 3)
        self.assertTrue(all(isinstance(a.result, Analysis) for r in got for a in r))

    def test_depth_one_hands_one_call_at_a_time(self) -> None:
        """depth=1: a call reaches the worker only when the one before came back."""
        pool = self.pool(analyze=hold, depth=1)
        held = b"HOLD " + self.tmp.encode() + b"\nSubject: a\r\n\r\nx\r\n"
        got: list[Any] = []
        for work in ([(held, None)], [(b"Subject: b\r\n\r\ny\r\n", None)]):
            pool.analyze(work).addBoth(got.append)
        self.assertTrue(self.pump_while(
            lambda: os.path.exists(os.path.join(self.tmp, "started"))))
        self.assertEqual((len(pool._running), len(pool._queue)), (1, 1))
        open(os.path.join(self.tmp, "release"), "w").close()
        self.pump_until(lambda: len(got) == 2)
        with self.assertRaises(ValueError):
            AnalysisProcessPool(self.reactor, 1, depth=0)

    def test_exception_fails_only_its_message(self) -> None:
        """An analyzer exception comes back as that message's result, the others analyzed."""
        pool = self.pool(analyze=raises)
        got: list[Any] = []
        pool.analyze([(b"BUG", None), (b"Subject: x\r\n\r\ny\r\n", None)]).addBoth(got.append)
        self.pump_until(lambda: got)
        first, second = got[0]
        self.assertIsInstance(first[0], ValueError)
        self.assertIsInstance(second[0], Analysis)

    def test_dead_worker_fails_the_call_and_a_new_pool_follows(self) -> None:
        """A worker that dies fails its call with WorkerLost; the next call gets new workers."""
        pool = self.pool(analyze=die_once)
        got: list[Any] = []
        pool.analyze([(self.marker("m") + b"Subject: x\r\n\r\ny\r\n", None)]).addBoth(got.append)
        self.pump_until(lambda: got)
        self.assertTrue(got[0].check(WorkerLost))
        again: list[Any] = []
        pool.analyze([(self.marker("m") + b"Subject: x\r\n\r\ny\r\n", None)]).addBoth(
            again.append)
        self.pump_until(lambda: again)
        self.assertIsInstance(again[0][0][0], Analysis)
        self.assertEqual(pool.generation, 2)

    def test_relative_rules_files_are_made_absolute(self) -> None:
        """Relative rules files are found by workers started after a change of directory."""
        with open(os.path.join(self.tmp, "local-rules.toml"), "w") as fp:
            fp.write('[[rule]]\nid = "t-1"\nreason = "userunknown"\nstatus = ["5.1.1"]\n')
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.tmp)
        pool = self.pool(rules_files=["local-rules.toml"])
        os.chdir(cwd)  # the server changed directory after start-up
        got: list[Any] = []
        pool.analyze([(b"Subject: hi\r\n\r\nhello\r\n", None)]).addBoth(got.append)
        self.pump_until(lambda: got)
        self.assertIsInstance(got[0], list, got[0])
        self.assertIsInstance(got[0][0][0], Analysis)

    def test_pool_that_cannot_be_created_is_unavailable(self) -> None:
        """OSError spawning a worker (the first, or a later one) fails with PoolUnavailable,
        not raised; the workers already spawned for it are killed."""
        real = self.procs.spawnProcess
        for fail_at, err in ((0, OSError(24, "Too many open files")),
                             (1, OSError(11, "Resource temporarily unavailable"))):
            spawned: list[int] = []

            def spawn(*a: Any, fail_at: int = fail_at, err: OSError = err,
                      spawned: list[int] = spawned, **kw: Any) -> Any:
                if len(spawned) == fail_at:
                    raise err
                proc = real(*a, **kw)
                spawned.append(proc.pid)
                return proc

            self.patch(self.procs, "spawnProcess", spawn)
            pool = self.pool(processes=2)
            got: list[Any] = []
            pool.analyze([(b"x", None)]).addErrback(got.append)
            self.assertTrue(got[0].check(PoolUnavailable), got[0])
            self.assertIn(err.strerror, str(got[0].value))
            self.assertEqual((pool.pids(), pool.generation), ([], 0))
            self.assertTrue(wait_until(lambda s=spawned: all(gone(pid) for pid in s)), spawned)

    def test_worker_dead_while_idle_costs_nothing(self) -> None:
        """A worker that died idle: the next call goes to a new worker instead of failing."""
        pool = self.pool()
        got: list[Any] = []
        pool.analyze([(b"Subject: x\r\n\r\ny\r\n", None)]).addBoth(got.append)
        self.pump_until(lambda: got)
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        self.pump_until(lambda: not pool.pids())  # the reactor saw its pipes close
        again: list[Any] = []
        pool.analyze([(b"Subject: x\r\n\r\ny\r\n", None)]).addBoth(again.append)
        self.pump_until(lambda: again)
        self.assertIsInstance(again[0], list, again[0])
        self.assertIsInstance(again[0][0][0], Analysis)
        self.assertEqual(pool.generation, 2)

    def test_fork_refused(self) -> None:
        """The fork start method is refused: the server runs a reactor and threads."""
        self.assertRaises(ValueError, AnalysisProcessPool, self.reactor, 1, context="fork")


class ProcessorTests(_PoolCase):
    """The processor with worker processes: nothing accepted is lost when a worker dies."""

    def setUp(self) -> None:
        super().setUp()
        self.w = World()
        self.reactor.advance(self.w.clock.seconds())
        self.deliveries = self.w.send(["alice@example.net", "bob@example.net"])

    def processor(self, analyze: Any, pool_kw: dict[str, Any] | None = None,
                  **kw: Any) -> BounceProcessor:
        pool = self.pool(analyze=analyze, **(pool_kw or {}))
        p = build_processor(self.w.store, self.w.codec, self.reactor, processes=pool, **kw)
        p.startService()
        self.addCleanup(self._stop, p)
        return p

    def _stop(self, p: BounceProcessor) -> None:
        if p.running:
            self.stop_service(p)

    def stop_service(self, p: BounceProcessor) -> None:
        """Stop the service and run the workers' pipes until its stop has fired (the
        stop waits until the reactor has reaped every worker)."""
        done: list[Any] = []
        p.stopService().addBoth(done.append)
        self.pump_until(lambda: done)
        self.assertIsNone(done[0])

    def receive(self, delivery: Any, prefix: bytes = b"") -> int:
        token = self.w.token(delivery)
        return self.w.receive(prefix + dsn(delivery.recipient, token=token), token)

    def status(self, bid: int) -> str:
        return str(self.w.bounce(bid).status)

    def test_bounce_recorded_through_a_worker(self) -> None:
        """A DSN analyzed in a worker bounces its delivery, as with threads."""
        p = self.processor(real_analyze)
        bid = self.receive(self.deliveries[0])
        p.submit(bid)
        self.pump_until(lambda: self.status(bid) != "pending")
        self.assertEqual(self.status(bid), "analyzed")
        row = self.w.delivery(self.deliveries[0].delivery_id)
        self.assertEqual((row.state, row.reason), (State.bounced, "userunknown"))

    def test_killed_worker_means_retry_not_loss(self) -> None:
        """A worker killed (SIGKILL) under a batch: every message of it is still recorded."""
        p = self.processor(hang_once)
        first = self.receive(self.deliveries[0], self.marker("hang"))
        second = self.receive(self.deliveries[1])
        p.submit(first)
        p.submit(second)
        self.assertTrue(self.pump_while(lambda: os.path.exists(os.path.join(self.tmp, "hang"))))
        self.assertEqual(self.status(first), "pending")
        [pid] = pool_of(p).pids()
        os.kill(pid, signal.SIGKILL)
        self.pump_until(lambda: "pending" not in (self.status(first), self.status(second)))
        self.assertEqual((self.status(first), self.status(second)), ("analyzed", "analyzed"))
        for d in self.deliveries:
            self.assertEqual(self.w.delivery(d.delivery_id).state, State.bounced)
        self.assertNotIn(pid, pool_of(p).pids())

    def test_message_that_always_kills_its_worker_is_failed_alone(self) -> None:
        """A message that kills every worker kills it twice (in its batch, then alone once)
        and is marked failed (raw kept); its batch-mate goes through."""
        p = self.processor(die_always)
        deaths = os.path.join(self.tmp, "deaths")
        poison = self.receive(self.deliveries[0], b"POISON " + deaths.encode() + b"\n")
        good = self.receive(self.deliveries[1])
        p.submit(poison)
        p.submit(good)
        self.pump_until(lambda: "pending" not in (self.status(poison), self.status(good)))
        self.assertEqual(self.status(good), "analyzed")
        stored = self.w.bounce(poison)
        self.assertEqual(stored.status, "failed")
        self.assertEqual(os.path.getsize(deaths), 2)
        self.assertIn("died on this message twice", self.w.bounce_error(poison))
        self.assertTrue(stored.raw.startswith(b"POISON"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def errors_logged(self) -> list[str]:
        """Error events logged from now on (formatted)."""
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        seen: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") in (LogLevel.error, LogLevel.critical):
                seen.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return seen

    def test_workers_that_cannot_initialize_leave_messages_pending(self) -> None:
        """A rules file deleted after start-up: no strike, nothing failed, one error naming
        it; analysis resumes with backoff once the file is back."""
        rules = os.path.join(self.tmp, "operator-rules.toml")
        open(rules, "w").close()
        p = self.processor(real_analyze, pool_kw={"rules_files": [rules]})
        os.remove(rules)
        errors = self.errors_logged()
        bids = [self.receive(d) for d in self.deliveries]
        for bid in bids:
            p.submit(bid)
        self.assertTrue(self.pump_while(lambda: p._pause is not None))
        self.assertEqual([self.status(b) for b in bids], ["pending", "pending"])
        self.assertEqual(p.stats()["failed"], 0)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("operator-rules.toml", errors[0])
        self.assertEqual(self.w.bounce_error(bids[0]), None)
        open(rules, "w").close()
        self.reactor.advance(5.0)  # retry_initial
        self.pump_until(lambda: "pending" not in [self.status(b) for b in bids])
        self.assertEqual([self.status(b) for b in bids], ["analyzed", "analyzed"])

    def test_pool_that_cannot_spawn_leaves_messages_pending(self) -> None:
        """OSError starting workers: messages stay pending (backoff), then go through."""

        def no_spawn(*a: Any, **kw: Any) -> Any:
            raise OSError(24, "Too many open files")

        real = self.procs.spawnProcess
        self.patch(self.procs, "spawnProcess", no_spawn)
        p = self.processor(real_analyze)
        bids = [self.receive(d) for d in self.deliveries]
        for bid in bids:
            p.submit(bid)
        self.assertIsNotNone(p._pause)
        self.assertEqual([self.status(b) for b in bids], ["pending", "pending"])
        self.assertEqual(p.stats()["failed"], 0)
        self.patch(self.procs, "spawnProcess", real)
        self.reactor.advance(5.0)
        self.pump_until(lambda: "pending" not in [self.status(b) for b in bids])
        self.assertEqual([self.status(b) for b in bids], ["analyzed", "analyzed"])

    def test_alone_retry_runs_alone(self) -> None:
        """While a message is retried alone, no other batch runs beside it: a batch that
        kills the pool meanwhile costs the message in isolation no strike."""
        p = self.processor(gate, pool_kw={"processes": 2}, concurrency=2, batch_size=1)
        pool = pool_of(p)
        assert pool is not None
        a = self.receive(self.deliveries[0], b"GATE " + self.tmp.encode() + b"\n")
        p.submit(a)
        # its batch killed the worker; now alone, and waiting for "release"
        self.assertTrue(self.pump_while(
            lambda: os.path.exists(os.path.join(self.tmp, "started"))))
        ran = os.path.join(self.tmp, "poison-ran")
        poison = self.receive(self.deliveries[1], b"POISON " + ran.encode() + b"\n")
        p.submit(poison)
        # held while the alone retry runs (else it would run and kill the pool)
        self.assertTrue(self.pump_while(
            lambda: len(pool._queue) == 1 or os.path.exists(ran)))
        self.assertFalse(os.path.exists(ran))
        open(os.path.join(self.tmp, "release"), "w").close()
        self.pump_until(lambda: "pending" not in (self.status(a), self.status(poison)))
        self.assertEqual((self.status(a), self.status(poison)), ("analyzed", "failed"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_hung_analysis_is_killed_at_its_deadline(self) -> None:
        """A message that hangs its worker every time (beyond the analyzer's reach) is
        killed at its deadline in its batch and once alone, then marked failed with its raw
        kept; the other goes through."""
        p = self.processor(hang_always)
        count = os.path.join(self.tmp, "hangs")
        hung = self.receive(self.deliveries[0], b"HANG " + count.encode() + b"\n")
        good = self.receive(self.deliveries[1])
        p.submit(hung)
        p.submit(good)
        seen = 0

        def settled() -> bool:
            nonlocal seen
            n = os.path.getsize(count) if os.path.exists(count) else 0
            if n > seen:
                # hung: let the reactor's clock pass the deadline (2 s CPU + 10 s margin)
                seen = n
                self.reactor.advance(13.0)
            return "pending" not in (self.status(hung), self.status(good))

        self.assertTrue(self.pump_while(settled, timeout=30))
        self.assertEqual(seen, 2)  # in its batch, then once alone
        self.assertEqual(self.status(good), "analyzed")
        stored = self.w.bounce(hung)
        self.assertEqual(stored.status, "failed")
        self.assertIn("died on this message twice", self.w.bounce_error(hung))
        self.assertIn("did not finish within 12 s", self.w.bounce_error(hung))
        self.assertTrue(stored.raw.startswith(b"HANG "))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_terminates_workers(self) -> None:
        """stopService ends every worker process; a restarted service spawns new ones."""
        p = self.processor(real_analyze)
        bid = self.receive(self.deliveries[0])
        p.submit(bid)
        self.pump_until(lambda: self.status(bid) != "pending")
        pids = pool_of(p).pids()
        self.assertTrue(pids)
        stopped = p.stopService()
        self.assertNoResult(stopped)  # the workers are still running
        done: list[Any] = []
        stopped.addBoth(done.append)
        self.pump_until(lambda: done)
        # fired once the reactor holds no pipe of theirs (trial's clean-reactor check);
        # the processes end on the end of file and are reaped on SIGCHLD
        self.assertEqual(done, [None])
        self.assertTrue(self.pump_while(lambda: all(gone(pid) for pid in pids)), pids)
        p.startService()
        other = self.receive(self.deliveries[1])
        p.submit(other)
        self.pump_until(lambda: self.status(other) != "pending")
        self.assertEqual(self.status(other), "analyzed")

    def test_stuck_analysis_killed_at_stop_and_left_pending(self) -> None:
        """A worker stuck past stop_timeout is killed; its message stays pending for the next
        start."""
        p = self.processor(hang_once, stop_timeout=1.0)
        bid = self.receive(self.deliveries[0], self.marker("stuck"))
        p.submit(bid)
        self.assertTrue(self.pump_while(lambda: os.path.exists(os.path.join(self.tmp, "stuck"))))
        [pid] = pool_of(p).pids()
        stopped = p.stopService()
        self.assertNoResult(stopped)
        self.reactor.advance(1.0)
        done: list[Any] = []
        stopped.addBoth(done.append)
        self.pump_until(lambda: done)  # killed, then reaped
        self.assertEqual(done, [None])
        self.assertTrue(wait_until(lambda: gone(pid)))
        self.pump_until(lambda: not p.stats()["in_flight"])
        self.assertEqual(self.status(bid), "pending")

    def test_never_started_without_analysis(self) -> None:
        """A service started and stopped without any message spawns no process."""
        p = self.processor(real_analyze)
        self.successResultOf(p.stopService())
        self.assertEqual(pool_of(p).generation, 0)


class ParentDeathTests(SynchronousTestCase):
    """Workers do not outlive a server killed with SIGKILL."""

    def test_workers_exit_when_parent_is_killed(self) -> None:
        """After kill -9 of the parent, its idle workers exit on their own."""
        script = textwrap.dedent("""
            import os, signal, sys, time
            from twisted.internet.pollreactor import PollReactor
            from hurricane.inbound.workers import AnalysisProcessPool

            r = PollReactor()  # never run: iterated below
            pool = AnalysisProcessPool(r, 2)
            got = []
            pool.analyze([(b"Subject: x\\r\\n\\r\\ny\\r\\n", None)]).addBoth(got.append)
            pool.analyze([(b"Subject: x\\r\\n\\r\\ny\\r\\n", None)]).addBoth(got.append)
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                r.iterate(0.05)
            time.sleep(0.5)
            print(" ".join(map(str, pool.pids())), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
        pids = [int(p) for p in proc.stdout.split()]
        self.assertEqual(len(pids), 2, proc.stderr[-2000:])
        self.assertTrue(wait_until(lambda: all(gone(pid) for pid in pids)),
                        f"workers {pids} outlived their parent")


class ConfigTests(SynchronousTestCase):
    """``[bounce] analysis_processes``: processes by default, 0 for threads, bounded."""

    def test_default_and_bounds(self) -> None:
        """One worker process by default; negative or absurd counts are refused by path."""
        from hurricane.config import ConfigError, config_from_dict

        self.assertEqual(config_from_dict({}).bounce.analysis_processes, 1)
        self.assertEqual(
            config_from_dict({"bounce": {"analysis_processes": 0}}).bounce.analysis_processes, 0)
        for bad in (-1, 65):
            e = self.assertRaises(ConfigError, config_from_dict,
                                  {"bounce": {"analysis_processes": bad}})
            self.assertIn("analysis_processes", str(e))
