"""Shared fixtures of the report tests: a config, a store with outcomes, a StubTreq."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from hurricane.config import Config, WebConfig
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
        AttemptResult(ok, State.delivered, at + 5, code=250, text="ok", remote_host="mx.one.test",
                      tls="TLSv1.3"),
        AttemptResult(gone, State.failed, at + 5, code=550, status="5.1.1",
                      text="no such user", reason="userunknown", hard=True, suppress=True),
        AttemptResult(later, State.deferred, at + 5, code=451, text="try later",
                      next_attempt_at=at + 900),
        AttemptResult(bounce, State.delivered, at + 5, code=250),
        AttemptResult(angry, State.delivered, at + 5, code=250),
    ]))
    bounce_id = run(store.store_bounce(ReturnedMessage(
        b"From: mailer-daemon\r\n\r\n<b>gone</b>", "", "verp@bounce.test", at + 60)))
    run(store.record_bounce(bounce_id, [
        BounceEvent(bounce, EventKind.bounce, at + 60, bounce_id=bounce_id, reason="mailboxfull",
                    status="5.2.2", text="mailbox full", rule="dsn-status", correlation="verp"),
        BounceEvent(angry, EventKind.complaint, at + 70, reason="feedback", source="arf",
                    correlation="verp"),
    ], "bounce", "verp", "{}"))
    return {"result": r, "ids": (ok, gone, later, bounce, angry), "bounce_id": bounce_id}


class WebFixture:
    """A MemoryStore, a Clock at T0 and a StubTreq over the site."""

    def __init__(self, config: Config | None = None, populated: bool = True) -> None:
        self.store = MemoryStore()
        run(self.store.open())
        self.clock = Clock()
        self.clock.advance(T0)
        self.data = populate(self.store) if populated else {}
        self.woken = 0
        self.config = config or make_config()
        self.site = build_web_site(self.config, self.store, self.clock,
                                   on_enqueued=self.wake, csrf_secret=CSRF_SECRET)
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
