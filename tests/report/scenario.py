"""A store as an email-operations person sees it: mailings, a deferred queue, suppressions.

:func:`populate_report` fills any IOutcomeStore (memory, SQLite) with what the
report's pages must show well: a 14-second mailing with every kind of
outcome (some still deferred, some bounced or complaining later), an older
settled mailing, a history of late bounces large enough for two providers
to have measured settling delays, mail without a mailing id, a deferred
domain with a long error, reply texts with long unbroken tokens, and
suppressions both from bounces and by hand. The browser test and the
page tests use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hurricane.model import (
    AttemptResult,
    BounceEvent,
    EventKind,
    NewMessage,
    NewRecipient,
    ReturnedMessage,
    State,
)

DOMAINS = ("gmail.test", "yahoo.test", "outlook.test", "example.org", "gmx.test", "orange.test")
#: A reply with a token no browser can break at a space.
LONG_TOKEN = "https://postmaster.example/policy?case=" + "Zx9" * 50
SPAM_TEXT = ("5.7.1 Message rejected as spam by Content Filtering. Our system has detected "
             "that this message is likely unsolicited mail. To reduce the amount of spam "
             "sent to our users, this message has been blocked. See " + LONG_TOKEN)
GREY_TEXT = ("4.7.1 <{rcpt}>: Recipient address rejected: Greylisted for 300 seconds, "
             "please come back later (see https://greylisting.example/why)")
SLOW_TEXT = ("4.7.0 Too many connections from your IP address, slow down and try again "
             "later; this server limits each sending host to 2 concurrent sessions")


@dataclass
class Scenario:
    """What :func:`populate_report` made (ids the tests look for)."""

    now: float
    sale: str = "spring-sale"
    welcome: str = "welcome-7"
    history: str = "newsletter-48"
    bounced: int = 0
    complained: int = 0
    failed_spam: int = 0
    deferred: list[int] = field(default_factory=list)
    slow: list[int] = field(default_factory=list)


def _attempt(delivery_id: int, state: State, at: float, **fields: Any) -> AttemptResult:
    """An attempt's result (keyword fields: the dataclass takes nothing by position)."""
    return AttemptResult(delivery_id=delivery_id, state=state, at=at, **fields)


async def _bounce(store: Any, delivery_id: int, at: float, kind: EventKind = EventKind.bounce,
                  reason: str = "mailboxfull", text: str = "552 5.2.2 mailbox full") -> None:
    bounce_id = await store.store_bounce(ReturnedMessage(
        b"From: MAILER-DAEMON\r\nSubject: Undelivered Mail\r\n\r\n" + text.encode(), "",
        f"b{delivery_id}@bounce.test", at))
    await store.record_bounce(bounce_id, [BounceEvent(
        delivery_id=delivery_id, kind=kind, at=at, bounce_id=bounce_id, reason=reason,
        status=None if kind is EventKind.complaint else "5.2.2", text=text, rule="dsn-status",
        correlation="verp", source="arf" if kind is EventKind.complaint else "dsn",
        suppress=kind is EventKind.complaint)], "bounce", "verp", "{}")


async def _mailing(store: Any, mailing_id: str, recipients: list[str], start: float,
                   span: float, per_message: int = 1) -> list[int]:
    """Enqueue ``recipients`` spread evenly over ``span`` seconds; their delivery ids."""
    ids: list[int] = []
    chunks = [recipients[i:i + per_message] for i in range(0, len(recipients), per_message)]
    for n, chunk in enumerate(chunks):
        at = start + span * n / max(1, len(chunks) - 1)
        result = await store.enqueue(NewMessage(
            sender="news@shop.test", recipients=tuple(NewRecipient(r) for r in chunk),
            body=b"Subject: news\r\n\r\nhello\r\n", mailing_id=mailing_id,
            message_id=f"{mailing_id}-{n}"), at)
        ids += [r.delivery_id for r in result.recipients]
    return ids


async def _history(store: Any, s: Scenario) -> None:
    """An older mailing whose late bounces measure gmail.test and yahoo.test."""
    start = s.now - 10 * 86400
    recipients = [f"reader{i:04d}@{('gmail.test', 'yahoo.test')[i % 2]}" for i in range(720)]
    ids = await _mailing(store, s.history, recipients, start, 600, per_message=40)
    await store.record_attempts([_attempt(d, State.delivered, start + 700, code=250,
                                               remote_host="mx.test") for d in ids])
    for i, d in enumerate(ids):
        if i % 6 < 2:
            # gmail answers within minutes, yahoo within hours
            delay = (20 + (i * 37) % 2400) if i % 2 == 0 else (300 + (i * 131) % 21600)
            await _bounce(store, d, start + 700 + delay)


async def populate_report(store: Any, now: float) -> Scenario:
    """Fill ``store`` (opened) with the report scenario, relative to ``now``."""
    s = Scenario(now=now)
    await _history(store, s)
    # A settled mailing three days ago.
    welcome = await _mailing(store, s.welcome, [f"new{i}@{DOMAINS[i % 6]}" for i in range(60)],
                             now - 3 * 86400, 1200, per_message=10)
    await store.record_attempts([_attempt(d, State.delivered, now - 3 * 86400 + 1300,
                                               code=250) for d in welcome])
    for d in welcome[:4]:
        await _bounce(store, d, now - 3 * 86400 + 1400, reason="userunknown",
                      text="550 5.1.1 user unknown")
    # The 14-second mailing half an hour ago, still settling.
    start = now - 1800
    sale = await _mailing(store, s.sale, [f"user{i:03d}@{DOMAINS[i % 6]}" for i in range(240)],
                          start, 14)
    results = []
    for i, d in enumerate(sale):
        rcpt = f"user{i:03d}@{DOMAINS[i % 6]}"
        at = start + 14 * i / 239 + 1
        kind = i // 6 % 20  # every kind at every domain
        if kind == 3:
            results.append(_attempt(d, State.failed, at, code=550, status="5.1.1",
                                         text=f"5.1.1 <{rcpt}>: Recipient address rejected: "
                                              "User unknown in virtual mailbox table",
                                         reason="userunknown", hard=True, suppress=True,
                                         remote_host="mx1." + DOMAINS[i % 6],
                                         remote_ip="192.0.2.10"))
        elif kind == 7:
            results.append(_attempt(d, State.failed, at, code=554, status="5.7.1",
                                         text=SPAM_TEXT, reason="spamdetected",
                                         remote_host="mx2." + DOMAINS[i % 6],
                                         remote_ip="192.0.2.11"))
            s.failed_spam = s.failed_spam or d
        elif kind == 11:
            results.append(_attempt(d, State.deferred, at, code=451, status="4.7.1",
                                         text=GREY_TEXT.format(rcpt=rcpt),
                                         next_attempt_at=now + 600,
                                         remote_host="mx1." + DOMAINS[i % 6]))
            s.deferred.append(d)
        else:
            results.append(_attempt(d, State.delivered, at, code=250, status="2.0.0",
                                         text=f"2.0.0 Ok: queued as {d:08X}",
                                         remote_host="mx1." + DOMAINS[i % 6],
                                         remote_ip="192.0.2.10", tls="TLSv1.3", duration=0.21))
    await store.record_attempts(results)
    for i, d in enumerate(sale):
        at = start + 14 * i / 239 + 1
        if i // 6 % 20 == 13:
            await _bounce(store, d, at + 30 + 60 * (i % 7),
                          text="552 5.2.2 <user> Mailbox full: quota exceeded " + LONG_TOKEN)
            s.bounced = s.bounced or d
        elif i // 6 % 20 == 17:
            await _bounce(store, d, at + 900, kind=EventKind.complaint, reason="feedback",
                          text="abuse report from the mailbox provider's feedback loop")
            s.complained = s.complained or d
    # Transactional mail, and a destination that keeps deferring.
    for n in range(6):
        await store.enqueue(NewMessage(sender="app@shop.test",
                                       recipients=(NewRecipient(f"buyer{n}@orange.test"),),
                                       body=b"Subject: receipt\r\n\r\nthanks\r\n"), now - 600)
    slow = await store.enqueue(NewMessage(
        sender="app@shop.test",
        recipients=tuple(NewRecipient(f"team{n}@slow.example") for n in range(5)),
        body=b"Subject: report\r\n\r\nweekly\r\n"), now - 7200)
    s.slow = [r.delivery_id for r in slow.recipients]
    await store.record_attempts([
        _attempt(d, State.deferred, now - 300 + n, code=421, status="4.7.0",
                      text=SLOW_TEXT, next_attempt_at=now + 900, remote_host="mx.slow.example")
        for n, d in enumerate(s.slow)])
    await store.suppress("blocked@example.org", "operator", now - 86400, source="operator",
                         note="asked by phone to stop")
    return s
