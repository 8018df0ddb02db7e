"""A message the listener just stored is analyzed from its copy in hand, not read back.

The copy must be exactly what ``load_bounce`` would read (so the outcome is
the same either way), its memory is bounded, and a replay or a retry reads
the store as before.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane.inbound.recorder import fresh_bounce
from hurricane.model import ReturnedMessage, ReturnedRecipient, State
from hurricane.store.interface import IOutcomeStore
from hurricane.store.memory import MemoryStore
from hurricane.store.sqlite import SqliteStore

from .helpers import World, dsn, run


def _message(world: World, token: str, recipients: tuple[ReturnedRecipient, ...],
             raw: bytes) -> ReturnedMessage:
    return ReturnedMessage(raw=raw, mail_from="", rcpt_to=recipients[0].address,
                           received_at=world.clock.seconds(),
                           delivery_id=recipients[0].delivery_id, client="192.0.2.1",
                           recipients=recipients)


class FreshCopyIsTheStoredRowTests(TestCase):
    """fresh_bounce() equals load_bounce() right after store_bounce(), on each engine."""

    async def _check(self, store: IOutcomeStore) -> None:
        recipients = (
            ReturnedRecipient("postmaster@bounce.example.com", None, False),
            ReturnedRecipient("b-token@bounce.example.com", 7, True),
            ReturnedRecipient("b-other@bounce.example.com", 9, False),
        )
        message = ReturnedMessage(raw=b"Subject: x\r\n\r\nbody\r\n", mail_from="",
                                  rcpt_to=recipients[0].address, received_at=1_800_000_000.25,
                                  delivery_id=None, client="[192.0.2.1] helo=x",
                                  recipients=recipients)
        bounce_id = await store.store_bounce(message)
        loaded = await store.load_bounce(bounce_id)
        self.assertEqual(fresh_bounce(bounce_id, message), loaded)
        # a message stored without its recipient list (older callers)
        bare = ReturnedMessage(raw=b"x", mail_from="a@b.example", rcpt_to="r@bounce.example.com",
                               received_at=1_800_000_001.0, delivery_id=3)
        bare_id = await store.store_bounce(bare)
        self.assertEqual(fresh_bounce(bare_id, bare).envelope(),
                         (await store.load_bounce(bare_id)).envelope())  # type: ignore[union-attr]

    async def test_memory(self) -> None:
        """The memory store."""
        store = MemoryStore()
        await store.open()
        await self._check(store)

    async def test_sqlite(self) -> None:
        """SQLite."""
        path = os.path.join(tempfile.mkdtemp(), "preload.db")
        store = SqliteStore(path, reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        await self._check(store)


class PreloadTests(SynchronousTestCase):
    """The processor uses the copy in hand, within its memory budget."""

    def setUp(self) -> None:
        self.w = World()
        self.loads: list[int] = []
        load = self.w.store.load_bounce

        def counting_load(bounce_id: int) -> Any:
            self.loads.append(bounce_id)
            return load(bounce_id)

        self.w.store.load_bounce = counting_load  # type: ignore[method-assign]

    def receive(self, recipient: str) -> tuple[int, ReturnedMessage, int]:
        [d] = self.w.send([recipient])
        token = self.w.token(d)
        raw = dsn(recipient, token=token)
        message = _message(self.w, token, (ReturnedRecipient(token, d.delivery_id, False),), raw)
        bounce_id: int = run(self.w.store.store_bounce(message))
        return bounce_id, message, d.delivery_id

    def start(self, **kwargs: Any) -> Any:
        p = self.w.processor(**kwargs)
        p.startService()
        self.addCleanup(lambda: self.successResultOf(p.stopService()))
        return p

    def test_copy_in_hand_is_not_read_back_and_gives_the_same_outcome(self) -> None:
        """Submitted with its copy: no load_bounce; the outcome equals one read back."""
        p = self.start()
        with_copy, message, d1 = self.receive("alice@example.net")
        without, _, d2 = self.receive("bob@example.net")
        self.loads.clear()
        p.submit(with_copy, message)
        p.submit(without)
        self.assertEqual(self.loads, [without])
        for bid, delivery_id in ((with_copy, d1), (without, d2)):
            self.assertEqual(self.w.bounce(bid).status, "analyzed")
            self.assertEqual(self.w.delivery(delivery_id).state, State.bounced)
        a, b = self.w.bounce(with_copy), self.w.bounce(without)
        self.assertEqual((a.category, a.correlation), (b.category, b.correlation))
        self.assertEqual([e.kind for e in self.w.events(d1)],
                         [e.kind for e in self.w.events(d2)])
        self.assertEqual(p._preloaded, {})
        self.assertEqual(p._preload_bytes, 0)

    def test_budget_bounds_the_copies(self) -> None:
        """Beyond preload_bytes the message is read back from the store as before."""
        p = self.w.processor(preload_bytes=10)  # not started: ids are only queued
        bid, message, delivery_id = self.receive("alice@example.net")
        self.assertGreater(len(message.raw), 10)
        p.submit(bid, message)
        self.assertEqual(p._preloaded, {})
        p.startService()
        self.addCleanup(lambda: self.successResultOf(p.stopService()))
        self.assertIn(bid, self.loads)
        self.assertEqual(self.w.delivery(delivery_id).state, State.bounced)

    def test_copies_held_while_queued_are_counted_and_dropped_at_stop(self) -> None:
        """Queued copies count against the budget; a stop frees them."""
        p = self.w.processor()
        bid, message, _ = self.receive("alice@example.net")
        p.submit(bid, message)
        self.assertEqual(p._preload_bytes, len(message.raw))
        p.startService()
        self.successResultOf(p.stopService())
        self.assertEqual((p._preloaded, p._preload_bytes), ({}, 0))

    def test_replay_reads_the_store(self) -> None:
        """A replay asked while the copy is queued reads the store's current row."""
        p = self.w.processor()
        bid, message, _ = self.receive("alice@example.net")
        p.submit(bid, message)
        replayed = p.replay(bid)
        self.loads.clear()
        p.startService()
        self.addCleanup(lambda: self.successResultOf(p.stopService()))
        self.assertEqual(self.successResultOf(replayed).status, "analyzed")
        self.assertIn(bid, self.loads)
        self.assertEqual(p._preload_bytes, 0)
