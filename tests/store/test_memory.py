"""The contract and the test hooks of the in-memory store."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane.model import ReturnedMessage
from hurricane.store.interface import StoreUnavailable
from hurricane.store.memory import MemoryStore

from .contract import StoreContractMixin, message


class MemoryStoreContractTests(StoreContractMixin, TestCase):
    """MemoryStore passes the IOutcomeStore contract, atomicity and reopen included."""

    coalesces = False

    async def make_store(self) -> Any:
        store = MemoryStore()
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store

    async def reopen(self, store: Any) -> Any:
        await store.close()
        await store.open()
        return store

    async def break_store(self, store: Any) -> None:
        store.set_available(False)

    def make_unreachable_store(self) -> Any:
        store = MemoryStore()
        store.set_available(False)
        return store


class MemoryStoreHookTests(SynchronousTestCase):
    """The failure hooks other components use to test their 451 paths."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))

    def call(self, coro: Any) -> Deferred[Any]:
        """Run a store coroutine; the memory store completes at once."""
        return Deferred.fromCoroutine(coro)

    def test_completes_immediately(self) -> None:
        """Every call has its result before the caller yields to the reactor."""
        result = self.successResultOf(self.call(self.store.enqueue(message(), 1.0)))
        self.assertEqual(len(result.recipients), 1)

    def test_fail_next(self) -> None:
        """fail_next(n) makes exactly the next n calls raise StoreUnavailable."""
        self.store.fail_next(2)
        self.failureResultOf(self.call(self.store.enqueue(message(), 1.0)), StoreUnavailable)
        self.failureResultOf(self.call(self.store.queue_depth()), StoreUnavailable)
        self.successResultOf(self.call(self.store.enqueue(message(), 1.0)))
        self.store.fail_next()
        self.failureResultOf(self.call(self.store.store_bounce(
            ReturnedMessage(b"raw", "", "b@x.test", 1.0))), StoreUnavailable)
        self.successResultOf(self.call(self.store.queue_depth()))

    def test_set_available(self) -> None:
        """set_available(False) fails every call until it is set back to True."""
        self.store.set_available(False)
        for _ in range(3):
            self.failureResultOf(self.call(self.store.claim_due(1.0, "n", 60, 10)),
                                 StoreUnavailable)
        self.store.set_available(True)
        self.assertEqual(self.successResultOf(self.call(self.store.claim_due(1.0, "n", 60, 10))),
                         [])

    def test_failed_enqueue_stores_nothing(self) -> None:
        """An enqueue that raised StoreUnavailable left no trace."""
        self.store.fail_next()
        self.failureResultOf(self.call(self.store.enqueue(message(), 1.0)), StoreUnavailable)
        self.assertEqual(self.successResultOf(self.call(self.store.outcomes())), [])
