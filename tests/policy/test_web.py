"""The report and the API over a real socket on SQLite (issue 19): the providers
page, the held mailing's card and its buttons (CSRF), release and cancel through
the API, and the /metrics gauges."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from hurricane.policy.providers import PolicyAction, ProviderState
from hurricane.report.web import build_web_site
from hurricane.store.policy import PolicyStore
from hurricane.store.sqlite import SqliteStore
from tests.report.helpers import CSRF_SECRET, TOKEN, make_config
from tests.store.contract import T0, message


class PolicyWebTests(TestCase):
    """Pages, forms, API and metrics of a held mailing and a throttled provider."""

    async def setUp(self) -> None:
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        self.store = SqliteStore(os.path.join(tmp, "h.db"), reactor)
        await self.store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.store.close()))
        self.woken = 0
        self.site = build_web_site(make_config(), self.store, reactor,
                                   on_enqueued=self.wake, csrf_secret=CSRF_SECRET)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.site)
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.policy = PolicyStore(self.store)
        for mailing in ("Spring", "Summer"):
            await self.store.enqueue(message(*(f"u{i}@x.test" for i in range(5)),
                                             mailing_id=mailing), T0)
            held = await self.policy.hold_mailing(mailing, T0 + 1, "n", [], PolicyAction(
                T0 + 1, "mailing", mailing, "hold", "hard_bounce_rate 0.3000 > 0.05",
                "sending", "held", {"decided": 60, "hard": 18}))
            self.assertEqual(held, 5)
        await self.policy.save_provider_states([ProviderState("google", 3000.0, 6000.0,
                                                              0.0, 0.0, "speeding", T0)])
        await self.policy.record_actions([PolicyAction(
            T0, "provider", "google", "throttle", "speeding", "rate 6000/min",
            "rate 3000/min", {"refusals": 1})], "node-1")

    def wake(self) -> None:
        self.woken += 1

    async def request(self, method: bytes, path: str, form: dict[str, str] | None = None,
                      token: bool = False) -> tuple[int, str, Headers]:
        headers = Headers({b"authorization": [b"Bearer " + TOKEN.encode()]} if token else {})
        body = None
        if form is not None:
            headers.addRawHeader(b"content-type", b"application/x-www-form-urlencoded")
            body = FileBodyProducer(io.BytesIO(urlencode(form).encode()))
        response = await Agent(reactor).request(method, (self.base + path).encode(), headers,
                                                body)
        return response.code, (await readBody(response)).decode(), response.headers

    async def test_held_mailing_card_and_buttons(self) -> None:
        code, page, _ = await self.request(b"GET", "/mailing/Spring")
        self.assertEqual(code, 200)
        self.assertIn("by its circuit breaker: hard_bounce_rate 0.3000 &gt; 0.05", page)
        self.assertIn("decided 60, hard 18", page)
        self.assertIn('action="/hold"', page)
        self.assertIn("Release (send them)", page)
        # a forged form is refused, the rows stay held
        code, _, _ = await self.request(b"POST", "/hold", {
            "mailing_id": "Spring", "action": "release", "csrf": "0" * 64})
        self.assertEqual(code, 403)
        self.assertEqual((await self.policy.mailing_counts("Spring")).held, 5)
        csrf = self.site.access.csrf_token("local")
        code, _, headers = await self.request(b"POST", "/hold", {
            "mailing_id": "Spring", "action": "release", "csrf": csrf})
        self.assertEqual(code, 303)
        location = (headers.getRawHeaders(b"location") or [b""])[0].decode()
        self.assertTrue(location.startswith("/mailing/Spring?done=Released+5"), location)
        self.assertEqual((await self.policy.mailing_counts("Spring")).held, 0)
        self.assertEqual(self.woken, 1)
        code, page, _ = await self.request(b"GET", location)
        self.assertIn("Released 5 held recipients.", page)
        self.assertIn("Released at", page)
        self.assertNotIn("Release (send them)", page)

    async def test_api_release_cancel_and_providers(self) -> None:
        code, body, _ = await self.request(b"POST", "/api/v1/mailings/Summer/cancel",
                                           token=True)
        self.assertEqual((code, json.loads(body)["count"]), (200, 5), body)
        code, body, _ = await self.request(b"POST", "/api/v1/mailings/nope/release",
                                           token=True)
        self.assertEqual(code, 400)
        self.assertIn("was never held", body)
        code, body, _ = await self.request(b"GET", "/api/v1/mailings/Summer/hold", token=True)
        self.assertEqual(json.loads(body)["breaker"]["state"], "cancelled")
        code, page, _ = await self.request(b"GET", "/providers")
        self.assertEqual(code, 200)
        self.assertIn('href="/providers"', page)  # in the navigation
        self.assertIn("rate 6000/min", page)
        self.assertIn("node-1", page)
        self.assertIn("cancel", page)  # the operator's action is listed too
        await self.site.metrics.collect()
        code, text, _ = await self.request(b"GET", "/metrics", token=True)
        self.assertIn('hurricane_provider_rate_per_minute{provider="google"} 3000.0', text)
        self.assertIn("hurricane_mailings_held 1.0", text)
