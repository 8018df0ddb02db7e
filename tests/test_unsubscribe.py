"""Unsubscribe tokens and the /u/ endpoint: forgeries refused before the store, GET inert."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane.config import config_from_dict
from hurricane.model import Delivery, NewMessage, NewRecipient, State
from hurricane.passwords import hash_password
from hurricane.report.web import build_web_site
from hurricane.store.memory import MemoryStore
from hurricane.unsubscribe import (
    BulkHeaders,
    UnsubscribeCodec,
    Unsubscriber,
    UnsubscribeToken,
    bulk_headers,
)
from hurricane.verp import VerpKey
from tests.report.helpers import run

KEYS = [VerpKey(0, b"k" * 32, 0.0), VerpKey(1, b"j" * 32, 86400.0)]
DAY = 20_000
T0 = DAY * 86400.0 + 3600


def codec(**kw: Any) -> UnsubscribeCodec:
    return UnsubscribeCodec("Bounces.Shop.Test", KEYS, today=kw.pop("today", DAY), **kw)


class CodecTests(SynchronousTestCase):
    """The token: what it carries, what breaks it."""

    def test_round_trip_fits_a_local_part(self) -> None:
        """A token names the delivery and stream; u-TOKEN is at most 64 octets."""
        c = codec()
        token = c.encode(123456789, "n" * 30)
        self.assertLessEqual(len("u-" + token), 64)
        got = c.decode(token.upper())  # a system that folds case keeps it valid
        self.assertEqual((got.delivery_id, got.stream, got.key_id),  # type: ignore[union-attr]
                         (123456789, "n" * 30, 1))
        self.assertEqual(c.mailto(token), f"u-{token}@bounces.shop.test")
        self.assertTrue(c.decode_mailto("u-" + token))

    def test_every_altered_character_is_refused(self) -> None:
        """Changing any one character of the token fails it."""
        c = codec()
        token = c.encode(42, "news")
        for i, ch in enumerate(token):
            if ch == ".":
                continue
            other = "a" if ch != "a" else "b"
            self.assertFalse(c.decode(token[:i] + other + token[i + 1:]), i)
        self.assertFalse(c.decode(token + "x"))
        self.assertFalse(c.decode(token.replace(".news", ".promo")))

    def test_other_domain_key_or_age_refused(self) -> None:
        """Bound to the bounce domain and keys; expires; not a VERP token."""
        token = codec().encode(42, "news")
        self.assertFalse(UnsubscribeCodec("other.test", KEYS, today=DAY).decode(token))
        self.assertFalse(UnsubscribeCodec("bounces.shop.test", [VerpKey(1, b"x" * 32, 0.0)],
                                          today=DAY).decode(token))
        self.assertEqual(codec(today=DAY + 400, max_age_days=365).decode(token).reason,
                         "too old")  # type: ignore[union-attr]
        self.assertTrue(codec(today=DAY + 300).decode(token))
        self.assertFalse(codec().decode("hfa" + "a" * 40))

    def test_headers(self) -> None:
        """List-Unsubscribe carries the https link and the mailto address."""
        config = config_from_dict({
            "streams": [{"name": "news", "kind": "bulk", "feedback_id": "{mailing}:{stream}"}],
            "unsubscribe": {"base_url": "https://mail.shop.test/"}})
        stream = config.stream_set.get("news")
        assert stream is not None
        d = Delivery(7, 1, "Q", "app@shop.test", "r@x.test", "x.test", State.queued, None,
                     False, 0, None, None, None, None, None, "spring", None, None, None,
                     0.0, 0.0, stream="news")
        text = bulk_headers(codec(), config.unsubscribe, stream, d, "shop.test").decode()
        token = codec().encode(7, "news")
        self.assertEqual(text, (
            f"List-Unsubscribe: <https://mail.shop.test/u/{token}>,\r\n"
            f" <mailto:u-{token}@bounces.shop.test>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "Feedback-ID: spring:news\r\n"))


class _Signer:
    async def sign(self, message: bytes) -> bytes:
        return b"DKIM-Signature: covers-everything-above\r\n" + message


class BulkHeadersTests(TestCase):
    """The outbound's decoration: the application's own headers replaced, then signed."""

    async def test_replaces_and_signs(self) -> None:
        config = config_from_dict({"streams": [{"name": "news", "kind": "bulk"}]})
        headers = BulkHeaders(codec(), config.unsubscribe, config.stream_set, _Signer())
        self.assertEqual(headers.decorated, frozenset({"news"}))
        d = Delivery(7, 1, "Q", "app@shop.test", "r@x.test", "x.test", State.queued, None,
                     False, 0, None, None, None, None, None, None, None, None, None,
                     0.0, 0.0, stream="news")
        self.assertTrue(headers.applies(d))
        self.assertFalse(headers.applies(Delivery(
            8, 1, "Q", "a@b.c", "r@x.test", "x.test", State.queued, None, False, 0, None, None,
            None, None, None, None, None, None, None, 0.0, 0.0)))
        out = await headers.apply(d, b"List-Unsubscribe: <mailto:spoof@evil.test>\r\n"
                                     b"Subject: hi\r\n\r\nbody\r\n")
        self.assertTrue(out.startswith(b"DKIM-Signature: covers-everything-above\r\n"
                                       b"List-Unsubscribe: <mailto:u-"))
        self.assertNotIn(b"spoof@evil.test", out)
        self.assertEqual(out.count(b"List-Unsubscribe:"), 1)


class _NoStore:
    """Fails the test if anything reads or writes it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store was touched: {name}")


class EndpointTests(SynchronousTestCase):
    """/u/TOKEN on the report site, without any login."""

    def site(self, store: Any) -> tuple[StubTreq, Unsubscriber]:
        config = config_from_dict({
            "web": {"users": {"admin": hash_password("pw", iterations=1000)}},
            "streams": [{"name": "news", "kind": "bulk"}]})
        clock = Clock()
        clock.advance(T0)
        unsubscriber = Unsubscriber(codec(), store, clock)
        site = build_web_site(config, store, clock, on_enqueued=lambda: None,
                              unsubscriber=unsubscriber)
        return StubTreq(site.resource), unsubscriber

    def request(self, treq: StubTreq, method: str, url: str, body: bytes | None = None
                ) -> tuple[int, str]:
        headers = {b"content-type": [b"application/x-www-form-urlencoded"]} if body else {}
        response = self.successResultOf(treq.request(method, url, data=body, headers=headers))
        return response.code, self.successResultOf(response.text())

    def test_forged_and_get_never_touch_the_store(self) -> None:
        """A GET shows the form; a forged POST is 404; neither reads the store."""
        treq, _ = self.site(_NoStore())
        token = codec().encode(5, "news")
        code, page = self.request(treq, "GET", f"http://localhost/u/{token}")
        self.assertEqual(code, 200, page)
        self.assertIn('value="One-Click"', page)
        forged = token[:3] + ("b" if token[3] == "a" else "a") + token[4:]
        code, _ = self.request(treq, "POST", f"http://localhost/u/{forged}",
                               b"List-Unsubscribe=One-Click")
        self.assertEqual(code, 404)
        code, _ = self.request(treq, "GET", f"http://localhost/u/{forged}")
        self.assertEqual(code, 404)
        code, _ = self.request(treq, "POST", f"http://localhost/u/{token}", b"other=1")
        self.assertEqual(code, 400)
        # The report itself still needs its login.
        code, _ = self.request(treq, "GET", "http://localhost/suppressions")
        self.assertEqual(code, 401)

    def test_post_unsubscribes_once(self) -> None:
        """The one-click POST records the event and the stream entry; a repeat nothing."""
        store = MemoryStore()
        run(store.open())
        result = run(store.enqueue(NewMessage("app@shop.test", (NewRecipient("r@x.test"),),
                                              b"Subject: x\r\n\r\n", stream="news"), T0))
        did = result.recipients[0].delivery_id
        treq, unsubscriber = self.site(store)
        url = f"http://localhost/u/{codec().encode(did, 'news')}"
        self.assertEqual(self.request(treq, "GET", url)[0], 200)
        self.assertEqual(run(store.suppression_entries("r@x.test")), [])
        for _ in range(2):
            code, page = self.request(treq, "POST", url, b"List-Unsubscribe=One-Click")
            self.assertEqual(code, 200, page)
        entries = run(store.suppression_entries("r@x.test"))
        self.assertEqual([(e.scope, e.reason) for e in entries],
                         [("stream:news", "unsubscribed")])
        kinds = [e.kind.value for e in run(store.events(did))]
        self.assertEqual(kinds.count("unsubscribed"), 1)
        self.assertEqual(unsubscriber.recorded, 2)
        checked = unsubscriber.verify(url.rsplit("/", 1)[1])
        self.assertIsInstance(checked, UnsubscribeToken)


class UnsubscribeSiteTests(SynchronousTestCase):
    """``[unsubscribe] listen``: /u/ alone, the report and the API not there at all."""

    def test_only_u(self) -> None:
        from hurricane.report.unsubscribe import build_unsubscribe_site

        config = config_from_dict({"streams": [{"name": "news", "kind": "bulk"}]})
        clock = Clock()
        clock.advance(T0)
        store = MemoryStore()
        run(store.open())
        unsubscriber = Unsubscriber(codec(), store, clock)
        web = build_web_site(config, store, clock, on_enqueued=lambda: None,
                             unsubscriber=unsubscriber)
        treq = StubTreq(build_unsubscribe_site(web, unsubscriber, clock).resource)
        token = codec().encode(1, "news")
        for path, code in ((f"/u/{token}", 200), ("/", 404), ("/suppressions", 404),
                           ("/api/v1/summary", 404), ("/metrics", 404), ("/u/", 404),
                           (f"/u/{token}/x", 404)):
            response = self.successResultOf(treq.get("http://127.0.0.1" + path))
            self.assertEqual(response.code, code, path)


class FeedbackIdTests(TestCase):
    """A transactional stream with a template gets Feedback-ID, and no unsubscribe link."""

    async def test_transactional_feedback_id(self) -> None:
        config = config_from_dict({"streams": [
            {"name": "receipts", "feedback_id": "{mailing}:{stream}:{sender}"}]})
        headers = BulkHeaders(codec(), config.unsubscribe, config.stream_set, None)
        d = Delivery(7, 1, "Q", "app@shop.test", "r@x.test", "x.test", State.queued, None,
                     False, 0, None, None, None, None, None, "may", None, None, None,
                     0.0, 0.0, stream="receipts")
        self.assertTrue(headers.applies(d))
        out = await headers.apply(d, b"Feedback-ID: theirs\r\nSubject: hi\r\n\r\nbody\r\n")
        self.assertEqual(out, b"Feedback-ID: may:receipts:shop.test\r\nSubject: hi\r\n\r\n"
                              b"body\r\n")
