"""The JSON API: tokens, injection, reads and suppression CRUD (MemoryStore, StubTreq)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import NewMessage, NewRecipient

from .helpers import T0, WebFixture, json_of, make_config, run

API = "http://127.0.0.1/api/v1"


class ApiAuthTests(SynchronousTestCase):
    """Bearer tokens, their cache, and the read-only mode without tokens."""

    def test_401_without_token(self) -> None:
        """Requests without a valid token get 401 with a JSON error."""
        f = WebFixture()
        for headers in ({}, f.auth("wrong"), {"Authorization": ["Basic eDp5"]}):
            response, body = json_of(f, f.treq.get(API + "/summary", headers=headers))
            self.assertEqual(response.code, 401)
            self.assertIn("token", body["error"])

    def test_token_cached(self) -> None:
        """A good pbkdf2 token is verified with pbkdf2 once, then from the verifier's cache."""
        f = WebFixture()
        for _ in range(3):
            response, _ = json_of(f, f.treq.get(API + "/summary", headers=f.auth()))
            self.assertEqual(response.code, 200)
        self.assertEqual(f.site.access.verifier.verifications, 1)

    def test_no_tokens_read_only(self) -> None:
        """Without tokens the API reads from loopback and refuses injection with 403."""
        f = WebFixture(make_config(tokens=False))
        response, _ = json_of(f, f.treq.get(API + "/summary"))
        self.assertEqual(response.code, 200)
        response, body = json_of(f, f.treq.post(API + "/messages", json={}))
        self.assertEqual(response.code, 403)
        self.assertIn("[web.tokens]", body["error"])

    def test_no_tokens_public_listener(self) -> None:
        """Without tokens on a non-loopback listener the API answers 401."""
        f = WebFixture(make_config(tokens=False, listen=("tcp:8025",)))
        response, _ = json_of(f, f.treq.get(API + "/summary"))
        self.assertEqual(response.code, 401)


class InjectionTests(SynchronousTestCase):
    """POST /api/v1/messages."""

    def setUp(self) -> None:
        self.f = WebFixture()

    def inject(self, payload: Any) -> tuple[Any, Any]:
        """POST a JSON payload with the token."""
        return json_of(self.f, self.f.treq.post(API + "/messages", json=payload,
                                                headers=self.f.auth()))

    def test_inject_raw(self) -> None:
        """A raw message is queued; the answer carries the queue id and the row exists."""
        response, body = self.inject({
            "recipients": ["a@x.test", "A@x.test", "b@y.test"], "sender": "app@s.test",
            "raw": "From: app@s.test\nSubject: hi\n\nhello\n", "mailing_id": "Spring-26",
            "message_id": "Ab-1", "metadata": {"user": 7}})
        self.assertEqual(response.code, 201)
        queue_id = body["queue_id"]
        self.assertEqual([r["state"] for r in body["recipients"]], ["queued", "queued"])
        message = run(self.f.store.get_message(queue_id))
        self.assertEqual((message.mailing_id, message.message_id, message.source,
                          message.metadata, message.sender),
                         ("Spring-26", "Ab-1", "api", {"user": 7}, "app@s.test"))
        stored = run(self.f.store.load_body(message.message_pk))
        self.assertIn(b"Message-ID: <", stored)
        self.assertIn(b"\r\nhello\r\n", stored)
        self.assertNotIn(b"X-Hurricane", stored)
        self.assertEqual(self.f.woken, 1)
        response, got = json_of(self.f, self.f.treq.get(API + f"/messages/{queue_id}",
                                                        headers=self.f.auth()))
        self.assertEqual([r["recipient"] for r in got["recipients"]], ["a@x.test", "b@y.test"])

    def test_inject_parts(self) -> None:
        """A message built from subject, text, html and headers is queued."""
        response, body = self.inject({"recipients": "a@x.test", "from": "App <app@s.test>",
                                      "subject": "Caf\u00e9", "text": "hi", "html": "<p>hi</p>",
                                      "headers": {"X-Campaign": "7"}})
        self.assertEqual(response.code, 201)
        message = run(self.f.store.get_message(body["queue_id"]))
        self.assertEqual(message.sender, "app@s.test")
        raw = run(self.f.store.load_body(message.message_pk))
        self.assertIn(b"X-Campaign: 7", raw)
        self.assertIn(b"multipart/alternative", raw)

    def test_suppressed_recipient(self) -> None:
        """A suppressed recipient is recorded as suppressed, not queued."""
        run(self.f.store.suppress("gone@x.test", "userunknown", T0))
        response, body = self.inject({"recipients": ["gone@x.test", "ok@x.test"],
                                      "from": "a@s.test", "text": "x"})
        self.assertEqual(response.code, 201)
        self.assertEqual([(r["address"], r["state"], r["reason"]) for r in body["recipients"]],
                         [("gone@x.test", "suppressed", "userunknown"),
                          ("ok@x.test", "queued", None)])

    def test_bad_identifier(self) -> None:
        """A bad mailing id or message id is a 400 naming the field."""
        for payload, field in (
                ({"mailing_id": "spring sale!"}, "mailing_id"),
                ({"message_id": "x" * 40}, "message_id"),
                ({"raw": "X-Hurricane-Mailing-Id: bad id\r\n\r\nx"}, "mailing_id")):
            base = {"recipients": ["a@x.test"], "raw": "Subject: x\r\n\r\nx"}
            base.update(payload)
            response, body = self.inject(base)
            self.assertEqual(response.code, 400, payload)
            self.assertEqual(body["field"], field)
            self.assertIn(field, body["error"])
        self.assertEqual(run(self.f.store.search_deliveries(recipient="a@x.test")), [])

    def test_bad_input_names_field(self) -> None:
        """Missing recipients, a bad address or an unknown field are 400s naming it."""
        for payload, field in (({"raw": "x"}, "recipients"),
                               ({"recipients": ["not an address"], "raw": "x"}, "recipients"),
                               ({"recipients": ["a@x.test"], "raw": "x", "colour": 1}, "colour"),
                               ({"recipients": ["a@x.test"], "text": "x"}, "from")):
            response, body = self.inject(payload)
            self.assertEqual((response.code, body["field"]), (400, field), payload)
        response, body = json_of(self.f, self.f.treq.post(
            API + "/messages", data=b"{nope", headers=self.f.auth()))
        self.assertEqual((response.code, body["field"]), (400, "body"))

    def test_too_large(self) -> None:
        """A message over the size limit is refused with 413."""
        self.f.site.api.max_message_size = 1000
        response, body = self.inject({"recipients": ["a@x.test"], "raw": "x" * 1500})
        self.assertEqual(response.code, 413)

    def test_store_unavailable(self) -> None:
        """When the store fails the answer is 503 and the hook is not called."""
        self.f.store.set_available(False)
        response, body = self.inject({"recipients": ["a@x.test"], "raw": "Subject: x\r\n\r\nx"})
        self.assertEqual(response.code, 503)
        self.assertEqual(self.f.woken, 0)


class ApiReadTests(SynchronousTestCase):
    """Reading outcomes and managing suppressions."""

    def setUp(self) -> None:
        self.f = WebFixture()

    def get(self, path: str) -> tuple[int, Any]:
        """GET with the token; the status and JSON."""
        response, body = json_of(self.f, self.f.treq.get(API + path, headers=self.f.auth()))
        return response.code, body

    def test_summary_equals_store(self) -> None:
        """The summary endpoint returns store.summary with rates."""
        code, body = self.get(f"/summary?since={T0 - 3600}&until={T0}")
        summary = run(self.f.store.summary(T0 - 3600, T0))
        self.assertEqual(code, 200)
        self.assertEqual((body["messages"], body["recipients"]),
                         (summary.messages, summary.recipients))
        self.assertEqual(body["by_state"]["bounced"], 1)
        self.assertEqual(body["rates"]["bounce_sync"], 0.25)
        self.assertEqual(self.get("/summary?since=yesterday")[0], 400)

    def test_delivery_recipient_mailing(self) -> None:
        """Deliveries (with events), recipients and mailings read back; unknown ids 404."""
        code, body = self.get(f"/deliveries/{self.f.data['ids'][3]}")
        self.assertEqual((code, body["state"]), (200, "bounced"))
        self.assertEqual([e["kind"] for e in body["events"]], ["queued", "attempt", "bounce"])
        code, body = self.get("/recipients/OK@one.test")
        self.assertEqual(len(body["deliveries"]), 1)
        code, body = self.get("/mailings/spring-26")
        self.assertEqual((code, body["recipients"]), (200, 5))
        code, body = self.get("/mailings/spring-26/recipients?limit=2")
        self.assertEqual(len(body["deliveries"]), 2)
        self.assertIsNotNone(body["next_before"])
        for path in ("/deliveries/999", "/mailings/none", "/messages/AAAA", "/nothing"):
            self.assertEqual(self.get(path)[0], 404, path)

    def test_path_decoded_once(self) -> None:
        """A percent sign in an address survives the path: segments are decoded once."""
        run(self.f.store.enqueue(NewMessage(sender="", recipients=(NewRecipient("a%41@x.test"),),
                                            body=b"x"), T0))
        code, body = self.get("/recipients/a%2541@x.test")
        self.assertEqual((code, body["recipient"]), (200, "a%41@x.test"))
        self.assertEqual([d["recipient"] for d in body["deliveries"]], ["a%41@x.test"])
        run(self.f.store.suppress("b%42@x.test", "operator", T0))
        self.assertEqual(self.get("/suppressions/b%2542@x.test")[0], 200)

    def test_suppression_crud(self) -> None:
        """Suppressions are listed, added, read and removed through the API."""
        auth = self.f.auth()
        response, body = json_of(self.f, self.f.treq.post(
            API + "/suppressions", json={"address": "New@x.test", "note": "n"}, headers=auth))
        self.assertEqual((response.code, body["added"]), (201, True))
        code, body = self.get("/suppressions/new@x.test")
        self.assertEqual((code, body["reason"], body["source"]), (200, "operator", "operator"))
        code, body = self.get("/suppressions")
        self.assertEqual([s["address"] for s in body["suppressions"]],
                         ["gone@one.test", "new@x.test"])
        response, body = json_of(self.f, self.f.treq.delete(API + "/suppressions/new@x.test",
                                                            headers=auth))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.get("/suppressions/new@x.test")[0], 404)
        response, body = json_of(self.f, self.f.treq.post(
            API + "/suppressions", json={"address": "bad"}, headers=auth))
        self.assertEqual((response.code, body["field"]), (400, "address"))
        self.assertTrue(json.dumps(body))
