"""Scoped suppression, unsubscribes and DNS confirmation: one mixin, every engine."""

from __future__ import annotations

from typing import Any

from hurricane.model import AttemptResult, EventKind, NewMessage, NewRecipient, Reason, State
from hurricane.outcome import Source

T0 = 2_000_000.0


def message(*recipients: str, **fields: Any) -> NewMessage:
    """A small message to ``recipients``."""
    fields.setdefault("body", b"Subject: hi\r\n\r\nhello\r\n")
    return NewMessage(sender="app@sender.test",
                      recipients=tuple(NewRecipient(r) for r in recipients), **fields)


class ScopedSuppressionMixin:
    """Run against a store made by :meth:`make_store` (trial TestCase)."""

    assertEqual: Any
    assertTrue: Any
    assertFalse: Any
    assertIsNone: Any
    store: Any

    async def make_store(self) -> Any:
        raise NotImplementedError

    async def setUp(self) -> None:  # noqa: D102 - trial hook
        self.store = await self.make_store()

    async def states(self, **fields: Any) -> list[tuple[str, str | None]]:
        result = await self.store.enqueue(message("Ann@x.test", "bob@x.test", "cy@y.test",
                                                  **fields), T0)
        return [(r.state.value, r.reason) for r in result.recipients]

    async def test_stream_entry_stops_only_that_stream(self) -> None:
        """An unsubscribe's entry stops the newsletter, not the transactional mail."""
        self.assertTrue(await self.store.add_suppression("stream:news", "ann@X.test",
                                                         "unsubscribed", T0))
        self.assertFalse(await self.store.add_suppression("stream:news", "ANN@x.test",
                                                          "unsubscribed", T0))
        self.assertEqual(await self.states(stream="news"),
                         [("suppressed", "unsubscribed"), ("queued", None), ("queued", None)])
        self.assertEqual(await self.states(), [("queued", None)] * 3)
        self.assertEqual(await self.states(stream="other"), [("queued", None)] * 3)

    async def test_suppressed_event_names_the_entry(self) -> None:
        """The recipient's suppressed event says which entry matched."""
        await self.store.add_suppression("mailing:spring", "bob@x.test", "complaint", T0)
        await self.store.add_suppression("global", "cy@y.test", "userunknown", T0)
        result = await self.store.enqueue(message("bob@x.test", "cy@y.test",
                                                  mailing_id="spring"), T0)
        texts = []
        for r in result.recipients:
            self.assertEqual(r.state, State.suppressed)
            event = (await self.store.events(r.delivery_id))[0]
            texts.append((event.kind, event.text))
        self.assertEqual(texts, [(EventKind.suppressed, "suppression entry: mailing:spring"),
                                 (EventKind.suppressed, "suppression entry: global")])

    async def test_domain_and_expiry(self) -> None:
        """A domain entry stops every address of the domain; an expired entry nothing."""
        await self.store.add_suppression("domain", "y.test", "hostunknown", T0)
        await self.store.add_suppression("stream:transactional", "ann@x.test", "x", T0,
                                         expires_at=T0 - 1)
        self.assertEqual(await self.states(),
                         [("queued", None), ("queued", None), ("suppressed", "hostunknown")])
        self.assertTrue(await self.store.remove_suppression("domain", "y.test"))
        self.assertFalse(await self.store.remove_suppression("domain", "y.test"))
        self.assertEqual(await self.states(), [("queued", None)] * 3)

    async def test_list_pages_every_scope(self) -> None:
        """Listing: global first, then by scope and address, in pages."""
        await self.store.add_suppression("stream:news", "b@x.test", "unsubscribed", T0)
        await self.store.add_suppression("global", "z@x.test", "userunknown", T0)
        await self.store.add_suppression("domain", "y.test", "hostunknown", T0)
        await self.store.add_suppression("stream:news", "a@x.test", "unsubscribed", T0)
        everything = [(e.scope, e.address) for e in await self.store.list_suppressions()]
        self.assertEqual(everything, [("global", "z@x.test"), ("domain", "y.test"),
                                      ("stream:news", "a@x.test"), ("stream:news", "b@x.test")])
        paged: list[tuple[str, str]] = []
        after = None
        for _ in range(10):
            page = await self.store.list_suppressions(after=after, limit=1)
            if not page:
                break
            paged.append((page[0].scope, page[0].address))
            after = (page[0].scope, page[0].address)
        self.assertEqual(paged, everything)
        news = await self.store.list_suppressions(scope="stream:news")
        self.assertEqual([e.address for e in news], ["a@x.test", "b@x.test"])
        entries = await self.store.suppression_entries("A@x.test")
        self.assertEqual([e.scope for e in entries], ["stream:news"])

    async def test_unsubscribe_once(self) -> None:
        """An unsubscribe records one event and one stream entry, however often sent."""
        result = await self.store.enqueue(message("ann@x.test", stream="news"), T0)
        did = result.recipients[0].delivery_id
        first = await self.store.record_unsubscribe(did, "news", T0 + 5, "one-click")
        self.assertTrue(first.known and first.added)
        again = await self.store.record_unsubscribe(did, "news", T0 + 6, "mailto")
        self.assertFalse(again.added)
        unknown = await self.store.record_unsubscribe(did + 1000, "news", T0 + 6, "mailto")
        self.assertFalse(unknown.known or unknown.added)
        kinds = [e.kind for e in await self.store.events(did)]
        self.assertEqual(kinds.count(EventKind.unsubscribed), 1)
        entry = (await self.store.suppression_entries("ann@x.test"))[0]
        self.assertEqual((entry.scope, entry.source, entry.event_id),
                         ("stream:news", "unsubscribe", first.event_id))
        self.assertEqual(await self.store.message_stream(did), "news")
        d = await self.store.get_delivery(did)
        self.assertEqual(d.stream, "news")


class DnsConfirmationMixin(ScopedSuppressionMixin):
    """SQL engines only: NXDOMAIN suppresses the domain once confirmed over time."""

    async def fail_dns(self, address: str, at: float) -> None:
        result = await self.store.enqueue(message(address), at)
        did = result.recipients[0].delivery_id
        await self.store.record_attempts([AttemptResult(
            delivery_id=did, state=State.failed, at=at, reason=Reason.hostunknown, hard=True,
            suppress=True, source=Source.local, text="gmail.test: no such domain")])

    async def test_dns_failure_confirmed_over_time(self) -> None:
        """One NXDOMAIN suppresses nobody; a second an hour later suppresses the domain."""
        await self.fail_dns("someone@gmail.test", T0)
        await self.fail_dns("other@gmail.test", T0 + 600)
        self.assertEqual(await self.store.list_suppressions(), [])
        self.assertEqual(await self.states(), [("queued", None)] * 3)
        await self.fail_dns("someone@gmail.test", T0 + 3700)
        entries = await self.store.list_suppressions()
        self.assertEqual([(e.scope, e.address, e.source) for e in entries],
                         [("domain", "gmail.test", "dns")])
        self.assertIsNone(await self.store.get_suppression("someone@gmail.test"))
        self.assertTrue(await self.store.remove_suppression("domain", "gmail.test"))
