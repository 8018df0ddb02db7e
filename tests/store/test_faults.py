"""Fault injection through the failing transaction object, on the memory store."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hurricane.store.faults import fail_statements, fail_transactions
from hurricane.store.interface import StoreUnavailable
from hurricane.store.memory import MemoryStore
from hurricane.store.sql import SQLITE

from .contract import T0, message


class FaultTests(SynchronousTestCase):
    """Faults fire where they say, as many times as they say, and roll back."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.successResultOf(Deferred.fromCoroutine(self.store.open()))

    def call(self, coro: Any) -> Any:
        """Run a store coroutine (inline: it completes at once); its result."""
        return self.successResultOf(Deferred.fromCoroutine(coro))

    def fails(self, coro: Any) -> StoreUnavailable:
        """Run a store coroutine that must fail with StoreUnavailable."""
        failure = self.failureResultOf(Deferred.fromCoroutine(coro), StoreUnavailable)
        error = failure.value
        assert isinstance(error, StoreUnavailable)
        return error

    def test_statement_fault_fires_on_matching_statements_after_skip(self) -> None:
        """skip lets matching statements through first; times bounds the failures;
        statements that do not match never fail."""
        fault = self.store.faults.add(fail_statements("INSERT INTO suppressions", skip=1,
                                                      times=2, message="disk on fire"))
        self.assertTrue(self.call(self.store.suppress("a@x.test", "manual", T0)))
        self.assertEqual(self.call(self.store.queue_depth()), {"queued": 0, "deferred": 0})
        self.assertIn("disk on fire", str(self.fails(
            self.store.suppress("b@x.test", "manual", T0))))
        self.fails(self.store.suppress("c@x.test", "manual", T0))
        self.assertTrue(self.call(self.store.suppress("d@x.test", "manual", T0)))
        self.assertEqual(fault.fired, 2)
        self.assertTrue(fault.spent)
        self.assertEqual([s.address for s in self.call(self.store.suppressions())],
                         ["a@x.test", "d@x.test"])

    def test_fault_halfway_rolls_the_transaction_back(self) -> None:
        """A fault after the message and deliveries were written leaves no row."""
        self.store.faults.add(fail_statements(lambda s: "INSERT INTO events" in s))
        self.fails(self.store.enqueue(message("a@x.test", "b@x.test"), T0))
        self.assertEqual(self.store.query("SELECT COUNT(*) FROM messages"), [(0,)])
        self.assertEqual(self.store.query("SELECT COUNT(*) FROM deliveries"), [(0,)])
        result = self.call(self.store.enqueue(message("a@x.test"), T0))
        self.assertEqual(len(result.recipients), 1)

    def test_transaction_fault_counts_transactions_not_statements(self) -> None:
        """fail_transactions(2): the next two transactions fail, whatever their
        number of statements; the third works."""
        self.store.faults.add(fail_transactions(2))
        self.fails(self.store.enqueue(message("a@x.test"), T0))
        self.fails(self.store.summary())
        self.assertEqual(self.call(self.store.summary()).messages, 0)

    def test_unlimited_fault_until_removed(self) -> None:
        """times=None fails every transaction until the fault is removed."""
        fault = self.store.faults.add(fail_transactions(None))
        for _ in range(3):
            self.fails(self.store.queue_depth())
        self.store.faults.remove(fault)
        self.assertEqual(self.call(self.store.queue_depth()), {"queued": 0, "deferred": 0})
        self.assertEqual(fault.fired, 3)

    def test_no_fault_no_wrapper(self) -> None:
        """With nothing armed the engine's own transaction object is used."""
        sentinel: Any = SimpleNamespace(dialect=SQLITE)
        self.assertIs(self.store.faults.wrap(sentinel), sentinel)
        self.store.faults.add(fail_transactions(1))
        self.assertIsNot(self.store.faults.wrap(sentinel), sentinel)
