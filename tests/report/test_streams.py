"""The report and the API by stream, and their suppression forms with a scope."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import config_from_dict
from hurricane.model import NewMessage, NewRecipient
from hurricane.passwords import hash_password
from hurricane.report.web import build_web_site
from hurricane.store.memory import MemoryStore
from tests.report.helpers import CSRF_SECRET, run

T0 = 1_700_000_000.0
TOKEN = "s3cret-token"


class StreamReportTests(SynchronousTestCase):
    """Search and its CSV filter by stream; the API's suppressions take a scope."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        run(self.store.open())
        for stream, rcpt in (("news", "a@x.test"), (None, "b@x.test"), ("news", "c@y.test")):
            run(self.store.enqueue(NewMessage("app@shop.test", (NewRecipient(rcpt),),
                                              b"Subject: x\r\n\r\n", stream=stream), T0))
        config = config_from_dict({
            "web": {"tokens": {"app": hash_password(TOKEN, iterations=1000)}},
            "streams": [{"name": "news", "kind": "bulk"}]})
        clock = Clock()
        clock.advance(T0 + 60)
        site = build_web_site(config, self.store, clock, on_enqueued=lambda: None,
                              csrf_secret=CSRF_SECRET)
        self.treq = StubTreq(site.resource)

    def get(self, url: str, **headers: str) -> tuple[int, str]:
        response = self.successResultOf(self.treq.get(
            url, headers={k.encode(): [v.encode()] for k, v in headers.items()}))
        return response.code, self.successResultOf(response.text())

    def api(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = self.successResultOf(self.treq.request(
            method, url, data=data, headers={b"authorization": [f"Bearer {TOKEN}".encode()],
                                             b"content-type": [b"application/json"]}))
        return response.code, json.loads(self.successResultOf(response.text()))

    def test_search_and_export_by_stream(self) -> None:
        """?stream=news keeps the newsletter's recipients; the export link carries it."""
        code, page = self.get("http://127.0.0.1:8025/search?stream=news")
        self.assertEqual(code, 200, page)
        self.assertIn("a@x.test", page)
        self.assertIn("c@y.test", page)
        self.assertNotIn("b@x.test", page)
        self.assertIn("/export/deliveries.csv?stream=news", page)
        code, csv = self.get("http://127.0.0.1:8025/export/deliveries.csv?stream=transactional")
        self.assertEqual(code, 200)
        lines = csv.strip().splitlines()
        self.assertTrue(lines[0].endswith(",stream"))
        self.assertEqual([line.split(",")[2] for line in lines[1:]], ["b@x.test"])
        code, csv = self.get("http://127.0.0.1:8025/export/outcomes.csv?stream=news")
        self.assertEqual(sorted(line.split(",")[2] for line in csv.strip().splitlines()[1:]),
                         ["a@x.test", "c@y.test"])

    def test_api_scoped_suppressions(self) -> None:
        """POST with a scope, list by scope, read every entry, DELETE with the scope."""
        code, body = self.api("POST", "http://127.0.0.1:8025/api/v1/suppressions",
                              {"address": "A@x.test", "scope": "stream:news"})
        self.assertEqual((code, body["suppression"]["scope"]), (201, "stream:news"))
        code, body = self.api("POST", "http://127.0.0.1:8025/api/v1/suppressions",
                              {"address": "a@x.test", "scope": "stream:promo"})
        self.assertEqual(code, 400)
        self.assertIn("no stream 'promo' is configured", body["error"])
        code, body = self.api("GET",
                              "http://127.0.0.1:8025/api/v1/suppressions?scope=stream:news")
        self.assertEqual([e["address"] for e in body["suppressions"]], ["a@x.test"])
        code, body = self.api("GET", "http://127.0.0.1:8025/api/v1/suppressions/a@x.test")
        self.assertEqual((code, [e["scope"] for e in body["entries"]]), (200, ["stream:news"]))
        code, _ = self.api("DELETE", "http://127.0.0.1:8025/api/v1/suppressions/a@x.test")
        self.assertEqual(code, 404)  # no global entry
        code, body = self.api(
            "DELETE", "http://127.0.0.1:8025/api/v1/suppressions/a@x.test?scope=stream:news")
        self.assertEqual((code, body["scope"]), (200, "stream:news"))
        # The newsletter to a@x.test is no longer stopped.
        result = run(self.store.enqueue(NewMessage("app@shop.test", (NewRecipient("a@x.test"),),
                                                   b"Subject: x\r\n\r\n", stream="news"), T0))
        self.assertEqual(result.recipients[0].state.value, "queued")


class StreamInjectionTests(SynchronousTestCase):
    """POST /api/v1/messages with ``stream``."""

    def setUp(self) -> None:
        from tests.report.helpers import WebFixture, make_config

        config = make_config()
        config = config_from_dict({
            "web": {"listen": list(config.web.listen), "tokens": dict(config.web.tokens)},
            "streams": [{"name": "news", "kind": "bulk"}]})
        self.f = WebFixture(config, populated=False)

    def inject(self, payload: Any) -> tuple[int, Any]:
        from tests.report.helpers import json_of

        response, body = json_of(self.f, self.f.treq.post(
            "http://127.0.0.1:8025/api/v1/messages", json=payload, headers=self.f.auth()))
        return response.code, body

    def test_stream_field(self) -> None:
        """The field picks the stream; the raw header too; the field wins; unknown is 400."""
        base = {"recipients": ["a@x.test"], "sender": "app@s.test",
                "raw": "From: app@s.test\nSubject: hi\n\nhello\n"}
        code, body = self.inject({**base, "stream": "news"})
        self.assertEqual((code, body["stream"]), (201, "news"))
        code, body = self.inject(base)
        self.assertEqual((code, body["stream"]), (201, "transactional"))
        code, body = self.inject({**base, "raw": "X-Hurricane-Stream: news\n" + base["raw"]})
        self.assertEqual((code, body["stream"]), (201, "news"))
        code, body = self.inject({**base, "stream": "promo"})
        self.assertEqual((code, body["field"]), (400, "stream"))
        self.assertIn("unknown stream 'promo'", body["error"])
        code, body = self.inject({**base, "raw": "X-Hurricane-Stream: promo\n" + base["raw"]})
        self.assertEqual(code, 400)
        got = run(self.f.store.search_deliveries(stream="news", limit=10))
        self.assertEqual(len(got), 2)
        stored = run(self.f.store.load_body(got[0].message_pk))
        self.assertNotIn(b"X-Hurricane-Stream", stored)
