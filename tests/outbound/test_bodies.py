"""BodyCache alone: fresh bodies bounded, bodies loaded and signed once while held."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.bodies import BodyCache, BodyCacheSettings

BODY = b"Subject: hi\n\nHello.\n"


class FakeSource:
    """Bodies by key; each load can be held open with a gate."""

    def __init__(self) -> None:
        self.loads: list[int] = []
        self.gates: list[Deferred[None]] = []
        self.hold = False
        self.fail: Exception | None = None

    async def load_body(self, message_pk: int) -> bytes:
        self.loads.append(message_pk)
        if self.hold:
            gate: Deferred[None] = Deferred()
            self.gates.append(gate)
            await gate
        if self.fail is not None:
            raise self.fail
        return b"Subject: %d\n\nbody\n" % message_pk


class CountingSigner:
    """Prefixes a fake signature header and counts signatures."""

    def __init__(self) -> None:
        self.signed = 0

    async def sign(self, message: bytes) -> bytes:
        self.signed += 1
        return b"DKIM-Signature: x\r\n" + message


class BodyCacheTests(SynchronousTestCase):
    """Bodies for the deliveries in flight."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.source = FakeSource()
        self.signer = CountingSigner()
        self.cache = BodyCache(self.source, self.clock, self.signer,
                               BodyCacheSettings(fresh_bytes=4 * len(BODY), fresh_seconds=10.0))

    def get(self, message_pk: int) -> Deferred[bytes]:
        return Deferred.fromCoroutine(self.cache.get(message_pk))

    def test_loaded_normalised_and_signed_once_while_held(self) -> None:
        """Two deliveries of one message: one load, one signature, CRLF line ends."""
        self.cache.hold(1)
        self.cache.hold(1)
        first = self.successResultOf(self.get(1))
        second = self.successResultOf(self.get(1))
        self.assertEqual(first, second)
        self.assertTrue(first.startswith(b"DKIM-Signature: x\r\nSubject: 1\r\n"))
        self.assertEqual((self.source.loads, self.signer.signed), ([1], 1))

    def test_released_by_the_last_delivery(self) -> None:
        """When the last delivery of a message leaves flight its body is dropped."""
        self.cache.hold(1)
        self.cache.hold(1)
        self.successResultOf(self.get(1))
        self.cache.release(1)
        self.successResultOf(self.get(1))
        self.assertEqual(self.source.loads, [1])  # one delivery still holds it
        self.cache.release(1)
        self.successResultOf(self.get(1))
        self.assertEqual(self.source.loads, [1, 1])

    def test_concurrent_loads_share_one(self) -> None:
        """Two transactions asking while the body loads wait for the same load."""
        self.source.hold = True
        self.cache.hold(1)
        a, b = self.get(1), self.get(1)
        self.assertEqual(self.source.loads, [1])
        self.source.gates.pop().callback(None)
        self.assertEqual(self.successResultOf(a), self.successResultOf(b))

    def test_failed_load_fails_every_waiter(self) -> None:
        """A load that fails fails every transaction waiting for it, and the next
        request loads again."""
        self.source.hold = True
        self.source.fail = OSError("disk")
        a, b = self.get(1), self.get(1)
        self.source.gates.pop().callback(None)
        self.failureResultOf(a, OSError)
        self.failureResultOf(b, OSError)
        self.source.hold, self.source.fail = False, None
        self.successResultOf(self.get(1))
        self.assertEqual(self.source.loads, [1, 1])

    def test_fresh_body_is_not_read_back(self) -> None:
        """A body handed over after enqueue serves the first request, once."""
        self.cache.keep_fresh(7, BODY)
        self.assertEqual((self.cache.fresh, self.cache.fresh_bytes), ([7], len(BODY)))
        self.assertIn(b"Hello.\r\n", self.successResultOf(self.get(7)))
        self.assertEqual((self.source.loads, self.cache.fresh, self.cache.fresh_bytes),
                         ([], [], 0))
        self.successResultOf(self.get(7))  # not held: read from the source
        self.assertEqual(self.source.loads, [7])

    def test_fresh_bodies_bounded_by_bytes(self) -> None:
        """Over the byte bound the oldest go first; a body over a quarter is never kept."""
        for pk in range(6):
            self.cache.keep_fresh(pk, BODY)
        self.assertEqual(self.cache.fresh, [2, 3, 4, 5])
        self.cache.keep_fresh(9, BODY * 2)
        self.assertNotIn(9, self.cache.fresh)
        self.assertEqual(self.cache.fresh_bytes, 4 * len(BODY))

    def test_fresh_bodies_bounded_by_age(self) -> None:
        """trim() drops bodies older than fresh_seconds; clear_fresh() drops all."""
        self.cache.keep_fresh(1, BODY)
        self.clock.advance(6)
        self.cache.keep_fresh(2, BODY)
        self.clock.advance(5)
        self.cache.trim()
        self.assertEqual(self.cache.fresh, [2])
        self.cache.clear_fresh()
        self.assertEqual((self.cache.fresh, self.cache.fresh_bytes), ([], 0))

    def test_no_signer(self) -> None:
        """Without a signer the body is only normalised."""
        cache = BodyCache(self.source, self.clock)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(cache.get(3))),
                         b"Subject: 3\r\n\r\nbody\r\n")
