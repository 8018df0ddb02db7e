"""The operations layer itself: one validation, one place for each action, on a MemoryStore."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import AttemptResult, NewMessage, NewRecipient, State
from hurricane.operations import InvalidRequest, Operations, address_key, parse_address
from hurricane.store.memory import MemoryStore
from tests.helpers import T0, populate, run

#: Inputs every adapter must refuse as addresses, with the start of the message.
MALFORMED = (
    ("", "address: expected an address"),
    ("   ", "address: expected an address"),
    ("bad", "address: address must be fully qualified: 'bad'"),
    ("a b@x.test", "address: invalid address 'a b@x.test'"),
    ("a@", "address: invalid address 'a@'"),
    ("@x.test", "address: invalid address '@x.test'"),
    ("<a@x.test>", "address: invalid address '<a@x.test>'"),
    ("a@x.test\r\nRCPT TO:<b@y.test>", "address: invalid address"),
    ("a@-x.test", "address: invalid address 'a@-x.test'"),
    ("x" * 65 + "@x.test", "address: invalid address"),
)


class Scheduler:
    """Counts wake-ups; fails them when asked to."""

    def __init__(self, fail: bool = False) -> None:
        self.woken = 0
        self.fail = fail

    def wake(self) -> None:
        """Count; raise when failing."""
        self.woken += 1
        if self.fail:
            raise RuntimeError("scheduler broken")


class Processor:
    """Records replays; has counters."""

    def __init__(self) -> None:
        self.replayed: list[int] = []

    def replay(self, bounce_id: int) -> Deferred[str]:
        """Record the id."""
        self.replayed.append(bounce_id)
        return defer.succeed(f"replayed {bounce_id}")

    def stats(self) -> dict[str, Any]:
        """Fixed counters."""
        return {"received": 7}


class Fixture:
    """A populated MemoryStore, a Clock after its events and Operations over them."""

    def __init__(self, case: SynchronousTestCase, scheduler: Scheduler | None = None) -> None:
        self.store = MemoryStore()
        self.ids = run(case, populate(self.store))
        self.clock = Clock()
        self.clock.advance(T0 + 1000)
        self.scheduler = scheduler if scheduler is not None else Scheduler()
        self.processor = Processor()
        self.ops = Operations(self.store, self.clock, self.scheduler, processor=self.processor,
                              counters={"processor": self.processor})
        self.case = case

    def deferred_delivery(self, address: str = "x@y.example") -> Any:
        """A new deferred delivery to ``address``, due far in the future."""
        run(self.case, self.store.enqueue(NewMessage(
            sender="a@b.example", recipients=(NewRecipient(address),), body=b"x"), T0))
        delivery = run(self.case, self.store.find_deliveries(recipient=address))[0]
        run(self.case, self.store.record_attempts([AttemptResult(
            delivery_id=delivery.delivery_id, state=State.deferred, at=T0 + 1, code=451,
            next_attempt_at=T0 + 99999)]))
        return delivery


class AddressTests(SynchronousTestCase):
    """The one address check and the one normalisation."""

    def test_valid(self) -> None:
        """A fully qualified address is returned as written, trimmed; the key is lower-case."""
        self.assertEqual(parse_address("  Bob.Smith+x@Example.COM "), "Bob.Smith+x@Example.COM")
        self.assertEqual(parse_address('"a b"@x.test'), '"a b"@x.test')
        self.assertEqual(address_key("  Bob@Example.COM "), "bob@example.com")

    def test_malformed(self) -> None:
        """Malformed addresses are refused naming the field, with a message that says why."""
        for value, message in MALFORMED:
            with self.assertRaises(InvalidRequest) as raised:
                parse_address(value)
            self.assertEqual(raised.exception.field, "address", value)
            self.assertTrue(raised.exception.message.startswith(message),
                            (value, raised.exception.message))
        for value in (None, 7, ["a@x.test"]):
            self.assertRaises(InvalidRequest, parse_address, value)
        with self.assertRaises(InvalidRequest) as raised:
            parse_address("bad", "recipients")
        self.assertEqual(raised.exception.field, "recipients")
        self.assertTrue(raised.exception.message.startswith("recipients: "))


class SuppressTests(SynchronousTestCase):
    """suppress, unsuppress and the lookups."""

    def setUp(self) -> None:
        self.f = Fixture(self)

    def test_suppress(self) -> None:
        """An address is added lower-cased, as the operator's, with reason and note; twice is
        not an error."""
        result = run(self, self.f.ops.suppress(" New@X.test ", note="asked"))
        self.assertEqual((result.added, result.address), (True, "new@x.test"))
        assert result.entry is not None
        self.assertEqual((result.entry.address, result.entry.reason, result.entry.source,
                          result.entry.note, result.entry.created_at),
                         ("new@x.test", "operator", "operator", "asked", T0 + 1000))
        again = run(self, self.f.ops.suppress("new@x.test", "userunknown"))
        self.assertFalse(again.added)

    def test_suppress_refuses(self) -> None:
        """A malformed address, a long or empty reason or a non-text note change nothing."""
        for value, _ in MALFORMED:
            failure = self.failureResultOf(Deferred.fromCoroutine(self.f.ops.suppress(value)),
                                           InvalidRequest)
            self.assertEqual(failure.value.field, "address")
        for kwargs, field in (({"reason": ""}, "reason"), ({"reason": "x" * 65}, "reason"),
                              ({"reason": 3}, "reason"), ({"note": 5}, "note")):
            failure = self.failureResultOf(Deferred.fromCoroutine(
                self.f.ops.suppress("a@x.test", **kwargs)), InvalidRequest)
            self.assertEqual(failure.value.field, field)
        self.assertEqual([s.address for s in run(self, self.f.ops.suppressions())],
                         ["blocked@example.org", "refused@example.org"])

    def test_unsuppress(self) -> None:
        """Removal folds the case and also removes an entry that predates the address check."""
        run(self, self.f.store.suppress("<script>@x", "operator", T0))
        result = run(self, self.f.ops.unsuppress("<SCRIPT>@x"))
        self.assertEqual((result.removed, result.address), (True, "<script>@x"))
        self.assertFalse(run(self, self.f.ops.unsuppress("<script>@x")).removed)
        self.assertTrue(run(self, self.f.ops.unsuppress("Blocked@Example.org ")).removed)
        self.failureResultOf(Deferred.fromCoroutine(self.f.ops.unsuppress(" ")), InvalidRequest)

    def test_lookup(self) -> None:
        """One entry by any case of its address; a page of the list."""
        entry = run(self, self.f.ops.suppression("REFUSED@example.org"))
        assert entry is not None
        self.assertEqual(entry.reason, "userunknown")
        self.assertIsNone(run(self, self.f.ops.suppression("nobody@example.org")))
        page = run(self, self.f.ops.suppressions(after="blocked@example.org", limit=5))
        self.assertEqual([s.address for s in page], ["refused@example.org"])


class RetryTests(SynchronousTestCase):
    """retry and release make mail due now and wake the scheduler."""

    def test_by_each_filter(self) -> None:
        """By queue id, domain or delivery id: due at the clock's time, one wake-up each."""
        f = Fixture(self)
        for n, kwargs in enumerate(({"queue_id": "q"}, {"domain": " Y1.Example "},
                                    {"delivery_id": 0})):
            delivery = f.deferred_delivery(f"x@y{n}.example")
            if "queue_id" in kwargs:
                kwargs = {"queue_id": delivery.queue_id.lower()}
            if "delivery_id" in kwargs:
                kwargs = {"delivery_id": delivery.delivery_id}
            self.assertEqual(run(self, f.ops.retry(**kwargs)), 1, kwargs)
            after = run(self, f.store.get_delivery(delivery.delivery_id))
            self.assertEqual(after.next_attempt_at, T0 + 1000, kwargs)
            self.assertEqual(f.scheduler.woken, n + 1)

    def test_nothing_due_no_wake(self) -> None:
        """When nothing matched the scheduler is not woken."""
        f = Fixture(self)
        self.assertEqual(run(self, f.ops.retry(domain="nowhere.example")), 0)
        self.assertEqual(f.scheduler.woken, 0)

    def test_no_filter_refused(self) -> None:
        """Without a filter (or with an empty one) nothing is retried."""
        f = Fixture(self)
        delivery = f.deferred_delivery()
        for kwargs in ({}, {"domain": " "}, {"queue_id": ""}, {"delivery_id": -1}):
            failure = self.failureResultOf(Deferred.fromCoroutine(f.ops.retry(**kwargs)),
                                           InvalidRequest)
            self.assertEqual(failure.value.field, "domain")
        after = run(self, f.store.get_delivery(delivery.delivery_id))
        self.assertEqual(after.next_attempt_at, T0 + 99999)

    def test_wake_failure_is_logged(self) -> None:
        """A scheduler that fails to wake does not undo the committed retry."""
        f = Fixture(self, Scheduler(fail=True))
        f.deferred_delivery()
        self.assertEqual(run(self, f.ops.retry(domain="y.example")), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_release(self) -> None:
        """A dead node's leases are given back and the scheduler woken."""
        f = Fixture(self)
        f.deferred_delivery()
        run(self, f.store.retry_now(T0 + 1000, domain="y.example"))
        claimed = run(self, f.store.claim_due(T0 + 1000, "node-a", 600, 10))
        self.assertEqual(len(claimed), 1)
        self.assertEqual(run(self, f.ops.release(" node-a ")), 1)
        self.assertEqual(f.scheduler.woken, 1)
        self.assertEqual(len(run(self, f.store.claim_due(T0 + 1000, "node-b", 600, 10))), 1)
        self.failureResultOf(Deferred.fromCoroutine(f.ops.release("")), InvalidRequest)


class ReadTests(SynchronousTestCase):
    """find, events, replay and stats."""

    def setUp(self) -> None:
        self.f = Fixture(self)

    def test_find(self) -> None:
        """A recipient's deliveries in any case, newest first, paged by id; limits checked."""
        for _ in range(3):
            self.f.deferred_delivery("many@x.example")
        found = run(self, self.f.ops.find("MANY@x.example", limit=2))
        self.assertEqual(len(found), 2)
        self.assertGreater(found[0].delivery_id, found[1].delivery_id)
        rest = run(self, self.f.ops.find("many@x.example", before=found[-1].delivery_id))
        self.assertEqual(len(rest), 1)
        for limit in (0, 1001):
            failure = self.failureResultOf(Deferred.fromCoroutine(
                self.f.ops.find("many@x.example", limit=limit)), InvalidRequest)
            self.assertEqual(failure.value.field, "limit")

    def test_events_replay_stats(self) -> None:
        """events() reads the store, replay() the processor, stats() every counter source."""
        kinds = [e.kind.value for e in run(self, self.f.ops.events(self.f.ids["ok"]))]
        self.assertEqual(kinds[0], "queued")
        self.assertEqual(run(self, self.f.ops.replay(4)), "replayed 4")
        self.assertEqual(self.f.processor.replayed, [4])
        stats = run(self, self.f.ops.stats())
        self.assertEqual(stats["processor"], {"received": 7})
        self.assertIn("queue_depth", stats)

    def test_no_processor(self) -> None:
        """replay() without a processor in this process says so."""
        ops = Operations(self.f.store, self.f.clock)
        failure = self.failureResultOf(Deferred.fromCoroutine(ops.replay(1)), RuntimeError)
        self.assertIn("no bounce processor", str(failure.value))
