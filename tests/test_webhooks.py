"""Tests of hurricane.webhooks: signing, batching, filtering, retries and restarts."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hurricane.accounting import CursorFile
from hurricane.model import BounceEvent, EventKind, ReturnedMessage, Source
from hurricane.opsconfig import WebhookConfig
from hurricane.store.memory import MemoryStore
from hurricane.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookService,
    build_webhooks_service,
    verify_signature,
    webhook_payload,
    webhook_type,
)
from tests.helpers import T0, drain, populate, run, temp_path

SECRET = b"s3cret-for-tests"
FINAL_IDS = [4, 7, 9, 10, 11, 13, 14, 15]


class FakeResponse:
    """A treq response with a code, headers and a body."""

    def __init__(self, code: int, body: bytes = b"") -> None:
        self.code = code
        self.headers = Headers()
        self._body = body

    def content(self) -> Deferred[bytes]:
        """The body."""
        return succeed(self._body)


class FakeHTTP:
    """A treq-like client answering from a script of outcomes (default 200)."""

    def __init__(self, clock: Clock, *outcomes: Any) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.requests: list[tuple[float, str, bytes, dict[str, str]]] = []
        self.pending: list[Deferred[Any]] = []
        self.allow_redirects: list[bool] = []

    def post(self, url: str, data: bytes, headers: dict[str, str], *,
             allow_redirects: bool = True) -> Deferred[Any]:
        """Record the request and answer as scripted ("hang" never answers)."""
        self.requests.append((self.clock.seconds(), url, data, headers))
        self.allow_redirects.append(allow_redirects)
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if outcome == "hang":
            d: Deferred[Any] = Deferred()
            self.pending.append(d)
            return d
        if isinstance(outcome, Exception):
            return fail(outcome)
        return succeed(FakeResponse(outcome, b"nope" if outcome >= 300 else b"ok"))

    def ids(self, accepted_only: bool = False) -> list[list[int]]:
        """The event ids of each request body."""
        return [[item["event_id"] for item in json.loads(body)]
                for _, _, body, _ in self.requests]


class WebhookTestsMixin:
    """A populated MemoryStore, a clock and a data directory."""

    def setUp(self) -> None:
        case: Any = self
        self.store = MemoryStore()
        run(case, populate(self.store))
        self.clock = Clock()
        self.clock.advance(T0 + 10)
        self.dir = temp_path(case)
        os.makedirs(self.dir)
        self.cursor_path = os.path.join(self.dir, "cursors", "webhook-t.json")

    def service(self, http: Any, **options: Any) -> WebhookService:
        """A started endpoint service."""
        options.setdefault("name", "t")
        config = WebhookConfig(url="https://hooks.example/in", secret="x", **options)
        svc = WebhookService(config, SECRET, self.store, self.clock, http,
                             CursorFile(self.cursor_path))
        svc.startService()
        return svc

    def stop(self, svc: WebhookService) -> None:
        """Stop ``svc``; nothing may be left on the clock."""
        case: Any = self
        result = svc.stopService()
        if result is not None:
            case.successResultOf(result)
        case.assertEqual(self.clock.getDelayedCalls(), [])


class UnappliedEventTests(WebhookTestsMixin, SynchronousTestCase):
    """Reports that moved nothing (matched by a weak key) are never final."""

    def forge(self, correlation: str | None) -> list[int]:
        """Record a bounce and a complaint for ``ok`` and ``info`` (both delivered before)."""
        async def go() -> list[int]:
            bounce_id = await self.store.store_bounce(ReturnedMessage(
                b"forged", "", "postmaster@bounces", T0 + 6))
            ids = await self.store.events_after(0, 1000)
            by_name = {r.recipient.split("@")[0]: r.event.delivery_id for r in ids}
            return await self.store.record_bounce(bounce_id, [
                BounceEvent(delivery_id=by_name["info"], kind=EventKind.bounce, at=T0 + 6,
                            bounce_id=bounce_id,
                            reason="userunknown", hard=True, suppress=True,
                            correlation=correlation),
                BounceEvent(delivery_id=by_name["info"], kind=EventKind.complaint, at=T0 + 6,
                            bounce_id=bounce_id,
                            reason="feedback", suppress=True, source=Source.arf,
                            correlation=correlation),
            ], "bounce", correlation, "{}")
        return run(self, go())

    def test_weak_reports_not_final(self) -> None:
        """A forged bounce and complaint are typed but not final, and final mode skips them."""
        event_ids = self.forge("recipient")
        records = [r for r in run(self, self.store.events_after(0, 1000))
                   if r.event.event_id in event_ids]
        self.assertEqual([webhook_type(r) for r in records],
                         [("bounced", False), ("complained", False)])
        payloads = [webhook_payload(r) for r in records]
        self.assertEqual({(p["correlation"], p["note"]) for p in payloads},
                         {("recipient", "recorded, not applied: unverified correlation")})
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="final")
        drain(self.clock)
        sent = [i for body in http.ids() for i in body]
        self.assertEqual(sent, FINAL_IDS)
        self.stop(svc)

    def test_verified_complaint_final(self) -> None:
        """The same complaint through a verified key moves the state and is final."""
        event_ids = self.forge("header-token")
        records = [r for r in run(self, self.store.events_after(0, 1000))
                   if r.event.event_id in event_ids]
        self.assertEqual([webhook_type(r) for r in records],
                         [("bounced", True), ("complained", True)])
        self.assertEqual([webhook_payload(r)["note"] for r in records], [None, None])


class WebhookSigningTests(WebhookTestsMixin, SynchronousTestCase):
    """The body is signed with HMAC-SHA256 over the timestamp and the body."""

    def test_signature(self) -> None:
        """The signature header is HMAC-SHA256(secret, timestamp + "." + body)."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="every", batch=100)
        drain(self.clock)
        [(_, url, body, headers)] = http.requests
        self.assertEqual(url, "https://hooks.example/in")
        self.assertEqual(headers["Content-Type"], "application/json")
        timestamp = headers[TIMESTAMP_HEADER]
        self.assertEqual(timestamp, str(int(T0 + 10)))
        expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256)
        self.assertEqual(headers[SIGNATURE_HEADER], "sha256=" + expected.hexdigest())
        self.assertTrue(verify_signature(SECRET, body, timestamp, headers[SIGNATURE_HEADER],
                                         now=T0 + 20))
        self.stop(svc)

    def test_verify_refuses(self) -> None:
        """verify_signature refuses another body, another key, and an old timestamp."""
        body, ts = b'[{"event_id":1}]', str(int(T0))
        good = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
        self.assertTrue(verify_signature(SECRET, body, ts, good, now=T0))
        self.assertFalse(verify_signature(SECRET, body + b" ", ts, good, now=T0))
        self.assertFalse(verify_signature(b"other", body, ts, good, now=T0))
        self.assertFalse(verify_signature(SECRET, body, ts, good, now=T0 + 3600))
        self.assertFalse(verify_signature(SECRET, body, str(int(T0) + 1), good, now=T0))
        self.assertFalse(verify_signature(SECRET, body, "soon", good, now=T0))


class WebhookDeliveryTests(WebhookTestsMixin, SynchronousTestCase):
    """Batches, filters, retries, the cursor and restarts."""

    def test_payload(self) -> None:
        """Each element carries the type, the outcome flag and the identifiers."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="final")
        drain(self.clock)
        items = json.loads(http.requests[0][2])
        bounced = next(i for i in items if i["type"] == "bounced")
        self.assertEqual(bounced["final"], True)
        self.assertEqual(bounced["recipient"], "ok@example.org")
        self.assertEqual(bounced["reason"], "mailboxfull")
        self.assertEqual(bounced["status"], "5.2.2")
        self.assertEqual(bounced["mailing_id"], "Spring-26")
        self.assertEqual(bounced["message_id"], "M-1")
        self.assertEqual(bounced["bounce_id"], 1)
        self.assertEqual(bounced["time"], "2026-01-01T00:00:04.000Z")
        self.stop(svc)

    def test_batches(self) -> None:
        """Events go as JSON arrays of at most ``batch`` elements, in order."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="every", batch=5)
        drain(self.clock)
        self.assertEqual(http.ids(), [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10],
                                      [11, 12, 13, 14, 15], [16, 17]])
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.assertEqual(svc.stats()["sent"], 17)
        self.stop(svc)

    def test_final_only(self) -> None:
        """mode "final" sends only outcomes: no queued, deferred or informational events."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="final")
        drain(self.clock)
        self.assertEqual(http.ids(), [FINAL_IDS])
        types = [i["type"] for i in json.loads(http.requests[0][2])]
        self.assertEqual(types, ["suppressed", "delivered", "failed", "delivered", "delivered",
                                 "expired", "bounced", "complained"])
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)

    def test_every_attempt(self) -> None:
        """mode "every" also sends deferred attempts and informational events."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, mode="every")
        drain(self.clock)
        types = [i["type"] for i in json.loads(http.requests[0][2])]
        self.assertEqual(len(types), 17)
        self.assertIn("deferred", types)
        self.assertIn("autoreply", types)
        self.stop(svc)

    def test_events_filter(self) -> None:
        """``events`` narrows the types; a batch with nothing wanted moves the cursor."""
        http = FakeHTTP(self.clock)
        svc = self.service(http, events=("bounced", "complained"), batch=5)
        drain(self.clock)
        self.assertEqual(http.ids(), [[14, 15]])
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)

    def test_retry_with_backoff(self) -> None:
        """A 500 retries the same batch after 1, 2, 4 s...; the cursor waits for the 2xx."""
        http = FakeHTTP(self.clock, 500, 500, 503, 200)
        svc = self.service(http, mode="every", batch=10, first_backoff=1.0)
        drain(self.clock)
        self.assertEqual(len(http.requests), 1)
        self.assertEqual(CursorFile(self.cursor_path).load(), 0)
        for _ in range(8):
            drain(self.clock, 1.0)
        times = [t - (T0 + 10) for t, _, _, _ in http.requests]
        self.assertEqual(times[:4], [0.0, 1.0, 3.0, 7.0])
        self.assertEqual(http.ids()[:4], [list(range(1, 11))] * 4)
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.assertEqual(http.ids()[4], list(range(11, 18)))
        self.assertEqual(svc.failures, 0)
        self.stop(svc)

    def test_backoff_capped(self) -> None:
        """The backoff doubles up to max_backoff and stays there."""
        http = FakeHTTP(self.clock, *([500] * 8))
        svc = self.service(http, first_backoff=1.0, max_backoff=10.0)
        drain(self.clock)
        for _ in range(50):
            drain(self.clock, 1.0)
        times = [t - (T0 + 10) for t, _, _, _ in http.requests[:8]]
        self.assertEqual(times, [0.0, 1.0, 3.0, 7.0, 15.0, 25.0, 35.0, 45.0])
        self.stop(svc)

    def test_connection_error_and_timeout(self) -> None:
        """A refused connection and a receiver that never answers are retried."""
        from twisted.internet.error import ConnectionRefusedError

        http = FakeHTTP(self.clock, ConnectionRefusedError(), "hang", 200)
        svc = self.service(http, timeout=5.0, first_backoff=1.0)
        drain(self.clock)
        drain(self.clock, 1.0)  # retry 1: hangs
        self.assertEqual(len(http.requests), 2)
        drain(self.clock, 5.0)  # timeout
        self.assertEqual(svc.failures, 2)
        self.assertIn("TimeoutError", svc.stats()["last_error"] or "")
        drain(self.clock, 2.0)
        self.assertEqual(len(http.requests), 3)
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)

    def test_restart_resumes(self) -> None:
        """Stopped during retries, a new service resends the unacknowledged events only."""
        http = FakeHTTP(self.clock, 200, 500, "hang")
        svc = self.service(http, mode="every", batch=10, first_backoff=1.0)
        drain(self.clock)
        drain(self.clock, 1.0)
        self.assertEqual(len(http.requests), 3)  # 200, 500, then hanging
        self.stop(svc)  # cancels the hanging request
        self.assertEqual(CursorFile(self.cursor_path).load(), 10)
        http2 = FakeHTTP(self.clock)
        svc2 = self.service(http2, mode="every", batch=10)
        drain(self.clock)
        self.assertEqual(http2.ids(), [list(range(11, 18))])
        self.stop(svc2)

    def test_stub_treq(self) -> None:
        """The service speaks treq's API (StubTreq over a twisted.web resource)."""
        received: list[tuple[bytes, str | None, str | None]] = []

        class Hook(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> bytes:
                assert request.content is not None
                received.append((request.content.read(),
                                 request.getHeader(TIMESTAMP_HEADER),
                                 request.getHeader(SIGNATURE_HEADER)))
                request.setResponseCode(204 if len(received) > 1 else 500)
                return b""

        stub = StubTreq(Hook())
        svc = self.service(stub, first_backoff=1.0)
        for _ in range(5):
            drain(self.clock)
            stub.flush()
            drain(self.clock, 1.0)
            stub.flush()
        self.assertEqual(len(received), 2)
        body, ts, sig = received[1]
        assert ts is not None and sig is not None
        self.assertTrue(verify_signature(SECRET, body, ts, sig,
                                         now=self.clock.seconds()))
        self.assertEqual([i["event_id"] for i in json.loads(body)], FINAL_IDS)
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)


class _Redirecting(Resource):
    """``/in`` answers ``code`` with a Location; anything else records the hit and says 200."""

    isLeaf = True

    def __init__(self, code: int, location: bytes) -> None:
        super().__init__()
        self.code = code
        self.location = location
        #: Requests that reached anything but /in: (method, path, signature header).
        self.elsewhere: list[tuple[bytes, bytes, str | None]] = []
        self.posts = 0

    def render(self, request: Request) -> bytes:
        if request.path == b"/in":
            self.posts += 1
            request.setResponseCode(self.code)
            request.setHeader(b"location", self.location)
            return b"moved"
        self.elsewhere.append((request.method, request.path,
                               request.getHeader(SIGNATURE_HEADER)))
        return b"ok"


class WebhookRedirectTests(WebhookTestsMixin, SynchronousTestCase):
    """A 3xx is a failure to retry, never a redirect to follow."""

    def test_never_follows(self) -> None:
        """The client is asked not to follow redirects, and a 3xx is retried with backoff."""
        http = FakeHTTP(self.clock, 303, 200)
        svc = self.service(http, first_backoff=1.0)
        drain(self.clock)
        self.assertEqual(http.allow_redirects, [False])
        self.assertEqual(CursorFile(self.cursor_path).load(), 0)
        self.assertEqual(svc.failures, 1)
        drain(self.clock, 1.0)
        self.assertEqual(http.allow_redirects, [False, False])
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)

    def test_stub_treq_303_to_internal_url(self) -> None:
        """With treq, a 303 (and 301, 302, 307, 308) to an internal URL is not followed:
        nothing reaches it, the cursor stays, and the log names the Location."""
        for code in (303, 301, 302, 307, 308):
            internal = b"http://127.0.0.1:8025/internal/admin"
            hook = _Redirecting(code, internal)
            stub = StubTreq(hook)
            with capturedLogs() as events:
                svc = self.service(stub, first_backoff=1.0)
                for _ in range(3):
                    drain(self.clock)
                    stub.flush()
                    drain(self.clock, 2.0)
                    stub.flush()
                self.stop(svc)
            self.assertEqual(hook.elsewhere, [], code)
            self.assertGreaterEqual(hook.posts, 2, code)  # retried like a 500
            self.assertEqual(CursorFile(self.cursor_path).load(), 0, code)
            self.assertIn(internal.decode(), svc.stats()["last_error"] or "", code)
            warnings = [e for e in events if "failed" in e.get("log_format", "")]
            self.assertTrue(warnings, code)
            self.assertIn(f"HTTP {code}", warnings[0]["error"])
            self.assertIn(internal.decode(), warnings[0]["error"])


class WebhookBuildTests(WebhookTestsMixin, SynchronousTestCase):
    """Configuration checks and the builder."""

    def test_problems(self) -> None:
        """WebhookConfig reports bad values by key."""
        self.assertEqual(WebhookConfig(url="https://x/", secret="k").problems(), [])
        keys = [k for k, _ in WebhookConfig(url="ftp://x", events=("deferred", "nope"),
                                            mode="sometimes", batch=0).problems()]
        self.assertEqual(keys, ["url", "secret_file", "events", "mode", "batch"])
        keys = [k for k, _ in WebhookConfig(url="http://x", secret="k",
                                            events=("deferred",)).problems()]
        self.assertEqual(keys, ["events"])

    def test_build(self) -> None:
        """One endpoint service per entry, secrets read from files, cursors in data_dir."""
        secret_file = os.path.join(self.dir, "hook.secret")
        with open(secret_file, "wb") as fp:
            fp.write(b"from-file\n")
        http = FakeHTTP(self.clock)
        parent = build_webhooks_service(
            [WebhookConfig(url="https://a.example/", secret_file=secret_file, name="a"),
             WebhookConfig(url="https://b.example/", secret="inline")],
            self.store, self.clock, self.dir, http=http)
        assert parent is not None
        a, b = parent.endpoints()
        self.assertEqual(a.secret, b"from-file")
        self.assertEqual(b.secret, b"inline")
        self.assertTrue(b.cursor.path.startswith(os.path.join(self.dir, "cursors", "webhook-url-")))
        parent.startService()
        drain(self.clock)
        self.assertEqual(len(http.requests), 2)
        self.assertEqual(set(parent.stats()), {a.name, b.name})
        self.successResultOf(parent.stopService())
        self.assertIsNone(build_webhooks_service([], self.store, self.clock, self.dir))
        self.assertRaises(ValueError, build_webhooks_service,
                          [WebhookConfig(url="https://a/", secret="k", name="x")] * 2,
                          self.store, self.clock, self.dir, http=http)


class WebhookLoopbackTests(TestCase):
    """A real HTTP receiver on 127.0.0.1: treq, the pool, a 500 and a retry."""

    timeout = 30

    @defer.inlineCallbacks
    def test_loopback(self) -> Any:
        """Events reach a twisted.web receiver over TCP, signed, after one 500."""
        from twisted.internet import reactor

        store = MemoryStore()
        yield Deferred.fromCoroutine(populate(store))
        received: list[bytes] = []

        class Hook(Resource):
            isLeaf = True

            def render_POST(self, request: Request) -> bytes:
                assert request.content is not None
                body = request.content.read()
                ts = (request.getHeader(TIMESTAMP_HEADER) or "")
                sig = (request.getHeader(SIGNATURE_HEADER) or "")
                if not verify_signature(SECRET, body, ts, sig, now=reactor.seconds()):
                    request.setResponseCode(401)
                    return b"bad signature"
                received.append(body)
                if len(received) == 1:
                    request.setResponseCode(500)
                    return b"try again"
                return b"ok"

        port = reactor.listenTCP(0, Site(Hook()),  # type: ignore[arg-type]
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = temp_path(self)
        os.makedirs(directory)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"  # type: ignore[attr-defined]
        parent = build_webhooks_service(
            [WebhookConfig(url=url, secret=SECRET.decode(), name="loop", first_backoff=0.05,
                           poll_interval=0.05)],
            store, reactor, directory)
        assert parent is not None
        parent.startService()
        [endpoint] = parent.endpoints()
        while endpoint.position < 17:  # the cursor moves once the 200 is read
            yield task.deferLater(reactor, 0.02, lambda: None)
        yield parent.stopService()
        self.assertEqual(len(received), 2)
        self.assertEqual(received[0], received[1])
        self.assertEqual([i["event_id"] for i in json.loads(received[1])], FINAL_IDS)
        self.assertEqual(
            CursorFile(os.path.join(directory, "cursors", "webhook-loop.json")).load(), 17)

    @defer.inlineCallbacks
    def test_loopback_redirect_not_followed(self) -> Any:
        """A real receiver answering 303 to an internal path: never followed, retried,
        the cursor stays; once it answers 200 the events are delivered there."""
        from twisted.internet import reactor

        store = MemoryStore()
        yield Deferred.fromCoroutine(populate(store))
        hook = _Redirecting(303, b"")
        port = reactor.listenTCP(0, Site(hook), interface="127.0.0.1")  # type: ignore[arg-type]
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"  # type: ignore[attr-defined]
        hook.location = f"{base}/internal/admin".encode()
        directory = temp_path(self)
        os.makedirs(directory)
        parent = build_webhooks_service(
            [WebhookConfig(url=f"{base}/in", secret=SECRET.decode(), name="loop",
                           first_backoff=0.05, max_backoff=0.05, poll_interval=0.05)],
            store, reactor, directory)
        assert parent is not None
        parent.startService()
        [endpoint] = parent.endpoints()
        for _ in range(500):  # at most 10 s
            if endpoint.failures >= 3:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertGreaterEqual(endpoint.failures, 3)
        self.assertEqual(hook.elsewhere, [])
        self.assertEqual(endpoint.position, 0)
        self.assertIn("/internal/admin", endpoint.stats()["last_error"] or "")
        hook.code = 200  # the receiver is fixed: the same batch goes through
        for _ in range(500):
            if endpoint.position >= 17:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        yield parent.stopService()
        self.assertEqual(endpoint.position, 17)
        self.assertEqual(hook.elsewhere, [])
