"""The session's parts alone: the command pipeline and the envelope commands."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.interface import OutboundRecipient, Reply
from hurricane.outbound.session import (
    CommandPipeline,
    mail_command,
    rcpt_command,
    refuse_locally,
    tls_policy_of,
)
from hurricane.outbound.wire import SessionError, SMTPClientProtocol
from hurricane.outcome import Phase, TlsPolicy

from .helpers import (
    EHLO_PIPELINING,
    EHLO_PLAIN,
    FakeTLSTransport,
    message,
    ready_session,
    send,
)


def wired() -> tuple[SMTPClientProtocol, FakeTLSTransport, Clock]:
    """A connected wire protocol on a fake transport and clock."""
    clock = Clock()
    proto = SMTPClientProtocol(clock)
    transport = FakeTLSTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def take(transport: FakeTLSTransport) -> bytes:
    """What was written since the last call."""
    value = transport.value()
    transport.clear()
    return value


class CommandPipelineTests(SynchronousTestCase):
    """Queued commands go out all at once (pipelined) or one per read (lock-step)."""

    def queue(self, depth: int | None) -> tuple[CommandPipeline, SMTPClientProtocol,
                                                FakeTLSTransport, Clock]:
        proto, transport, clock = wired()
        pipeline = CommandPipeline(proto, depth)
        pipeline.add(b"MAIL FROM:<a@x>", Phase.mail, 10.0)
        pipeline.add(b"RCPT TO:<b@x>", Phase.rcpt, 10.0)
        pipeline.add(b"DATA", Phase.data, 10.0)
        return pipeline, proto, transport, clock

    def read(self, pipeline: CommandPipeline) -> defer.Deferred[Reply]:
        return defer.Deferred.fromCoroutine(pipeline.reply())

    def test_pipelined_writes_everything_at_the_first_read(self) -> None:
        """Without a depth the first read writes every queued command in one write."""
        pipeline, proto, transport, clock = self.queue(None)
        self.assertEqual(take(transport), b"")  # nothing before a read
        first = self.read(pipeline)
        self.assertEqual(take(transport),
                         b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        proto.dataReceived(b"250 ok\r\n250 rcpt ok\r\n354 go\r\n")
        self.assertEqual(self.successResultOf(first).code, 250)
        self.assertEqual(self.successResultOf(self.read(pipeline)).text, "rcpt ok")
        self.assertTrue(pipeline.waiting)
        self.assertEqual(self.successResultOf(self.read(pipeline)).code, 354)
        self.assertFalse(pipeline.waiting)
        self.assertEqual(take(transport), b"")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lockstep_is_a_pipeline_of_one(self) -> None:
        """With depth 1 each read writes one command and waits for its reply."""
        pipeline, proto, transport, clock = self.queue(1)
        first = self.read(pipeline)
        self.assertEqual(take(transport), b"MAIL FROM:<a@x>\r\n")
        proto.dataReceived(b"250 ok\r\n")
        self.assertEqual(self.successResultOf(first).code, 250)
        self.assertEqual(take(transport), b"")  # the RCPT waits for its read
        second = self.read(pipeline)
        self.assertEqual(take(transport), b"RCPT TO:<b@x>\r\n")
        proto.dataReceived(b"250 ok\r\n")
        self.successResultOf(second)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_withdraw_drops_only_what_was_not_written(self) -> None:
        """After withdraw() a lock-step pipeline has nothing left; a pipelined one
        still has the replies of what it wrote."""
        for depth, waiting in ((1, False), (None, True)):
            with self.subTest(depth=depth):
                pipeline, proto, transport, _ = self.queue(depth)
                d = self.read(pipeline)
                proto.dataReceived(b"550 no\r\n")
                if depth is None:
                    proto.dataReceived(b"503 no\r\n503 no\r\n")
                self.assertEqual(self.successResultOf(d).code, 550)
                pipeline.withdraw()
                self.assertEqual(pipeline.waiting, waiting)

    def test_failure_after_some_replies(self) -> None:
        """The replies that arrived before a lost connection are read first, then
        every further read fails with the session's error."""
        pipeline, proto, transport, _ = self.queue(None)
        first = self.read(pipeline)
        proto.dataReceived(b"250 ok\r\n")
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(first).code, 250)
        self.failureResultOf(self.read(pipeline), SessionError)
        self.failureResultOf(self.read(pipeline), SessionError)

    def test_read_without_command_is_a_bug(self) -> None:
        """Reading past the last command is a programming error, not a wait."""
        proto, _, _ = wired()
        self.failureResultOf(defer.Deferred.fromCoroutine(CommandPipeline(proto, 1).reply()),
                             RuntimeError)


class OneCodePathTests(SynchronousTestCase):
    """Pipelined and lock-step servers giving the same replies give the same answers."""

    REPLIES = [b"250 ok\r\n", b"250 ok\r\n", b"550 5.1.1 unknown\r\n", b"451 4.3.0 later\r\n",
               b"354 go\r\n", b"250 2.0.0 queued\r\n"]

    def answers(self, ehlo: bytes) -> list[tuple[int | None, str]]:
        session = ready_session(ehlo)
        d = send(session, message("a@x.test", "b@x.test", "c@x.test"))
        for reply in self.REPLIES:
            session.feed(reply)
        return [(r.reply.code if r.reply else None, r.phase.value)
                for r in self.successResultOf(d)]

    def test_same_answers(self) -> None:
        """MAIL ok, RCPTs 250/550/451, DATA 354, 250 after the dot: each mode decides alike."""
        expected = [(250, "dot"), (550, "rcpt"), (451, "rcpt")]
        self.assertEqual(self.answers(EHLO_PIPELINING), expected)
        self.assertEqual(self.answers(EHLO_PLAIN), expected)

    def test_refused_mail_pipelined_reads_every_reply(self) -> None:
        """A pipelined MAIL refused: the RCPT and DATA replies are still read, and a
        354 to DATA gets the lone dot of RFC 2920."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.take()
        session.feed(b"550 5.7.1 sender blocked\r\n503 need MAIL\r\n354 go\r\n")
        self.assertEqual(session.take(), b".\r\n")
        session.feed(b"554 no valid recipients\r\n")
        [answer] = self.successResultOf(d)
        self.assertEqual((answer.reply.code, answer.phase), (550, Phase.mail))
        self.assertTrue(session.conn.usable)


class EnvelopeCommandTests(SynchronousTestCase):
    """MAIL and RCPT parameters, and the refusals made without the server."""

    def test_mail_parameters_follow_the_extensions(self) -> None:
        """Only offered parameters are written; ENVID is xtext-encoded."""
        msg = message("a@x.test", eight_bit=True, smtputf8=True, envid="id=1")
        self.assertEqual(mail_command(msg, {}), b"MAIL FROM:<bounce@example.com>")
        self.assertEqual(
            mail_command(msg, {"SIZE": "100", "8BITMIME": "", "SMTPUTF8": "", "DSN": ""}),
            f"MAIL FROM:<bounce@example.com> SIZE={len(msg.body)} BODY=8BITMIME SMTPUTF8 "
            "RET=HDRS ENVID=id+3D1".encode())

    def test_rcpt_orcpt(self) -> None:
        """With DSN an ASCII address gets its own ORCPT; a UTF-8 one only a given ORCPT."""
        dsn = {"DSN": ""}
        self.assertEqual(rcpt_command(OutboundRecipient(1, "a@x.test"), dsn),
                         b"RCPT TO:<a@x.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@x.test")
        self.assertEqual(rcpt_command(OutboundRecipient(1, "\u00fc@x.test"), dsn),
                         "RCPT TO:<\u00fc@x.test> NOTIFY=FAILURE,DELAY".encode())
        self.assertEqual(rcpt_command(OutboundRecipient(1, "a@x.test"), {}),
                         b"RCPT TO:<a@x.test>")

    def test_refusals(self) -> None:
        """SMTPUTF8 not offered, over SIZE, unsafe sender: refused; else None."""
        self.assertEqual(refuse_locally(message("a@x.test", smtputf8=True), {}).status,
                         "5.6.7")  # type: ignore[union-attr]
        self.assertEqual(refuse_locally(message("a@x.test"), {"SIZE": "3"}).code,
                         552)  # type: ignore[union-attr]
        self.assertEqual(refuse_locally(message("a@x.test", mail_from="a\r\n@x"), {}).code,
                         501)  # type: ignore[union-attr]
        self.assertIsNone(refuse_locally(message("a@x.test"), {"SIZE": "0"}))

    def test_tls_policy_words(self) -> None:
        """A policy is a member or its word; anything else is a ValueError."""
        self.assertIs(tls_policy_of("verify"), TlsPolicy.verify)
        with self.assertRaises(ValueError):
            tls_policy_of("maybe")
