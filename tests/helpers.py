"""Shared fixtures of the operations tests: a MemoryStore holding one event of each kind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Coroutine
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import (
    AttemptResult,
    BounceEvent,
    EventKind,
    NewMessage,
    NewRecipient,
    ReturnedMessage,
    Source,
    State,
)
from hurricane.store.memory import MemoryStore

T = TypeVar("T")

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def temp_path(case: SynchronousTestCase) -> str:
    """A fresh absolute path (not yet created) under the system's temp directory.

    Used instead of ``TestCase.mktemp``, which creates its directories in the
    current directory when pytest runs the tests; removed after the test.
    """
    parent = tempfile.mkdtemp(prefix="hurricane-ops-")
    case.addCleanup(shutil.rmtree, parent, True)
    return os.path.join(parent, "t")


def run(case: SynchronousTestCase, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that completes at once (MemoryStore) and return its result."""
    result: T = case.successResultOf(Deferred.fromCoroutine(coro))
    return result


async def populate(store: MemoryStore, at: float = T0) -> dict[str, int]:
    """Write one event of every kind; return the delivery ids by recipient name.

    Recipients: ``ok`` (queued, delivered, then bounced OOB), ``later``
    (queued, deferred, then expired), ``refused`` (queued, failed), ``blocked``
    (suppressed at enqueue), ``angry`` (queued, delivered, complaint),
    ``info`` (queued, delivered, delayed DSN and auto-reply).
    """
    if not store.is_open:
        await store.open()
    await store.suppress("blocked@example.org", "userunknown", at, source="operator")
    names = ["ok", "later", "refused", "blocked", "angry", "info"]
    result = await store.enqueue(NewMessage(
        sender="app@example.com",
        recipients=tuple(NewRecipient(f"{n}@example.org") for n in names),
        body=b"Subject: hi\r\n\r\nhello\r\n", mailing_id="Spring-26", message_id="M-1",
        header_message_id="abc@example.com"), at)
    ids = {r.address.split("@")[0]: r.delivery_id for r in result.recipients}
    await store.record_attempts([
        AttemptResult(delivery_id=ids["ok"], state=State.delivered, at=at + 1, code=250,
                      status="2.0.0",
                      text="ok queued", remote_host="mx.example.org", remote_ip="192.0.2.1",
                      tls="TLSv1.3", duration=0.5),
        AttemptResult(delivery_id=ids["later"], state=State.deferred, at=at + 1, code=451,
                      status="4.7.1",
                      text="try later", reason="blocked", next_attempt_at=at + 300),
        AttemptResult(delivery_id=ids["refused"], state=State.failed, at=at + 1, code=550,
                      status="5.1.1",
                      text="no such user", reason="userunknown", hard=True, suppress=True,
                      rule="550-511"),
        AttemptResult(delivery_id=ids["angry"], state=State.delivered, at=at + 1, code=250),
        AttemptResult(delivery_id=ids["info"], state=State.delivered, at=at + 1, code=250),
    ])
    await store.retry_now(at + 2, delivery_id=ids["later"])
    await store.record_attempts([
        AttemptResult(delivery_id=ids["later"], state=State.expired, at=at + 3, reason="expired",
                      source=Source.local),
    ])
    bounce_id = await store.store_bounce(ReturnedMessage(
        raw=b"From: MAILER-DAEMON\r\n\r\nbounce\r\n", mail_from="", rcpt_to="verp@bounces",
        received_at=at + 4))
    await store.record_bounce(bounce_id, [
        BounceEvent(delivery_id=ids["ok"], kind=EventKind.bounce, at=at + 4, bounce_id=bounce_id,
                    reason="mailboxfull", code=552, status="5.2.2", text="mailbox full",
                    remote_host="mx.example.org", rule="dsn-522", correlation="verp"),
        BounceEvent(delivery_id=ids["angry"], kind=EventKind.complaint, at=at + 4,
                    bounce_id=bounce_id,
                    reason="feedback", hard=True, source=Source.arf, feedback_type="abuse",
                    correlation="verp"),
        BounceEvent(delivery_id=ids["info"], kind=EventKind.delayed, at=at + 4, bounce_id=bounce_id,
                    status="4.4.7", permanent=False),
        BounceEvent(delivery_id=ids["info"], kind=EventKind.autoreply, at=at + 5,
                    bounce_id=bounce_id,
                    reason="vacation", source=Source.autoreply, permanent=False),
    ], "mixed", "verp", "{}")
    return ids


def drain(clock: Clock, seconds: float = 0.0, steps: int = 50) -> None:
    """Run every call due within ``seconds`` (and the zero-delay ones they add)."""
    clock.advance(0)
    for _ in range(steps):
        clock.advance(0)
    if seconds:
        clock.advance(seconds)
        for _ in range(steps):
            clock.advance(0)
