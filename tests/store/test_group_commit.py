"""GroupCommit's two lanes: items kept apart never share a batch, and the lanes take turns."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hurricane.store.base import GroupCommit


class Lanes(SynchronousTestCase):
    """A commit function whose batches are held until the test releases them."""

    def setUp(self) -> None:
        self.batches: list[list[str]] = []
        self.held: list[tuple[list[str], Deferred[list[str]]]] = []

        # "r..." items are the recording kind (apart); the others durable writes
        self.group: GroupCommit[str, str] = GroupCommit(
            self.commit, max_batch=3, apart=lambda item: item.startswith("r"))

    async def commit(self, batch: list[str]) -> list[str]:
        self.batches.append(list(batch))
        d: Deferred[list[str]] = Deferred()
        self.held.append((list(batch), d))
        return await d

    def submit(self, item: str) -> Deferred[str]:
        return Deferred.fromCoroutine(self.group.submit(item))

    def release(self) -> None:
        """Commit the oldest batch in flight (the next one then starts)."""
        batch, d = self.held.pop(0)
        d.callback([f"done {item}" for item in batch])

    def test_apart_items_never_share_a_batch_and_lanes_alternate(self) -> None:
        """While a batch is in flight, durable writes and recordings arrive mixed:
        each batch holds one kind, in the order given, and when both wait the
        other kind than last time goes next (neither starves)."""
        first = self.submit("s1")  # starts at once, alone
        results = [self.submit(item) for item in ("s2", "r1", "s3", "r2", "r3", "r4", "s4")]
        self.assertEqual(self.batches, [["s1"]])
        self.release()
        self.assertEqual(self.successResultOf(first), "done s1")
        # s1 was a durable write: the recordings' turn, up to max_batch of them
        self.assertEqual(self.batches[-1], ["r1", "r2", "r3"])
        self.release()
        self.assertEqual(self.batches[-1], ["s2", "s3", "s4"])
        self.release()
        self.assertEqual(self.batches[-1], ["r4"])
        self.release()
        self.assertEqual(self.batches, [["s1"], ["r1", "r2", "r3"], ["s2", "s3", "s4"], ["r4"]])
        self.assertEqual([self.successResultOf(d) for d in results],
                         [f"done {i}" for i in ("s2", "r1", "s3", "r2", "r3", "r4", "s4")])

    def test_one_kind_waiting_goes_whatever_the_last_batch(self) -> None:
        """Only one kind waiting: it goes, even twice in a row."""
        self.submit("r1")
        later = [self.submit("r2"), self.submit("r3")]
        self.release()
        self.assertEqual(self.batches[-1], ["r2", "r3"])
        self.release()
        self.assertEqual([self.successResultOf(d) for d in later], ["done r2", "done r3"])
        last = self.submit("s1")
        self.assertEqual(self.batches[-1], ["s1"])
        self.release()
        self.assertEqual(self.successResultOf(last), "done s1")

    def test_without_apart_everything_shares_the_next_batch(self) -> None:
        """No ``apart``: whatever waits goes together, as before."""
        self.group = GroupCommit(self.commit, max_batch=8)
        results = [self.submit(item) for item in ("s1", "r1", "s2", "r2")]
        self.release()
        self.assertEqual(self.batches, [["s1"], ["r1", "s2", "r2"]])
        self.release()
        self.assertEqual([self.successResultOf(d) for d in results],
                         ["done s1", "done r1", "done s2", "done r2"])
