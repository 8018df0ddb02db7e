"""Fixtures for the bounce processor tests: a store with sent mail, a codec,
a fake clock, and small returned messages written for these tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from hurricane.bounce.model import Analysis, RecipientResult
from hurricane.inbound.executor import CallExecutor, Executor, ProcessExecutor, ThreadExecutor
from hurricane.inbound.processor import BounceProcessor, ProcessorConfig, run_inline
from hurricane.inbound.workers import AnalysisProcessPool
from hurricane.model import (
    AttemptResult,
    Delivery,
    NewMessage,
    NewRecipient,
    ReturnedMessage,
    ReturnedRecipient,
    State,
)
from hurricane.store.memory import MemoryStore
from hurricane.verp import VerpCodec, VerpKey, VerpToken

#: A plausible "now" (2027-01-15), so day-based token ages are realistic.
NOW = 1_800_000_000.0
BOUNCE_DOMAIN = "bounce.example.com"


def run(coro: Any) -> Any:
    """Run a coroutine that completes synchronously (MemoryStore) and return its result."""
    d: Deferred[Any] = Deferred.fromCoroutine(coro)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    from twisted.python.failure import Failure

    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class World:
    """A MemoryStore with sent mail, a codec on the fake clock's day, and a processor."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        run(self.store.open())
        self.codec = VerpCodec(
            BOUNCE_DOMAIN, [VerpKey(0, b"k" * 32, 0)],
            today=lambda: int(self.clock.seconds() // 86400),
        )
        self.other_codec = VerpCodec(BOUNCE_DOMAIN, [VerpKey(0, b"x" * 32, 0)],
                                     today=lambda: int(self.clock.seconds() // 86400))

    def send(
        self,
        recipients: Sequence[str],
        *,
        header_message_id: str | None = None,
        state: State = State.delivered,
        mailing_id: str | None = None,
        message_id: str | None = None,
        at: float | None = None,
    ) -> list[Delivery]:
        """Enqueue a message and record one attempt per recipient; return the rows."""
        now = self.clock.seconds() if at is None else at
        result = run(self.store.enqueue(NewMessage(
            sender="app@example.org",
            recipients=tuple(NewRecipient(r) for r in recipients),
            body=b"Subject: hello\r\n\r\nhello\r\n",
            header_message_id=header_message_id,
            mailing_id=mailing_id,
            message_id=message_id,
        ), now))
        ids = [r.delivery_id for r in result.recipients]
        run(self.store.claim_due(now, "node", 60, 1000))
        attempts = []
        for i in ids:
            if state is State.deferred:
                attempts.append(AttemptResult(delivery_id=i, state=State.deferred, at=now,
                                              code=451, status="4.3.0",
                                              text="try later", next_attempt_at=now + 600))
            elif state is State.delivered:
                attempts.append(AttemptResult(delivery_id=i, state=State.delivered, at=now,
                                              code=250,
                                              status="2.0.0", text="ok"))
        if attempts:
            run(self.store.record_attempts(attempts))
        return [run(self.store.get_delivery(i)) for i in ids]

    def token(self, delivery: Delivery, per_message: bool = False) -> str:
        """The VERP address of a delivery (shared by its transaction with ``per_message``)."""
        return self.codec.encode(delivery.delivery_id, delivery.mailing_id, delivery.message_id,
                                 per_message=per_message)

    def receive(self, raw: bytes, rcpt_to: str, *, verified: bool = True) -> int:
        """Store a returned message as the listener would; return its id."""
        tok = self.codec.decode(rcpt_to) if verified else None
        delivery_id = tok.delivery_id if isinstance(tok, VerpToken) else None
        per_message = isinstance(tok, VerpToken) and tok.per_message
        bounce_id: int = run(self.store.store_bounce(ReturnedMessage(
            raw=raw, mail_from="", rcpt_to=rcpt_to, received_at=self.clock.seconds(),
            delivery_id=delivery_id, client="192.0.2.1",
            recipients=(ReturnedRecipient(rcpt_to, delivery_id, per_message),))))
        return bounce_id

    def processor(self, **kwargs: Any) -> BounceProcessor:
        """A processor on this world with an inline runner (not started)."""
        kwargs.setdefault("runner", run_inline)
        return build_processor(self.store, self.codec, self.clock, **kwargs)

    def delivery(self, delivery_id: int) -> Delivery:
        """The current row."""
        d: Delivery | None = run(self.store.get_delivery(delivery_id))
        assert d is not None
        return d

    def events(self, delivery_id: int) -> list[Any]:
        """The events of a delivery."""
        events: list[Any] = run(self.store.events(delivery_id))
        return events

    def bounce(self, bounce_id: int) -> Any:
        """The stored returned message."""
        return run(self.store.load_bounce(bounce_id))

    def bounce_error(self, bounce_id: int) -> str | None:
        """The error recorded for a returned message whose analysis failed (SQL:
        no store operation returns it)."""
        rows = self.store.query("SELECT error FROM bounces WHERE bounce_id = ?", (bounce_id,))
        return None if not rows else rows[0][0]


_EXECUTOR_ARGS = ("analyze", "limits", "classifier")


def build_processor(store: Any, codec: VerpCodec, clock: Any, *,
                    runner: Any = None, threadpool: Any = None,
                    processes: AnalysisProcessPool | None = None,
                    **kwargs: Any) -> BounceProcessor:
    """A processor with its executor picked from test-friendly arguments.

    ``processes`` (a pool) gives a ProcessExecutor; ``runner`` a
    CallExecutor through it; otherwise a ThreadExecutor (``threadpool``, or
    its own pool of ``concurrency`` threads). ``analyze``, ``limits`` and
    ``classifier`` go to the executor, the rest to :class:`ProcessorConfig`.
    """
    analysis = {k: kwargs.pop(k) for k in _EXECUTOR_ARGS if k in kwargs}
    config = ProcessorConfig(**kwargs)
    executor: Executor
    if processes is not None:
        executor = ProcessExecutor(processes)
    elif runner is not None:
        executor = CallExecutor(runner, **analysis)
    else:
        executor = ThreadExecutor(clock, threadpool, threads=config.concurrency, **analysis)
    return BounceProcessor(store, codec, clock, executor, config)


# -- fake analyses --------------------------------------------------------------


def result(recipient: str, *, action: str = "failed", code: str | None = "550",
           status: str | None = "5.1.1", reason: str = "userunknown", hard: bool = True,
           suppress: bool = True, source: str = "dsn", orcpt: str | None = None,
           feedback_type: str | None = None) -> RecipientResult:
    """A RecipientResult with defaults of a hard DSN failure."""
    return RecipientResult(
        recipient=recipient, action=action, code=code, status=status, status_inferred=False,
        reason=reason, hard=hard, suppress=suppress, diagnostic=f"{code} {status} no",
        remote_mta="mx.example.net", source=source, rule="test.rule",
        original_recipient=orcpt, feedback_type=feedback_type)


def fake_analyze(analysis: Analysis | Callable[[bytes], Analysis]) -> Callable[..., Analysis]:
    """An analyze function that returns a fixed Analysis (or one computed from raw)."""

    def analyze(raw: bytes, envelope_rcpt: str | None = None, **kwargs: Any) -> Analysis:
        if callable(analysis):
            return analysis(raw)
        return analysis

    return analyze


# -- returned messages written for these tests -------------------------------------


def original_headers(to: str, token: str | None = None, message_id: str | None = None) -> str:
    """Headers of the message we sent, as a returned original carries them."""
    lines = [
        "From: News <news@example.org>",
        f"To: <{to}>",
        "Subject: Spring sale",
        "Date: Fri, 15 Jan 2027 10:00:00 +0000",
    ]
    if message_id:
        lines.append(f"Message-ID: <{message_id}>")
    if token:
        lines.append(f"X-Hurricane-Token: {token}")
    return "\r\n".join(lines) + "\r\n"


def dsn(
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
    token: str | None = None,
    message_id: str | None = None,
    envid: str | None = None,
    orcpt: str | None = None,
    extra_recipients: Sequence[tuple[str, str, str]] = (),
    to: str = "postmaster@bounce.example.com",
    received: str = "",
) -> bytes:
    """A small RFC 3464 multipart/report for one (or more) recipients."""
    per_msg = ["Reporting-MTA: dns; mx.example.net"]
    if envid:
        per_msg.append(f"Original-Envelope-Id: {envid}")
    blocks = []
    for rcpt, act, st, in [(recipient, action, status), *extra_recipients]:
        b = []
        if orcpt and rcpt == recipient:
            b.append(f"Original-Recipient: rfc822;{orcpt}")
        b += [f"Final-Recipient: rfc822;{rcpt}", f"Action: {act}", f"Status: {st}",
              "Remote-MTA: dns; mx.example.net"]
        diag = diagnostic.format(rcpt=rcpt)
        if st.startswith("4"):
            diag = f"smtp; 451 {st} <{rcpt}>: mailbox busy, try later"
        if act == "failed" or st.startswith("4"):
            b.append(f"Diagnostic-Code: {diag}")
        blocks.append("\r\n".join(b))
    status_body = "\r\n".join(per_msg) + "\r\n\r\n" + "\r\n\r\n".join(blocks) + "\r\n"
    return (
        f"{received}"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        f"To: <{to}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Fri, 15 Jan 2027 10:05:00 +0000\r\n"
        "Message-ID: <ndr.1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\r\n'
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n"
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        f"{status_body}"
        "\r\n"
        "--BOUND\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{original_headers(recipient, token, message_id)}"
        "\r\n"
        "--BOUND--\r\n"
    ).encode("ascii")


def arf(recipient: str, *, token: str | None = None, message_id: str | None = None) -> bytes:
    """A small RFC 5965 abuse report about a message we sent to ``recipient``."""
    return (
        "From: Feedback Loop <fbl@isp.example.net>\r\n"
        "To: <fbl@bounce.example.com>\r\n"
        "Subject: FW: Spring sale\r\n"
        "Date: Fri, 15 Jan 2027 11:00:00 +0000\r\n"
        "Message-ID: <arf.1@isp.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="FB"\r\n'
        "\r\n"
        "--FB\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is an email abuse report for an email message received from IP\r\n"
        "192.0.2.10 on Fri, 15 Jan 2027 10:00:00 +0000.\r\n"
        "\r\n"
        "--FB\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: ExampleFBL/1.0\r\n"
        "Version: 1\r\n"
        "Original-Mail-From: <app@example.org>\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\n"
        "Source-IP: 192.0.2.10\r\n"
        "\r\n"
        "--FB\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        f"{original_headers(recipient, token, message_id)}"
        "\r\n"
        "Spring sale!\r\n"
        "\r\n"
        "--FB--\r\n"
    ).encode("ascii")


def autoreply(sender: str, *, to: str) -> bytes:
    """A small RFC 3834 out-of-office reply from ``sender``."""
    return (
        f"From: Pat <{sender}>\r\n"
        f"To: <{to}>\r\n"
        "Subject: Out of office: Spring sale\r\n"
        "Date: Fri, 15 Jan 2027 10:01:00 +0000\r\n"
        "Message-ID: <ooo.1@example.net>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "\r\n"
        "I am away until Monday and will read your message when I am back.\r\n"
    ).encode("ascii")


def free_text(recipient: str, text: str, *, to: str, token: str | None = None) -> bytes:
    """A plain-text NDR in no standard format, with the original's headers quoted."""
    return (
        "From: Mail Administrator <postmaster@mail.example.net>\r\n"
        f"To: <{to}>\r\n"
        "Subject: Delivery failure\r\n"
        "Date: Fri, 15 Jan 2027 10:02:00 +0000\r\n"
        "Message-ID: <ft.1@mail.example.net>\r\n"
        "\r\n"
        "Your message could not be delivered to the following recipient:\r\n"
        "\r\n"
        f"  {recipient}\r\n"
        f"  {text}\r\n"
        "\r\n"
        "------ Original message follows ------\r\n"
        "\r\n"
        f"{original_headers(recipient, token)}"
        "\r\n"
        "Spring sale!\r\n"
    ).encode("ascii")
