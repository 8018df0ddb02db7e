"""The HTML report, its forms and CSV exports, over a MemoryStore with StubTreq."""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import BounceEvent, EventKind, NewMessage, NewRecipient, ReturnedMessage
from hurricane.report.figures import STATES
from tests.test_operations import MALFORMED

from .helpers import (
    CSRF_SECRET,
    HOSTILE_TEXTS,
    T0,
    WebFixture,
    body_of,
    check_csv_cells,
    json_of,
    make_config,
    run,
    store_hostile,
)

BASE = "http://127.0.0.1"


class OverviewTests(SynchronousTestCase):
    """The overview page shows the store's figures and its charts."""

    def setUp(self) -> None:
        self.f = WebFixture()

    def test_numbers_equal_summary(self) -> None:
        """Every figure of the overview equals store.summary for the window."""
        response, page = body_of(self.f, self.f.treq.get(BASE + "/?window=day"))
        self.assertEqual(response.code, 200)
        until = (T0 // 3600 + 1) * 3600
        summary = run(self.f.store.summary(until - 86400, until))
        kpi = dict((label, value) for value, label in re.findall(
            r'<div class="v">([^<]*)</div><div class="l">([^<]*)</div>', page))
        self.assertEqual(kpi["Messages"], str(summary.messages))
        self.assertEqual(kpi["Recipients"], str(summary.recipients))
        for state in STATES:
            count = summary.by_state.get(state, 0)
            self.assertRegex(page, rf'>{state}</span></td><td class="n">{count}</td>')
        self.assertEqual(kpi["Delivery rate"], "50.0 %")  # ok + angry of 4 finished
        self.assertIn("<svg", page)
        self.assertIn("mailboxfull: 1 asynchronous", page)
        self.assertIn("one.test", page)

    def test_windows(self) -> None:
        """Hour, week and custom windows render; a bad window is a 400 naming it."""
        for query in ("window=hour", "window=week",
                      "window=custom&since=2023-11-14T00:00&until=2023-11-15T00:00"):
            response, _ = body_of(self.f, self.f.treq.get(BASE + "/?" + query))
            self.assertEqual(response.code, 200, query)
        response, page = body_of(self.f, self.f.treq.get(BASE + "/?window=year"))
        self.assertEqual(response.code, 400)
        self.assertIn("window", page)

    def test_store_unavailable(self) -> None:
        """A store failure is a 503 page, not a crash."""
        self.f.store.set_available(False)
        response, page = body_of(self.f, self.f.treq.get(BASE + "/"))
        self.assertEqual(response.code, 503)
        self.assertIn("unavailable", page)


class PagesTests(SynchronousTestCase):
    """Per mailing, message and recipient pages, search and raw messages."""

    def setUp(self) -> None:
        self.f = WebFixture()

    def get(self, path: str) -> tuple[int, str]:
        """GET a path; the status and the body."""
        response, text = body_of(self.f, self.f.treq.get(BASE + path))
        return response.code, text

    def test_recipient_page(self) -> None:
        """A recipient page lists every event with codes, remote host, TLS, rule and the
        returned message links."""
        bounce = self.f.data["ids"][3]
        code, page = self.get(f"/delivery/{bounce}")
        self.assertEqual(code, 200)
        for text in ("queued", "attempt", "bounce", "mailbox full", "dsn-status", "5.2.2",
                     f"/bounce/{self.f.data['bounce_id']}?download=1"):
            self.assertIn(text, page)
        code, page = self.get(f"/delivery/{self.f.data['ids'][0]}")
        self.assertIn("TLSv1.3", page)
        self.assertIn("mx.one.test", page)

    def test_raw_bounce(self) -> None:
        """The returned message is served as plain text, inline or as a download."""
        response, text = body_of(self.f, self.f.treq.get(
            BASE + f"/bounce/{self.f.data['bounce_id']}?download=1"))
        self.assertEqual(response.code, 200)
        self.assertIn("<b>gone</b>", text)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/plain; charset=utf-8"])
        self.assertTrue(response.headers.getRawHeaders("content-disposition")[0]
                        .startswith("attachment"))

    def test_purged_bounce(self) -> None:
        """A returned message past its retention answers 410 and says why."""
        run(self.f.store.purge_bounces(T0 + 10**7, T0 + 10**7))
        response, text = body_of(self.f, self.f.treq.get(
            BASE + f"/bounce/{self.f.data['bounce_id']}"))
        self.assertEqual(response.code, 410)
        self.assertIn("retention", text)
        self.assertNotIn("<b>gone</b>", text)

    def test_unapplied_note_shown(self) -> None:
        """A report matched by a weak key shows "recorded, not applied" on the recipient page."""
        ok = self.f.data["ids"][0]
        bounce_id = run(self.f.store.store_bounce(ReturnedMessage(
            b"forged", "", "postmaster@bounce.test", T0 + 100)))
        run(self.f.store.record_bounce(bounce_id, [BounceEvent(
            delivery_id=ok, kind=EventKind.bounce, at=T0 + 100, bounce_id=bounce_id,
            reason="userunknown",
            correlation="recipient")], "bounce", "recipient", "{}"))
        code, page = self.get(f"/delivery/{ok}")
        self.assertIn("recipient \u2014 recorded, not applied: unverified correlation", page)

    def test_mailing_and_message(self) -> None:
        """The mailing page has its figures and recipients; the message page its envelope."""
        code, page = self.get("/mailing/spring-26")
        self.assertEqual(code, 200)
        self.assertIn("angry@three.test", page)
        self.assertIn('<div class="v">5</div><div class="l">Recipients</div>', page)
        queue_id = self.f.data["result"].queue_id
        code, page = self.get(f"/message/{queue_id}")
        self.assertEqual(code, 200)
        self.assertIn("h1@sender.test", page)
        code, body = self.get(f"/message/{queue_id}/body")
        self.assertIn("hello", body)
        self.assertEqual(self.get("/mailing/none")[0], 404)

    def test_search(self) -> None:
        """Search finds by recipient, queue id, mailing id and message id."""
        queue_id = self.f.data["result"].queue_id
        for field, term in (("recipient", "OK@one.test"), ("queue_id", queue_id),
                            ("mailing_id", "SPRING-26"), ("message_id", "m-1")):
            code, page = self.get("/search?" + urlencode({"field": field, "q": term}))
            self.assertEqual(code, 200)
            self.assertIn("ok@one.test", page, field)
        code, page = self.get("/search?" + urlencode({"state": "deferred"}))
        self.assertIn("later@two.test", page)
        self.assertNotIn("ok@one.test", page)

    def test_escaping(self) -> None:
        """An address like <script>@x shows as text on every page, never as markup."""
        run(self.f.store.enqueue(NewMessage(
            sender='"><img src=x>@evil', recipients=(NewRecipient("<script>@x"),),
            body=b"x", mailing_id="M<b>"), T0 - 10))
        delivery = run(self.f.store.search_deliveries(recipient="<script>@x"))[0]
        run(self.f.store.suppress("<script>@x", "operator", T0))
        for path in ("/search?" + urlencode({"q": "<script>@x"}),
                     f"/delivery/{delivery.delivery_id}", f"/message/{delivery.queue_id}",
                     "/suppressions", "/search?" + urlencode({"q": "<script>"})):
            code, page = self.get(path)
            self.assertNotIn("<script>", page, path)
            self.assertNotIn("<img", page, path)
        code, page = self.get(f"/delivery/{delivery.delivery_id}")
        self.assertIn("&lt;script&gt;@x", page)

    def test_pagination(self) -> None:
        """Lists page with a keyset link when there are more rows than a page."""
        run(self.f.store.enqueue(NewMessage(
            sender="", recipients=tuple(NewRecipient(f"r{i}@many.test") for i in range(60)),
            body=b"x"), T0 - 5))
        code, page = self.get("/search?domain=many.test")
        match = re.search(r'href="(/search\?[^"]*before=\d+)"', page)
        self.assertIsNotNone(match)
        code, second = self.get(match.group(1).replace("&amp;", "&"))
        self.assertEqual(len(re.findall(r"many\.test</a>", page)), 50)
        self.assertEqual(len(re.findall(r"many\.test</a>", second)), 10)


class FormTests(SynchronousTestCase):
    """Suppression add/remove and retry now: POST only, CSRF-protected."""

    def setUp(self) -> None:
        self.f = WebFixture()
        self.token = self.f.site.access.csrf_token("local")

    def post(self, path: str, data: dict[str, str], **headers: str) -> tuple[int, str]:
        """POST a form; the status and the body."""
        response, text = body_of(self.f, self.f.treq.post(
            BASE + path, data=data, allow_redirects=False,
            headers={k.replace("_", "-"): [v]
                                             for k, v in headers.items()}))
        return response.code, text

    def test_csrf_token_required(self) -> None:
        """A form post without the CSRF token is refused and changes nothing."""
        code, page = self.post("/suppressions/add", {"address": "x@y.test"})
        self.assertEqual(code, 403)
        self.assertIn("CSRF", page)
        code, _ = self.post("/suppressions/add", {"address": "x@y.test", "csrf": "0" * 64})
        self.assertEqual(code, 403)
        self.assertIsNone(run(self.f.store.get_suppression("x@y.test")))

    def test_cross_origin_refused(self) -> None:
        """A post with a valid token but a foreign Origin or Referer is refused."""
        form = {"address": "x@y.test", "csrf": self.token}
        self.assertEqual(self.post("/suppressions/add", form, Origin="http://evil.test")[0], 403)
        self.assertEqual(self.post("/suppressions/add", form,
                                   Referer="http://evil.test/page")[0], 403)
        self.assertIsNone(run(self.f.store.get_suppression("x@y.test")))

    def test_add_and_remove(self) -> None:
        """Same-origin posts with the token add and remove a suppression."""
        form = {"address": "X@y.test", "csrf": self.token, "note": "asked"}
        code, _ = self.post("/suppressions/add", form, Origin="http://127.0.0.1")
        self.assertEqual(code, 303)
        entry = run(self.f.store.get_suppression("x@y.test"))
        self.assertEqual((entry.source, entry.note), ("operator", "asked"))
        code, _ = self.post("/suppressions/remove", {"address": "x@y.test", "csrf": self.token},
                            Referer="http://127.0.0.1/suppressions")
        self.assertEqual(code, 303)
        self.assertIsNone(run(self.f.store.get_suppression("x@y.test")))

    def test_get_does_not_change(self) -> None:
        """A GET to a form action is not allowed."""
        response, _ = body_of(self.f, self.f.treq.get(
            BASE + "/suppressions/add?address=x@y.test&csrf=" + self.token))
        self.assertEqual(response.code, 404)
        self.assertIsNone(run(self.f.store.get_suppression("x@y.test")))

    def test_retry_now(self) -> None:
        """Retry now makes a domain's deferred deliveries due at the clock's time."""
        response, page = body_of(self.f, self.f.treq.get(BASE + "/deferred"))
        self.assertIn("two.test", page)
        code, _ = self.post("/deferred/retry", {"domain": "two.test", "csrf": self.token})
        self.assertEqual(code, 303)
        later = run(self.f.store.get_delivery(self.f.data["ids"][2]))
        self.assertEqual(later.next_attempt_at, T0)

    def test_retry_now_wakes_the_scheduler(self) -> None:
        """Retry now from the report wakes the scheduler, as the console's retry always did."""
        later = self.f.data["ids"][2]
        code, _ = self.post("/deferred/retry", {"delivery_id": str(later), "csrf": self.token})
        self.assertEqual(code, 303)
        self.assertEqual(self.f.woken, 1)
        code, _ = self.post("/deferred/retry", {"domain": "nowhere.test", "csrf": self.token})
        self.assertEqual(code, 303)
        self.assertEqual(self.f.woken, 1)  # nothing became due: nothing to wake for

    def test_retry_bad_delivery_id(self) -> None:
        """A delivery id that is not a number is a 400 naming it, never a 500."""
        code, page = self.post("/deferred/retry", {"domain": "two.test", "delivery_id": "x",
                                                   "csrf": self.token})
        self.assertEqual(code, 400)
        self.assertIn("delivery_id", page)
        code, page = self.post("/deferred/retry", {"delivery_id": "x", "csrf": self.token})
        self.assertEqual(code, 400)
        self.assertIn("domain: give a domain", page)

    def test_malformed_addresses_refused_as_by_the_api(self) -> None:
        """The form refuses every malformed address the API refuses, with the same message,
        and stores none of them."""
        for value, _ in MALFORMED:
            code, page = self.post("/suppressions/add", {"address": value, "csrf": self.token})
            response, body = json_of(self.f, self.f.treq.post(
                BASE + "/api/v1/suppressions", json={"address": value}, headers=self.f.auth()))
            self.assertEqual((code, response.code), (400, 400), value)
            self.assertEqual(body["field"], "address")
            shown = re.search(r'<div class="msg">([^<]*)</div>', page)
            assert shown is not None
            self.assertEqual(html.unescape(shown.group(1)), body["error"], value)
        self.assertEqual([s.address for s in run(self.f.store.suppressions(after=None))],
                         ["gone@one.test"])

    def test_csrf_secret_is_per_process(self) -> None:
        """Tokens from another secret do not pass."""
        other = WebFixture(populated=False)
        self.assertEqual(other.site.access.csrf_token("local"), self.token)  # same test secret
        from twisted.internet.task import Clock

        from hurricane.credentials import FailureLimiter, SecretVerifier, inline_runner
        from hurricane.report.auth import AccessPolicy
        fresh = AccessPolicy(("tcp:1:interface=127.0.0.1",), {}, {},
                             verifier=SecretVerifier(inline_runner),
                             limiter=FailureLimiter(Clock(), 10, 60.0))
        self.assertNotEqual(fresh.csrf_token("local"), self.token)
        self.assertEqual(len(CSRF_SECRET), 32)


class AccessTests(SynchronousTestCase):
    """Pages need a login when the listener is not loopback."""

    def test_public_listener_needs_users(self) -> None:
        """Without [web.users] a non-loopback site refuses pages with 403."""
        f = WebFixture(make_config(listen=("tcp:8025",)), populated=False)
        response, page = body_of(f, f.treq.get(BASE + "/"))
        self.assertEqual(response.code, 403)
        self.assertIn("[web.users]", page)

    def test_dns_rebinding_refused(self) -> None:
        """Without a login, a request naming a non-loopback Host is refused (DNS rebinding)."""
        f = WebFixture(make_config(tokens=False), populated=False)
        response, _ = body_of(f, f.treq.get(BASE + "/"))
        self.assertEqual(response.code, 200)
        response, _ = body_of(f, f.treq.get("http://localhost:8025/"))
        self.assertEqual(response.code, 200)
        for url in ("http://evil.example/", "http://evil.example/api/v1/summary",
                    "http://127.0.0.1.evil.example/"):
            response, page = body_of(f, f.treq.get(url))
            self.assertEqual(response.code, 403, url)
            self.assertIn("loopback", page)

    def test_basic_login(self) -> None:
        """With [web.users], pages need HTTP basic and accept the right password."""
        f = WebFixture(make_config(listen=("tcp:8025",), users={"ops": "pw"}), populated=False)
        response, _ = body_of(f, f.treq.get(BASE + "/"))
        self.assertEqual(response.code, 401)
        self.assertIn("Basic", response.headers.getRawHeaders("www-authenticate")[0])
        response, _ = body_of(f, f.treq.get(BASE + "/", auth=("ops", "wrong")))
        self.assertEqual(response.code, 401)
        response, _ = body_of(f, f.treq.get(BASE + "/", auth=("ops", "pw")))
        self.assertEqual(response.code, 200)
        response, _ = body_of(f, f.treq.get(BASE + "/metrics"))
        self.assertEqual(response.code, 401)


class CsvTests(SynchronousTestCase):
    """CSV exports stream page by page as attachments."""

    def test_outcomes_csv_streams_pages(self) -> None:
        """outcomes.csv has every row of more than one store page, read page by page."""
        f = WebFixture(populated=False)
        for n in range(25):
            run(f.store.enqueue(NewMessage(
                sender="", recipients=tuple(NewRecipient(f"r{n}-{i}@x.test")
                                            for i in range(100)), body=b"x"), T0))
        calls = []
        original = f.store.outcomes

        async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(args)
            return await original(*args, **kwargs)

        f.store.outcomes = counting  # type: ignore[method-assign]
        response, text = body_of(f, f.treq.get(BASE + "/export/outcomes.csv"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-disposition"),
                         ['attachment; filename="outcomes.csv"'])
        lines = text.splitlines()
        self.assertTrue(lines[0].startswith("queue_id,delivery_id,recipient"))
        self.assertEqual(len(lines), 2501)
        self.assertEqual(len(calls), 3)  # 1000 + 1000 + 500

    def test_outcomes_csv_formula_safe(self) -> None:
        """Reply texts from the outside world never start a cell as a formula in outcomes.csv
        (the same hostile values as the CLI test), and booleans are true/false."""
        f = WebFixture()
        run(store_hostile(f.store))
        response, text = body_of(f, f.treq.get(BASE + "/export/outcomes.csv"))
        self.assertEqual(response.code, 200)
        records = check_csv_cells(self, text)
        self.assertEqual(len(records), 5 + len(HOSTILE_TEXTS))
        response, text = body_of(f, f.treq.get(BASE + "/export/deliveries.csv?state=failed"))
        check_csv_cells(self, text)

    def test_deliveries_and_suppressions_csv(self) -> None:
        """Search results and the suppression list export as CSV, formula-safe."""
        f = WebFixture()
        run(f.store.suppress("=cmd@x.test", "operator", T0))
        response, text = body_of(f, f.treq.get(BASE + "/export/deliveries.csv?state=delivered"))
        self.assertEqual(len(text.splitlines()), 2)
        response, text = body_of(f, f.treq.get(BASE + "/export/suppressions.csv"))
        self.assertIn("'=cmd@x.test", text)
        self.assertIn("gone@one.test", text)
