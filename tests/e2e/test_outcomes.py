"""Every state of the outcome model, reached through real sockets, with the sink as the world.

Hurricane runs as the real service tree (``build_service``) in the trial
reactor, on SQLite and on PostgreSQL; the smart sink plays every remote MX
and mails asynchronous returns to the real bounce listener. The numbers
printed by ``hurricane outcomes`` must equal the sink's own count.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.demo import Rig
from hurricane.sink.scenario import default_scenario
from tests.e2e.helpers import by_state, outcomes, postgres_url, tmpdir

#: recipient -> the state it must end in after the first mailing.
FIRST = {
    "a1@x.test": "delivered",
    "a2@y.test": "delivered",
    "grey-1@x.test": "delivered",       # deferred twice, then delivered
    "vacation-1@x.test": "delivered",   # an auto-reply is only an event
    "delayed-1@x.test": "delivered",    # a "delayed" DSN is only an event
    "unknown-1@x.test": "failed",       # 550 5.1.1 at RCPT
    "spam-1@y.test": "failed",          # 554 5.7.1 after DATA (never suppressed)
    "late-1@x.test": "bounced",         # RFC 3464 DSN afterwards
    "ndrexim-1@y.test": "bounced",      # free-text NDR afterwards
    "complain-1@x.test": "complained",  # ARF afterwards
    "drop-1@x.test": "expired",         # dropped mid-DATA until max_age
}

#: The second mailing: hard bounces and complaints are suppressed, the rest sent again.
SECOND = {
    "unknown-1@x.test": "suppressed",
    "late-1@x.test": "suppressed",
    "complain-1@x.test": "suppressed",
    "spam-1@y.test": "failed",
    "a1@x.test": "delivered",
}


class OutcomeModelMixin:
    """The scenario, independent of the store engine."""

    store_url: str = ""

    def rig(self: Any) -> Rig:
        rig = Rig(reactor, tmpdir(self), default_scenario(), store_url=self.store_url,
                  web=False, delivery={"first_retry": 0.3, "max_retry_interval": 0.6,
                                       "max_age": 3.0})
        return rig

    async def run_scenario(self: Any) -> None:
        rig = self.rig()
        await rig.start()
        try:
            sub = await rig.submit(list(FIRST), mailing_id="spring-1", connections=3)
            self.assertEqual(sub.accepted, len(FIRST))
            self.assertTrue(await rig.wait_settled(40), "queue did not drain")
            records = await threads.deferToThread(outcomes, rig.config_file)
            got = {r["recipient"]: r for r in records}
            self.assertEqual({k: v["state"] for k, v in got.items()}, FIRST)
            self.assertGreaterEqual(got["grey-1@x.test"]["attempts"], 3)
            self.assertEqual((got["unknown-1@x.test"]["code"],
                              got["unknown-1@x.test"]["status"],
                              got["unknown-1@x.test"]["reason"]), (550, "5.1.1", "userunknown"))
            self.assertEqual(got["spam-1@y.test"]["reason"], "spamdetected")
            self.assertFalse(got["spam-1@y.test"]["hard"])
            self.assertEqual(got["late-1@x.test"]["reason"], "userunknown")
            self.assertEqual(got["complain-1@x.test"]["reason"], "feedback")
            self.assertEqual(got["drop-1@x.test"]["reason"], "expired")
            self.assertEqual({r["mailing_id"] for r in records}, {"spring-1"})

            # The sink's own count equals Hurricane's, state by state.
            st = rig.sink.stats
            states = by_state(records)
            self.assertEqual(st.total("accepted"), states["delivered"] + states["bounced"]
                             + states["complained"])
            self.assertEqual(len(st.counts["rejected"]), states["failed"])
            self.assertEqual(st.total("rejected"), states["failed"])
            self.assertEqual(dict(st.returns_sent), {"dsn": 1, "ndr": 1, "arf": 1,
                                                     "autoreply": 1, "delayed": 1})
            self.assertEqual(st.counts["deferred"]["grey"], 2)
            self.assertGreaterEqual(st.counts["dropped"]["drop"], 2)

            # Second mailing: hard bounces and complaints suppressed; spam is not.
            accepted_before = st.total("accepted")
            await rig.submit(list(SECOND), mailing_id="spring-2", connections=2)
            self.assertTrue(await rig.wait_settled(30), "second mailing did not drain")
            records = await threads.deferToThread(outcomes, rig.config_file)
            second = {r["recipient"]: r["state"] for r in records
                      if r["mailing_id"] == "spring-2"}
            self.assertEqual(second, SECOND)
            self.assertEqual(st.total("accepted") - accepted_before, 1)
        finally:
            await rig.stop()


class SQLiteOutcomeTests(OutcomeModelMixin, TestCase):
    """The outcome model end to end on the default SQLite store."""

    timeout = 90

    def test_every_state(self) -> Deferred[None]:
        """delivered, deferred->delivered, failed, bounced, complained, expired, suppressed."""
        return Deferred.fromCoroutine(self.run_scenario())


class PostgresOutcomeTests(OutcomeModelMixin, TestCase):
    """The outcome model end to end on PostgreSQL (a fresh database per test)."""

    timeout = 90

    def setUp(self) -> None:
        self.store_url = postgres_url(self)

    def test_every_state(self) -> Deferred[None]:
        """delivered, deferred->delivered, failed, bounced, complained, expired, suppressed."""
        return Deferred.fromCoroutine(self.run_scenario())
