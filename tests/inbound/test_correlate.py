"""Tests for hurricane.inbound.correlate: which delivery a returned message is about."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.model import Analysis
from hurricane.decisions import NOT_APPLIED
from hurricane.inbound.correlate import Correlation, correlate
from hurricane.model import Delivery, EventKind, State, StoredBounce
from hurricane.verp import VerpCodec, VerpKey

from .helpers import BOUNCE_DOMAIN, NOW, World, dsn, result, run

POSTMASTER = "postmaster@" + BOUNCE_DOMAIN


class CorrelationKeyTests(SynchronousTestCase):
    """Each correlation key, end to end through the processor and the real analyzer."""

    def setUp(self) -> None:
        self.w = World()
        [self.d] = self.w.send(["alice@example.net"], header_message_id="m1@example.org")
        self.token = self.w.token(self.d)
        self.p = self.w.processor()
        self.p.startService()

    def tearDown(self) -> None:
        self.successResultOf(self.p.stopService())
        self.assertEqual(self.w.clock.getDelayedCalls(), [])

    def process(self, raw: bytes, rcpt: str = POSTMASTER) -> int:
        bid = self.w.receive(raw, rcpt, verified=rcpt != POSTMASTER)
        self.p.submit(bid)
        return bid

    def last(self, delivery_id: int) -> Any:
        return self.w.events(delivery_id)[-1]

    def record(self, bid: int) -> dict[str, Any]:
        analysis = run(self.w.store.bounce_analysis(bid))
        assert analysis is not None
        return json.loads(analysis)  # type: ignore[no-any-return]

    def test_verp(self) -> None:
        """The verified envelope recipient correlates with key verp."""
        bid = self.process(dsn("alice@example.net"), self.token)
        self.assertEqual(self.last(self.d.delivery_id).correlation, "verp")
        self.assertEqual(self.w.bounce(bid).correlation, "verp")

    def test_unverified_copy_first_cancels_nothing(self) -> None:
        """The same report to postmaster (or forged with the same bytes) first, then to the
        VERP address: the first is recorded, not applied; the verified one still applies."""
        raw = dsn("alice@example.net")
        self.process(raw)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        self.process(raw, self.token)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual([(e.correlation, e.note) for e in self.w.events(self.d.delivery_id)
                          if e.kind is EventKind.bounce],
                         [("recipient", NOT_APPLIED), ("verp", None)])

    def test_header_token(self) -> None:
        """A verified X-Hurricane-Token in the returned headers correlates mail to postmaster."""
        bid = self.process(dsn("alice@example.net", token=self.token))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual(self.last(self.d.delivery_id).correlation, "header-token")
        self.assertEqual(self.record(bid)["correlation"]["evidence"]["header_tokens"],
                         [{"value": self.token, "delivery_id": self.d.delivery_id}])

    def test_forged_header_token_ignored(self) -> None:
        """A header token that fails the MAC is recorded as evidence and moves nothing."""
        forged = self.w.other_codec.encode(self.d.delivery_id)
        self.assertEqual(forged.split("@")[0][:14], self.token.split("@")[0][:14])
        bid = self.process(dsn("someone.else@example.org", token=forged))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        self.assertEqual(self.w.bounce(bid).correlation, None)
        [entry] = self.record(bid)["correlation"]["evidence"]["header_tokens"]
        self.assertEqual(entry["rejected"], "bad signature")
        self.assertEqual(self.p.stats()["uncorrelated"], 1)

    def test_message_id(self) -> None:
        """Our Message-ID correlates with key message-id: recorded, not applied."""
        self.process(dsn("alice@example.net", message_id="m1@example.org"))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        self.assertEqual((self.last(self.d.delivery_id).correlation,
                          self.last(self.d.delivery_id).note), ("message-id", NOT_APPLIED))

    def test_message_id_picks_the_recipient(self) -> None:
        """With a Message-ID shared by several recipients, only the one the DSN names bounces."""
        rows = self.w.send(["carol@example.net", "dave@example.net"],
                           header_message_id="m2@example.org")
        self.process(dsn("dave@example.net", message_id="m2@example.org"))
        kinds = [self.last(r.delivery_id).kind for r in rows]
        self.assertEqual(kinds, [EventKind.attempt, EventKind.bounce])

    def test_envid(self) -> None:
        """An ENVID holding our VERP local part, verified, correlates with key envid."""
        self.process(dsn("alice@example.net", envid=self.token.split("@")[0]))
        self.assertEqual(self.last(self.d.delivery_id).correlation, "envid")

    def test_forged_envid_ignored(self) -> None:
        """An ENVID that fails the MAC does not correlate; the recipient key does instead."""
        forged = self.w.other_codec.encode(self.d.delivery_id).split("@")[0]
        bid = self.process(dsn("alice@example.net", envid=forged))
        self.assertEqual(self.last(self.d.delivery_id).correlation, "recipient")
        self.assertEqual(self.record(bid)["correlation"]["evidence"]["envid"]["rejected"],
                         "bad signature")

    def test_orcpt(self) -> None:
        """ORCPT (the address as we sent it) correlates when the final recipient was rewritten."""
        self.process(dsn("alice@forward.example.org", orcpt="alice@example.net"))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        self.assertEqual((self.last(self.d.delivery_id).correlation,
                          self.last(self.d.delivery_id).note), ("orcpt", NOT_APPLIED))

    def test_recipient_newest_first(self) -> None:
        """A bare recipient matches its most recent delivery within 30 days."""
        self.w.clock.advance(3600)
        [newer] = self.w.send(["alice@example.net"])
        self.process(dsn("alice@example.net"))
        self.assertEqual(self.last(newer.delivery_id).correlation, "recipient")
        self.assertEqual(self.last(self.d.delivery_id).kind, EventKind.attempt)
        # a bare address is anyone's to write: recorded, not applied
        self.assertEqual(self.w.delivery(newer.delivery_id).state, State.delivered)

    def test_recipient_window(self) -> None:
        """A bare recipient does not match a delivery older than 30 days."""
        self.w.clock.advance(31 * 86400)
        bid = self.process(dsn("alice@example.net"))
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.delivered)
        self.assertIsNone(self.w.bounce(bid).correlation)

    def test_sibling(self) -> None:
        """A report through one recipient's token naming a co-recipient: recorded, not applied."""
        rows = self.w.send(["carol@example.net", "dave@example.net"])
        tok = self.w.token(rows[0])
        self.process(dsn("carol@example.net",
                         extra_recipients=[("dave@example.net", "failed", "5.1.1")]), tok)
        # the token's own delivery is verified; the other was found by the
        # address in the report's text, which is only a hint
        self.assertEqual(self.last(rows[0].delivery_id).correlation, "verp")
        self.assertEqual(self.last(rows[1].delivery_id).correlation, "sibling")
        self.assertEqual([self.w.delivery(r.delivery_id).state for r in rows],
                         [State.bounced, State.delivered])

    def test_per_message_token_proves_the_message_only(self) -> None:
        """A co-recipient's report through a shared token cannot bounce the token's delivery."""
        victim, mallory = self.w.send(["victim@example.net", "mallory@example.net"])
        shared = self.w.token(victim, per_message=True)  # names victim, the first
        bid = self.process(dsn("victim@example.net"), shared)
        self.assertEqual(self.w.delivery(victim.delivery_id).state, State.delivered)
        last = self.last(victim.delivery_id)
        self.assertEqual((last.correlation, last.note), ("message-token", NOT_APPLIED))
        self.assertEqual(self.w.bounce(bid).correlation, "message-token")
        self.assertEqual(self.record(bid)["correlation"]["evidence"]["message_tokens"],
                         [{"delivery_id": victim.delivery_id, "queue_id": victim.queue_id,
                           "via": "verp"}])
        self.assertIsNone(run(self.w.store.get_suppression("victim@example.net")))

    def test_per_message_token_no_renamed_fallback(self) -> None:
        """A result under an unknown name is not pinned on a shared token's delivery."""
        victim, _ = self.w.send(["victim@example.net", "mallory@example.net"])
        bid = self.process(dsn("alias@elsewhere.example"), self.w.token(victim, per_message=True))
        self.assertEqual(self.last(victim.delivery_id).kind, EventKind.attempt)
        self.assertNotIn("renamed", self.record(bid)["correlation"]["evidence"])

    def test_per_message_header_token(self) -> None:
        """A shared token in the returned headers proves the message only, too."""
        victim, mallory = self.w.send(["victim@example.net", "mallory@example.net"])
        self.process(dsn("mallory@example.net", token=self.w.token(victim, per_message=True)))
        self.assertEqual([self.w.delivery(r.delivery_id).state for r in (victim, mallory)],
                         [State.delivered, State.delivered])
        self.assertEqual(self.last(mallory.delivery_id).correlation, "message-token")

    def test_per_message_token_one_recipient(self) -> None:
        """A per-message token of a message with one recipient names it: applied."""
        [alone] = self.w.send(["alone@example.net"])
        self.process(dsn("alone@example.net"), self.w.token(alone, per_message=True))
        self.assertEqual(self.w.delivery(alone.delivery_id).state, State.bounced)
        self.assertEqual(self.last(alone.delivery_id).correlation, "verp")

    def test_sibling_cannot_suppress(self) -> None:
        """A recipient forging a DSN with its own token cannot get a co-recipient suppressed."""
        rows = self.w.send(["mallory@example.net", "victim@example.net"])
        tok = self.w.token(rows[0])  # mallory's own return path, MAC valid
        self.process(dsn("victim@example.net"), tok)
        self.assertEqual(self.last(rows[1].delivery_id).correlation, "sibling")
        self.assertIsNone(run(self.w.store.get_suppression("victim@example.net")))

    def test_message_id_cannot_suppress(self) -> None:
        """A report matched only by our Message-ID (seen by every recipient) suppresses no one."""
        [d] = self.w.send(["erin@example.net"], header_message_id="shared@example.org")
        self.process(dsn("erin@example.net", message_id="shared@example.org"))
        self.assertEqual(self.last(d.delivery_id).correlation, "message-id")
        self.assertIsNone(run(self.w.store.get_suppression("erin@example.net")))

    def test_renamed_recipient(self) -> None:
        """A per-recipient token pairs with a result under another name (an alias)."""
        bid = self.process(dsn("a.smith@mail.example.net"), self.token)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual(self.record(bid)["correlation"]["evidence"]["renamed"],
                         ["a.smith@mail.example.net"])

    def test_envelope_beats_header(self) -> None:
        """The envelope token wins over a valid header token naming another delivery."""
        [other] = self.w.send(["bob@example.net"])
        self.process(dsn("alice@example.net", token=self.w.token(other)), self.token)
        self.assertEqual(self.w.delivery(self.d.delivery_id).state, State.bounced)
        self.assertEqual(self.w.delivery(other.delivery_id).state, State.delivered)

    def test_unsent_delivery_not_matched(self) -> None:
        """A bare recipient never matches a delivery that was never sent (still queued)."""
        self.w.clock.advance(60)
        [queued] = self.w.send(["alice@example.net"], state=State.queued)
        self.process(dsn("alice@example.net"))
        self.assertEqual(self.w.delivery(queued.delivery_id).state, State.queued)
        self.assertEqual(self.last(queued.delivery_id).kind, EventKind.queued)
        self.assertEqual(self.last(self.d.delivery_id).correlation, "recipient")


class CorrelateFunctionTests(SynchronousTestCase):
    """correlate() on hand-made analyses."""

    def setUp(self) -> None:
        self.w = World()
        self.rows = self.w.send(["alice@example.net", "bob@example.net"],
                                header_message_id="m1@example.org")

    def bounce(self, delivery_id: int | None = None) -> StoredBounce:
        return StoredBounce(1, b"", "", POSTMASTER, NOW, delivery_id, "pending")

    def correlate(self, analysis: Analysis, delivery_id: int | None = None) -> Correlation:
        corr: Correlation = run(correlate(self.w.store, self.w.codec, self.bounce(delivery_id),
                                          analysis, self.w.clock.seconds()))
        return corr

    def test_autoreply_without_result_uses_sender(self) -> None:
        """An auto-reply correlated by Message-ID with no result pairs with its sender's row."""
        a = Analysis("autoreply", original_message_id="m1@example.org",
                     from_address="Bob <BOB@example.net>")
        corr = self.correlate(a)
        self.assertEqual([(m.delivery.delivery_id, m.key, m.result) for m in corr.matches],
                         [(self.rows[1].delivery_id, "message-id", None)])

    def test_single_delivery_without_result(self) -> None:
        """A message verified to one delivery but naming no recipient still concerns it."""
        corr = self.correlate(Analysis("bounce"), self.rows[0].delivery_id)
        self.assertEqual([(m.delivery.delivery_id, m.result) for m in corr.matches],
                         [(self.rows[0].delivery_id, None)])
        self.assertEqual(corr.key, "verp")

    def test_known_deliveries_are_not_read_again(self) -> None:
        """Deliveries the caller read already (a batch's envelopes) are taken as given:
        the same correlation, no store read."""
        delivery_id = self.rows[0].delivery_id
        a = Analysis("bounce", (result("alice@example.net"),))
        expected = self.correlate(a, delivery_id).to_json()
        known = {delivery_id: run(self.w.store.get_delivery(delivery_id))}
        reads: list[int] = []
        real = self.w.store.get_delivery

        async def counted(i: int) -> Any:
            reads.append(i)
            return await real(i)

        self.w.store.get_delivery = counted  # type: ignore[method-assign]
        corr = run(correlate(self.w.store, self.w.codec, self.bounce(delivery_id), a,
                             self.w.clock.seconds(), known=known))
        self.assertEqual(corr.to_json(), expected)
        self.assertEqual(reads, [])

    def test_unmatched_results_kept(self) -> None:
        """Results no key pairs are listed as unmatched and the correlation key is None."""
        corr = self.correlate(Analysis("bounce", (result("nobody@example.com"),)))
        self.assertEqual(corr.matches, [])
        self.assertIsNone(corr.key)
        self.assertEqual(corr.to_json()["unmatched"], ["nobody@example.com"])

    def test_missing_envelope_delivery_falls_through(self) -> None:
        """A verified envelope id with no row left falls through to the next keys."""
        a = Analysis("bounce", (result("bob@example.net"),), original_message_id="m1@example.org")
        corr = self.correlate(a, delivery_id=999)
        self.assertEqual(corr.key, "message-id")
        self.assertTrue(corr.evidence["envelope_delivery_missing"])

    def test_full_address_envid(self) -> None:
        """An ENVID holding a whole VERP address is verified like a local part."""
        a = Analysis("bounce", (result("alice@example.net"),),
                     envid=self.w.token(self.rows[0]).upper())
        self.assertEqual(self.correlate(a).key, "envid")

    def test_json_shape(self) -> None:
        """to_json lists each match with its delivery, recipient and key."""
        a = Analysis("bounce", (result("alice@example.net"),))
        data = self.correlate(a, self.rows[0].delivery_id).to_json()
        self.assertEqual(data["matches"], [{"delivery_id": self.rows[0].delivery_id,
                                            "recipient": "alice@example.net", "key": "verp"}])
        json.dumps(data)


class LookupBoundTests(SynchronousTestCase):
    """The store questions one returned message may cost are bounded (issue 23's second
    review: a DSN naming one address 500 times cost 500 queries, 7-16 s of store time)."""

    def setUp(self) -> None:
        self.w = World()
        self.rows = self.w.send(["alice@example.net", "bob@example.net"])
        self.asked: list[dict[str, Any]] = []
        find = self.w.store.find_deliveries

        async def counting(**kwargs: Any) -> Any:
            self.asked.append(kwargs)
            return await find(**kwargs)

        self.patch(self.w.store, "find_deliveries", counting)

    def correlate(self, names: list[str], delivery_id: int | None = None) -> Correlation:
        bounce = StoredBounce(1, b"", "", POSTMASTER, NOW, delivery_id, "pending")
        analysis = Analysis("bounce", tuple(result(n) for n in names))
        corr: Correlation = run(correlate(self.w.store, self.w.codec, bounce, analysis,
                                          self.w.clock.seconds()))
        return corr

    def test_same_address_asked_once(self) -> None:
        """500 results naming one address: one look-up, and every result matched."""
        corr = self.correlate(["Alice@example.net"] * 500)
        self.assertEqual(len(self.asked), 1)
        self.assertEqual({(m.delivery.delivery_id, m.key) for m in corr.matches},
                         {(self.rows[0].delivery_id, "recipient")})
        self.assertEqual(len(corr.matches), 500)

    def test_distinct_addresses_capped(self) -> None:
        """500 distinct unknown addresses: _MAX_WEAK_LOOKUPS look-ups, the rest unmatched
        and counted in the evidence; a known address past the cap stays unmatched."""
        from hurricane.inbound.correlate import _MAX_WEAK_LOOKUPS
        names = [f"u{i}@example.com" for i in range(499)] + ["alice@example.net"]
        corr = self.correlate(names)
        self.assertEqual(len(self.asked), _MAX_WEAK_LOOKUPS)
        self.assertEqual(corr.matches, [])
        self.assertEqual(len(corr.unmatched), 500)
        self.assertEqual(corr.evidence["weak_lookups_skipped"], 500 - _MAX_WEAK_LOOKUPS)

    def test_siblings_read_the_queue_entry_once(self) -> None:
        """Through a verified token, 500 results naming other addresses read the anchor's
        queue entry once (before: two queries per result), and a sibling is found."""
        names = [f"u{i}@example.com" for i in range(300)] + ["bob@example.net"] * 200
        corr = self.correlate(names, self.rows[0].delivery_id)
        self.assertEqual([sorted(k for k, v in q.items() if v is not None)
                          for q in self.asked], [["limit", "queue_id"]])
        siblings = {(m.delivery.delivery_id, m.key) for m in corr.matches}
        self.assertIn((self.rows[1].delivery_id, "sibling"), siblings)


class LegacyPerMessageTests(SynchronousTestCase):
    """Version 1 tokens of a per-message server: shared by a transaction, or not."""

    def setUp(self) -> None:
        self.w = World()
        self.codec = VerpCodec(BOUNCE_DOMAIN, [VerpKey(0, b"k" * 32, NOW - 86400)],
                               today=lambda: int(self.w.clock.seconds() // 86400),
                               legacy_per_message=True)

    def correlate(self, token_of: Delivery, named: str) -> Correlation:
        token = self.codec.encode(token_of.delivery_id, version=1)
        a = Analysis("bounce", (result(named),), verp_tokens=(token,))
        corr: Correlation = run(correlate(self.w.store, self.codec,
                                          StoredBounce(1, b"", "", POSTMASTER, NOW, None,
                                                       "pending"), a, NOW))
        return corr

    def test_several_recipients(self) -> None:
        """A v1 token of a message to several recipients proves the message only."""
        first, other = self.w.send(["first@example.net", "other@example.net"])
        corr = self.correlate(first, "first@example.net")
        self.assertEqual([(m.delivery.delivery_id, m.key) for m in corr.matches],
                         [(first.delivery_id, "message-token")])

    def test_one_recipient(self) -> None:
        """A v1 token of a message to one recipient still names its delivery."""
        [alone] = self.w.send(["alone@example.net"])
        corr = self.correlate(alone, "alone@example.net")
        self.assertEqual([(m.delivery.delivery_id, m.key) for m in corr.matches],
                         [(alone.delivery_id, "header-token")])
