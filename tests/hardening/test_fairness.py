"""The scheduler with every slot held by one slow destination (fake DNS, connector, clock)."""

from __future__ import annotations

from collections import Counter

import tests.outbound.test_queue as queue_tests
from hurricane.model import State


class MakeRoomTests(queue_tests.SchedulerTestCase):
    """Waiting rows of a full destination are traded for due work of other destinations."""

    def test_other_destination_gets_a_slot(self) -> None:
        """Mail to a second domain starts while the first holds every slot, each sent once."""
        self.dns.add_mx("other.example", (10, "mx.other.example"))
        self.dns.add_host("mx.other.example", "192.0.2.77")
        self.connector.send_delay = 100.0
        service = self.start(max_in_flight=4, max_connections_per_destination=1)
        slow = self.enqueue(*[f"u{i}@example.com" for i in range(10)])
        self.turn()
        self.assertEqual(service.stats()["in_flight"], 4)
        [fast] = self.enqueue("x@other.example")
        self.turn()
        self.turn(self.config.poll_interval)
        self.assertIn("192.0.2.77", [a[1] for a in self.connector.attempts])
        self.assertLessEqual(service.stats()["in_flight"], 4)
        for _ in range(40):
            self.turn(50.0)
        self.assertEqual(self.delivery(fast).state, State.delivered)
        self.assertEqual({self.delivery(i).state for i in slow}, {State.delivered})
        sent = Counter(r.address for _, m in self.connector.messages for r in m.recipients)
        self.assertEqual(set(sent.values()), {1})
        self.assertTrue(all(limit <= 4 for limit, _ in self.store.claims))

    def test_single_destination_keeps_every_slot(self) -> None:
        """With no other due work nothing is given back: one domain may use every slot."""
        self.connector.send_delay = 100.0
        service = self.start(max_in_flight=4, max_connections_per_destination=1)
        self.enqueue(*[f"u{i}@example.com" for i in range(10)])
        self.turn()
        for _ in range(3):
            self.turn(self.config.poll_interval)
            self.assertEqual(service.stats()["in_flight"], 4)
        for _ in range(40):
            self.turn(50.0)
