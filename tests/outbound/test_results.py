"""ResultWriter alone: batching, the timer, retries, and the slot signals."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import AttemptResult, State
from hurricane.outbound.results import ResultWriter, WriterSettings
from hurricane.store.interface import StoreUnavailable


def result(delivery_id: int) -> AttemptResult:
    """A delivered result for one delivery."""
    return AttemptResult(delivery_id=delivery_id, state=State.delivered, at=0.0)


class FakeRecorder:
    """Records batches; fails the next ``failures`` writes; can hold a write open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.failures = 0
        self.gates: list[Deferred[None]] = []
        self.hold = False

    async def record_attempts(self, results: Sequence[AttemptResult]) -> list[int]:
        if self.hold:
            gate: Deferred[None] = Deferred()
            self.gates.append(gate)
            await gate
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("down (test)")
        self.batches.append([r.delivery_id for r in results])
        return list(range(len(results)))


class ResultWriterTests(SynchronousTestCase):
    """Results wait for each other, a batch at most, and are never dropped."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = FakeRecorder()
        self.written = 0
        self.settled = 0

    def writer(self, delay: float = 0.02, batch: int = 3,
               retry: float = 5.0) -> ResultWriter:
        def written() -> None:
            self.written += 1

        def settled() -> None:
            self.settled += 1

        return ResultWriter(self.recorder, self.clock,
                            WriterSettings(delay=delay, batch=batch, retry_interval=retry),
                            on_written=written, on_settled=settled)

    def tearDown(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_results_within_the_delay_share_a_write(self) -> None:
        """Two results 10 ms apart go in one write, 20 ms after the first."""
        writer = self.writer()
        writer.add(result(1))
        self.clock.advance(0.01)
        writer.add(result(2))
        self.assertEqual((writer.pending, self.recorder.batches), (2, []))
        self.clock.advance(0.01)
        self.assertEqual(self.recorder.batches, [[1, 2]])
        self.assertEqual((writer.pending, self.written, self.settled), (0, 1, 1))

    def test_full_batch_written_at_once(self) -> None:
        """A full batch does not wait for the delay; the rest follows in the same round."""
        writer = self.writer(delay=60.0)
        for i in range(4):
            writer.add(result(i))
        self.clock.advance(0)
        self.assertEqual(self.recorder.batches, [[0, 1, 2], [3]])
        self.assertEqual(self.written, 2)

    def test_failed_write_keeps_results_and_retries_after_the_interval(self) -> None:
        """A failed write keeps every result pending; new results wait for the retry
        instead of bringing it forward."""
        self.recorder.failures = 1
        writer = self.writer()
        writer.add(result(1))
        self.clock.advance(0.02)
        self.assertEqual(len(self.flushLoggedErrors(StoreUnavailable)), 1)
        self.assertEqual((writer.pending, self.written), (1, 0))
        writer.add(result(2))
        self.clock.advance(4.9)
        self.assertEqual(self.recorder.batches, [])
        self.clock.advance(0.1)
        self.assertEqual(self.recorder.batches, [[1, 2]])

    def test_no_retry_once_stopping(self) -> None:
        """After stop_retrying() a failed write schedules nothing; write() tries again."""
        self.recorder.failures = 1
        writer = self.writer()
        writer.stop_retrying()
        writer.add(result(1))
        self.clock.advance(0.02)
        self.flushLoggedErrors(StoreUnavailable)
        self.assertEqual((writer.pending, self.clock.getDelayedCalls()), (1, []))
        self.successResultOf(Deferred.fromCoroutine(writer.write()))
        self.assertEqual((writer.pending, self.recorder.batches), (0, [[1]]))

    def test_results_added_during_a_write_follow_it(self) -> None:
        """Results finishing while a write is on its way go in the same round after it;
        the writer is busy meanwhile."""
        self.recorder.hold = True
        writer = self.writer(delay=0.0)
        writer.add(result(1))
        self.clock.advance(0)
        self.assertTrue(writer.busy)
        writer.add(result(2))
        self.recorder.gates.pop().callback(None)
        self.recorder.gates.pop().callback(None)
        self.assertEqual(self.recorder.batches, [[1], [2]])
        self.assertFalse(writer.busy)

    def test_cancel(self) -> None:
        """cancel() drops the scheduled write; the results stay pending."""
        writer = self.writer()
        writer.add(result(1))
        writer.cancel()
        self.assertEqual((writer.pending, self.clock.getDelayedCalls()), (1, []))
