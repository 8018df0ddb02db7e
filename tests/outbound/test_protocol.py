"""The client on a StringTransport with a fake clock: every reply becomes data."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from hurricane.outbound.dataenc import encode_data
from hurricane.outbound.interface import (
    ConnectionFailed,
    OutboundMessage,
    OutboundRecipient,
    RecipientReply,
    Reply,
)
from hurricane.outbound.session import QUIT_TIMEOUT
from hurricane.outbound.wire import BODY_CHUNK, MAX_REPLY_LINE, SessionError

from .helpers import (
    BODY,
    EHLO_ALL,
    EHLO_PIPELINING,
    EHLO_PLAIN,
    TIMEOUTS,
    PausingTransport,
    Session,
    handshake,
    message,
    new_session,
    ready_session,
    send,
)


class _Base(SynchronousTestCase):
    """Common assertions."""

    def assert_clean(self, session: Session) -> None:
        """No timer is left behind."""
        self.assertEqual(session.clock.getDelayedCalls(), [])

    def handshake_failure(self, session: Session, d: defer.Deferred[Any]) -> ConnectionFailed:
        """The ConnectionFailed a handshake ended with."""
        return self.failureResultOf(d, ConnectionFailed).value  # type: ignore[return-value]


class HandshakeTests(_Base):
    """Greeting, EHLO and HELO."""

    def test_ehlo_and_extensions(self) -> None:
        """The greeting is answered with EHLO, and the extensions are parsed."""
        session = new_session()
        d = handshake(session)
        self.assertEqual(session.take(), b"")
        session.feed(b"220-mx.example.test ESMTP\r\n220 welcome\r\n")
        self.assertEqual(session.take(), b"EHLO client.example.org\r\n")
        session.feed(EHLO_ALL)
        self.successResultOf(d)
        conn = session.conn
        self.assertEqual(conn.info.greeting, "mx.example.test ESMTP\nwelcome")
        self.assertEqual(conn.extensions["SIZE"], "10485760")
        for keyword in ("PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"):
            self.assertIn(keyword, conn.extensions)
        self.assertIn("SIZE 10485760", conn.info.extensions)
        self.assertTrue(conn.usable)
        self.assert_clean(session)

    def test_helo_fallback(self) -> None:
        """A 500 or 502 to EHLO makes the client try HELO, with no extensions."""
        for code in (b"500", b"502"):
            with self.subTest(code=code):
                session = new_session()
                d = handshake(session)
                session.feed(b"220 old server\r\n")
                session.take()
                session.feed(code + b" what?\r\n")
                self.assertEqual(session.take(), b"HELO client.example.org\r\n")
                session.feed(b"250 hi\r\n")
                self.successResultOf(d)
                self.assertEqual(session.conn.extensions, {})
                self.assert_clean(session)

    def test_greeting_554_is_permanent(self) -> None:
        """A 554 greeting fails the connection permanently, with the reply."""
        session = new_session()
        d = handshake(session)
        session.feed(b"554 5.7.1 go away\r\n")
        failure = self.handshake_failure(session, d)
        self.assertEqual(failure.phase, "greeting")
        self.assertFalse(failure.temporary)
        self.assertEqual(failure.reply, Reply(554, "5.7.1", "go away"))
        self.assertEqual(session.take(), b"QUIT\r\n")
        self.assertTrue(session.transport.disconnecting)
        self.assertFalse(session.conn.usable)
        self.assert_clean(session)

    def test_greeting_421_is_temporary(self) -> None:
        """A 421 greeting fails the connection temporarily."""
        session = new_session()
        d = handshake(session)
        session.feed(b"421 busy\r\n")
        failure = self.handshake_failure(session, d)
        self.assertEqual((failure.phase, failure.temporary, failure.reply.code),
                         ("greeting", True, 421))
        self.assert_clean(session)

    def test_ehlo_refused(self) -> None:
        """EHLO refused with 550 (not a fallback code) fails in the ehlo phase."""
        session = new_session()
        d = handshake(session)
        session.feed(b"220 hi\r\n")
        session.feed(b"550 5.7.1 not you\r\n")
        failure = self.handshake_failure(session, d)
        self.assertEqual((failure.phase, failure.temporary), ("ehlo", False))
        self.assert_clean(session)

    def test_greeting_timeout(self) -> None:
        """No greeting within the greeting timeout fails with phase timeout."""
        session = new_session()
        d = handshake(session)
        session.clock.advance(TIMEOUTS.greeting - 0.5)
        self.assertNoResult(d)
        session.clock.advance(1)
        failure = self.handshake_failure(session, d)
        self.assertEqual((failure.phase, failure.reason), ("timeout", "networkerror"))
        self.assertTrue(session.transport.disconnecting)
        self.assert_clean(session)

    def test_ehlo_timeout(self) -> None:
        """The EHLO reply is waited for with the mail timeout."""
        session = new_session()
        d = handshake(session)
        session.feed(b"220 hi\r\n")
        session.clock.advance(TIMEOUTS.mail - 0.5)
        self.assertNoResult(d)
        session.clock.advance(1)
        self.assertEqual(self.handshake_failure(session, d).phase, "timeout")
        self.assert_clean(session)

    def test_garbage_greeting(self) -> None:
        """A greeting that is not a reply fails the connection."""
        session = new_session()
        d = handshake(session)
        session.feed(b"HTTP/1.1 400 Bad Request\r\n")
        failure = self.handshake_failure(session, d)
        self.assertEqual(failure.phase, "greeting")
        self.assertIsNone(failure.reply)
        self.assert_clean(session)

    def test_connection_lost_before_greeting(self) -> None:
        """A connection closed before the greeting fails in the greeting phase."""
        session = new_session()
        d = handshake(session)
        session.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.handshake_failure(session, d).phase, "greeting")
        self.assert_clean(session)


class StartTLSTests(_Base):
    """STARTTLS per policy, on a fake transport."""

    def test_injection_after_220_is_discarded(self) -> None:
        """A fake EHLO reply sent with the 220 to STARTTLS is not taken as the post-TLS EHLO."""
        session = new_session()
        options = object()
        d = handshake(session, "require", lambda: options)
        session.feed(b"220 hi\r\n")
        session.feed(b"250-mx Hello\r\n250 STARTTLS\r\n")
        self.assertEqual(session.take(), b"EHLO client.example.org\r\nSTARTTLS\r\n")
        session.feed(b"220 go ahead\r\n250 fake-ehlo\r\n")
        self.assertEqual(session.transport.tls_started, [options])
        # Always EHLO again inside TLS; the injected line did not answer it.
        self.assertEqual(session.take(), b"EHLO client.example.org\r\n")
        self.assertNoResult(d)
        session.feed(b"250-mx.example.test Hello again\r\n250 8BITMIME\r\n")
        self.successResultOf(d)
        self.assertEqual(session.conn.extensions, {"8BITMIME": ""})
        self.assertEqual(session.conn.info.tls, "TLS")
        self.assertFalse(session.conn.info.tls_verified)
        self.assert_clean(session)

    def test_require_without_starttls(self) -> None:
        """require fails with failedstarttls when STARTTLS is not offered."""
        session = new_session()
        d = handshake(session, "require")
        session.feed(b"220 hi\r\n" + EHLO_PLAIN)
        failure = self.handshake_failure(session, d)
        self.assertEqual((failure.phase, failure.reason, failure.temporary),
                         ("starttls", "failedstarttls", True))
        self.assertEqual(session.transport.tls_started, [])
        self.assert_clean(session)

    def test_opportunistic_without_starttls(self) -> None:
        """opportunistic goes on in plain text when STARTTLS is not offered."""
        session = new_session()
        d = handshake(session, "opportunistic")
        session.feed(b"220 hi\r\n" + EHLO_PLAIN)
        self.successResultOf(d)
        self.assertIsNone(session.conn.info.tls)
        self.assert_clean(session)

    def test_starttls_refused(self) -> None:
        """A 454 to STARTTLS: opportunistic goes on in plain text, require fails."""
        for policy in ("opportunistic", "require"):
            with self.subTest(policy=policy):
                session = new_session()
                d = handshake(session, policy)
                session.feed(b"220 hi\r\n250-mx\r\n250 STARTTLS\r\n")
                session.feed(b"454 4.7.0 TLS not available\r\n")
                if policy == "opportunistic":
                    self.successResultOf(d)
                    self.assertTrue(session.conn.usable)
                else:
                    failure = self.handshake_failure(session, d)
                    self.assertEqual((failure.reason, failure.reply.code), ("failedstarttls", 454))
                self.assertEqual(session.transport.tls_started, [])
                self.assert_clean(session)

    def test_handshake_failure(self) -> None:
        """A connection lost during the TLS handshake is failedstarttls."""
        session = new_session()
        d = handshake(session, "opportunistic")
        session.feed(b"220 hi\r\n250-mx\r\n250 STARTTLS\r\n220 go\r\n")
        session.proto.connectionLost(Failure(ConnectionDone("handshake failure")))
        failure = self.handshake_failure(session, d)
        self.assertEqual((failure.phase, failure.reason), ("starttls", "failedstarttls"))
        self.assert_clean(session)

    def test_none_never_starts_tls(self) -> None:
        """Policy none ignores an offered STARTTLS."""
        session = new_session()
        d = handshake(session, "none")
        session.feed(b"220 hi\r\n250-mx\r\n250 STARTTLS\r\n")
        self.successResultOf(d)
        self.assertEqual(session.take(), b"EHLO client.example.org\r\n")
        self.assert_clean(session)


class TransactionTests(_Base):
    """MAIL, RCPT, DATA and the per-recipient outcome."""

    def test_pipelined_transaction(self) -> None:
        """With PIPELINING, MAIL, RCPTs and DATA go in one write; body after 354."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test"))
        self.assertEqual(
            session.take(),
            b"MAIL FROM:<bounce@example.com>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
            b"DATA\r\n",
        )
        session.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n")
        self.assertEqual(session.take(), b"")
        session.feed(b"354 go\r\n")
        self.assertEqual(session.take(), encode_data(BODY))
        session.feed(b"250 2.0.0 queued as X\r\n")
        result = self.successResultOf(d)
        reply = Reply(250, "2.0.0", "queued as X")
        self.assertEqual(result, [RecipientReply(1, reply, "dot"), RecipientReply(2, reply, "dot")])
        self.assertTrue(all(r.delivered for r in result))
        self.assertTrue(session.conn.usable)
        self.assert_clean(session)

    def test_lockstep_transaction(self) -> None:
        """Without PIPELINING each command waits for the previous reply."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test", "b@x.test"))
        self.assertEqual(session.take(), b"MAIL FROM:<bounce@example.com>\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(session.take(), b"RCPT TO:<a@x.test>\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(session.take(), b"RCPT TO:<b@x.test>\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(session.take(), b"DATA\r\n")
        session.feed(b"354 go\r\n")
        self.assertEqual(session.take(), encode_data(BODY))
        session.feed(b"250 ok\r\n")
        self.assertTrue(all(r.delivered for r in self.successResultOf(d)))
        self.assert_clean(session)

    def test_esmtp_parameters(self) -> None:
        """SIZE, BODY=8BITMIME, SMTPUTF8, RET/ENVID, NOTIFY and ORCPT when offered."""
        session = ready_session(EHLO_ALL)
        msg = OutboundMessage(
            mail_from="b+1@example.com",
            recipients=(
                OutboundRecipient(1, "a@x.test"),
                OutboundRecipient(2, "ü@x.test", orcpt="rfc822;b=c@x.test"),
            ),
            body=BODY, envid="h1k+id=7", eight_bit=True, smtputf8=True,
        )
        send(session, msg)
        self.assertEqual(
            session.take().decode("utf-8").split("\r\n"),
            [
                f"MAIL FROM:<b+1@example.com> SIZE={len(BODY)} BODY=8BITMIME SMTPUTF8 RET=HDRS "
                "ENVID=h1k+2Bid+3D7",
                "RCPT TO:<a@x.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;a@x.test",
                "RCPT TO:<ü@x.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+3Dc@x.test",
                "DATA",
                "",
            ],
        )
        session.proto.fail(SessionError("test over", "data"))
        self.assert_clean(session)

    def test_no_parameters_when_not_offered(self) -> None:
        """A plain server gets bare MAIL and RCPT commands."""
        session = ready_session(EHLO_PLAIN)
        send(session, message("a@x.test", eight_bit=True, envid="e"))
        self.assertEqual(session.take(), b"MAIL FROM:<bounce@example.com>\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(session.take(), b"RCPT TO:<a@x.test>\r\n")
        session.feed(b"421 bye\r\n")
        self.assert_clean(session)

    def test_smtputf8_not_offered(self) -> None:
        """A message needing SMTPUTF8 to a server without it fails permanently, unsent."""
        session = ready_session(EHLO_PIPELINING)
        result = self.successResultOf(send(session, message("ü@x.test", "b@x.test", smtputf8=True)))
        self.assertEqual([r.phase for r in result], ["mail", "mail"])
        self.assertEqual([r.reply.code for r in result], [553, 553])
        self.assertEqual(result[0].reply.status, "5.6.7")
        self.assertEqual(session.take(), b"")
        self.assertTrue(session.conn.usable)
        self.assert_clean(session)

    def test_size_over_limit(self) -> None:
        """A body over the announced SIZE is refused locally with 552 5.3.4."""
        session = ready_session(b"250-mx\r\n250 SIZE 10\r\n")
        result = self.successResultOf(send(session, message("a@x.test")))
        self.assertEqual((result[0].reply.code, result[0].reply.status), (552, "5.3.4"))
        self.assertEqual(session.take(), b"")
        self.assert_clean(session)

    def test_mixed_recipient_replies(self) -> None:
        """250, 550 and 451 RCPT replies each decide their own recipient."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test", "c@x.test"))
        session.take()
        session.feed(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n451-4.3.0 try\r\n451 later\r\n"
                     b"354 go\r\n")
        session.take()
        session.feed(b"250 2.0.0 ok\r\n")
        result = self.successResultOf(d)
        self.assertEqual(result[0], RecipientReply(1, Reply(250, "2.0.0", "ok"), "dot"))
        self.assertEqual(result[1],
                         RecipientReply(2, Reply(550, "5.1.1", "no such user"), "rcpt"))
        self.assertEqual(result[2],
                         RecipientReply(3, Reply(451, "4.3.0", "try\nlater"), "rcpt"))
        self.assertEqual([r.delivered for r in result], [True, False, False])
        self.assert_clean(session)

    def test_all_recipients_refused_pipelined(self) -> None:
        """All RCPTs refused and DATA refused: RSET, no body."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test"))
        session.take()
        session.feed(b"250 ok\r\n550 no\r\n550 no\r\n554 no valid recipients\r\n")
        self.assertEqual(session.take(), b"RSET\r\n")
        session.feed(b"250 reset\r\n")
        result = self.successResultOf(d)
        self.assertEqual([(r.reply.code, r.phase) for r in result], [(550, "rcpt"), (550, "rcpt")])
        self.assertTrue(session.conn.usable)
        # The RSET already closed the transaction: the next one starts with MAIL.
        send(session, message("c@x.test"))
        self.assertTrue(session.take().startswith(b"MAIL FROM:"))
        session.feed(b"421 bye\r\n")
        self.assert_clean(session)

    def test_all_recipients_refused_but_data_accepted(self) -> None:
        """All RCPTs refused but 354 to the pipelined DATA: a lone dot, no body (RFC 2920)."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.take()
        session.feed(b"250 ok\r\n550 no\r\n354 go\r\n")
        self.assertEqual(session.take(), b".\r\n")
        session.feed(b"554 no valid recipients\r\n")
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply.code, result[0].phase), (550, "rcpt"))
        self.assertTrue(session.conn.usable)
        self.assert_clean(session)

    def test_all_recipients_refused_lockstep(self) -> None:
        """Without pipelining, all RCPTs refused means RSET instead of DATA."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test"))
        session.take()
        session.feed(b"250 ok\r\n")
        session.take()
        session.feed(b"550 5.1.1 unknown\r\n")
        self.assertEqual(session.take(), b"RSET\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(self.successResultOf(d)[0].phase, "rcpt")
        self.assert_clean(session)

    def test_mail_refused(self) -> None:
        """A refused MAIL decides every recipient with phase mail."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test", "b@x.test"))
        session.take()
        session.feed(b"550 5.7.1 sender blocked\r\n")
        result = self.successResultOf(d)
        self.assertEqual([(r.reply.code, r.phase) for r in result], [(550, "mail"), (550, "mail")])
        self.assertEqual(session.take(), b"")
        self.assert_clean(session)

    def test_552_after_dot(self) -> None:
        """A 552 after the dot fails every accepted recipient in phase dot."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test"))
        session.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        session.feed(b"552 5.3.4 too big\r\n")
        result = self.successResultOf(d)
        self.assertEqual([(r.reply.code, r.phase) for r in result], [(552, "dot"), (552, "dot")])
        self.assertFalse(any(r.delivered for r in result))
        self.assertTrue(session.conn.usable)
        self.assert_clean(session)

    def test_data_refused(self) -> None:
        """A 451 to DATA decides accepted recipients in phase data, then RSET."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.take()
        session.feed(b"250 ok\r\n250 ok\r\n451 4.3.0 later\r\n")
        self.assertEqual(session.take(), b"RSET\r\n")
        session.feed(b"250 ok\r\n")
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply.code, result[0].phase), (451, "data"))
        self.assert_clean(session)

    def test_421_mid_session(self) -> None:
        """A 421 to an RCPT decides every undecided recipient with it and ends the session."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test", "b@x.test", "c@x.test"))
        session.feed(b"250 ok\r\n")
        session.feed(b"550 5.1.1 unknown\r\n")
        session.feed(b"421 4.4.2 closing\r\n")
        result = self.successResultOf(d)
        self.assertEqual([(r.reply.code, r.phase) for r in result],
                         [(550, "rcpt"), (421, "rcpt"), (421, "rcpt")])
        self.assertFalse(session.conn.usable)
        self.assertTrue(session.transport.disconnecting)
        self.assert_clean(session)

    def test_421_pipelined(self) -> None:
        """A 421 to a pipelined MAIL ends the session without waiting for more replies."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test"))
        session.feed(b"421 4.7.0 too many connections\r\n")
        result = self.successResultOf(d)
        self.assertEqual([(r.reply.code, r.phase) for r in result], [(421, "mail"), (421, "mail")])
        self.assertFalse(session.conn.usable)
        self.assert_clean(session)

    def test_unsolicited_421_between_transactions(self) -> None:
        """A 421 while idle makes the connection unusable at once."""
        session = ready_session(EHLO_PIPELINING)
        session.feed(b"421 4.4.2 idle timeout\r\n")
        self.assertFalse(session.conn.usable)
        result = self.successResultOf(send(session, message("a@x.test")))
        self.assertIsNone(result[0].reply)
        self.assertEqual(session.take(), b"")
        self.assert_clean(session)

    def test_garbage_reply(self) -> None:
        """A reply that is not three digits fails the undecided recipients and the connection."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test", "b@x.test"))
        session.feed(b"250 ok\r\n550 no\r\nxyz garbage\r\n")
        result = self.successResultOf(d)
        self.assertEqual(result[0].reply.code, 550)
        self.assertEqual((result[1].reply, result[1].phase), (None, "rcpt"))
        self.assertIn("garbage", result[1].error)
        self.assertFalse(session.conn.usable)
        self.assertTrue(session.transport.disconnected)
        self.assert_clean(session)

    def test_overlong_reply_line(self) -> None:
        """A reply line over 4 KiB (even unterminated) kills the session."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test"))
        session.feed(b"250 " + b"x" * MAX_REPLY_LINE)
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply, result[0].phase), (None, "mail"))
        self.assertIn("longer", result[0].error)
        self.assertFalse(session.conn.usable)
        self.assert_clean(session)

    def test_connection_lost_mid_data(self) -> None:
        """A connection lost while the body is streaming leaves reply None and an error."""
        session = ready_session(EHLO_PIPELINING, transport=PausingTransport())
        d = send(session, message("a@x.test", body=b"line\r\n" * (3 * BODY_CHUNK // 6)))
        session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertIsNotNone(session.transport.producer)
        session.proto.connectionLost(Failure(ConnectionDone()))
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply, result[0].phase), (None, "data"))
        self.assertIn("connection lost", result[0].error)
        self.assertFalse(session.conn.usable)
        self.assert_clean(session)

    def test_connection_lost_waiting_for_dot_reply(self) -> None:
        """A connection lost after the dot leaves the recipient undecided (phase dot)."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
        session.proto.connectionLost(Failure(ConnectionDone()))
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply, result[0].phase), (None, "dot"))
        self.assert_clean(session)

    def test_rset_between_transactions(self) -> None:
        """The second transaction starts with RSET (pipelined with MAIL when offered)."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        self.successResultOf(d)
        session.take()
        d = send(session, message("b@x.test"))
        self.assertEqual(
            session.take(),
            b"RSET\r\nMAIL FROM:<bounce@example.com>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
        )
        session.feed(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        self.assertTrue(self.successResultOf(d)[0].delivered)
        self.assertEqual(session.conn.transactions, 2)
        self.assert_clean(session)

    def test_rset_between_transactions_lockstep(self) -> None:
        """Without pipelining the RSET is answered before MAIL is sent."""
        session = ready_session(EHLO_PLAIN)
        d = send(session, message("a@x.test"))
        for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 ok\r\n"):
            session.feed(reply)
        self.successResultOf(d)
        session.take()
        d = send(session, message("b@x.test"))
        self.assertEqual(session.take(), b"RSET\r\n")
        session.feed(b"250 ok\r\n")
        self.assertEqual(session.take(), b"MAIL FROM:<bounce@example.com>\r\n")
        session.feed(b"421 bye\r\n")
        self.assertEqual(self.successResultOf(d)[0].reply.code, 421)
        self.assert_clean(session)

    def test_large_body_is_streamed(self) -> None:
        """A body larger than one chunk goes through the producer, paused and resumed."""
        body = b"".join(b".line %d\n" % i for i in range(200_000))  # about 2.3 MB
        session = ready_session(EHLO_PIPELINING, transport=PausingTransport())
        d = send(session, message("a@x.test", body=body))
        session.take()
        session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
        producer = session.transport.producer
        while session.transport.producer is not None:
            producer.resumeProducing()
        self.assertEqual(session.take(), encode_data(body))
        session.feed(b"250 ok\r\n")
        self.assertTrue(self.successResultOf(d)[0].delivered)
        self.assert_clean(session)

    def test_command_injection_in_address_is_refused(self) -> None:
        """An address with CR/LF is never written; it gets a synthesised 501."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test\r\nRSET", "b@x.test"))
        wire = session.take()
        self.assertNotIn(b"RSET", wire)
        session.feed(b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply.code, result[0].phase), (501, "rcpt"))
        self.assertTrue(result[1].delivered)
        self.assert_clean(session)


class TimeoutTests(_Base):
    """RFC 5321 4.5.3.2 timeouts on the fake clock."""

    def _timeout(self, ehlo: bytes, replies: list[bytes], timeout: float, phase: str,
                 transport: Any = None, body: bytes = BODY) -> None:
        session = ready_session(ehlo, transport=transport)
        d = send(session, message("a@x.test", body=body))
        for reply in replies:
            session.feed(reply)
        session.clock.advance(timeout - 0.5)
        self.assertNoResult(d)
        session.clock.advance(1)
        result = self.successResultOf(d)
        self.assertEqual((result[0].reply, result[0].phase), (None, "timeout"))
        self.assertIn(phase, result[0].error)
        self.assertFalse(session.conn.usable)
        self.assertTrue(session.transport.disconnected)
        self.assert_clean(session)

    def test_mail_timeout(self) -> None:
        """No MAIL reply within the mail timeout."""
        self._timeout(EHLO_PLAIN, [], TIMEOUTS.mail, "mail")

    def test_rcpt_timeout(self) -> None:
        """No RCPT reply within the rcpt timeout."""
        self._timeout(EHLO_PLAIN, [b"250 ok\r\n"], TIMEOUTS.rcpt, "rcpt")

    def test_data_init_timeout(self) -> None:
        """No DATA reply within the data_init timeout."""
        self._timeout(EHLO_PLAIN, [b"250 ok\r\n", b"250 ok\r\n"], TIMEOUTS.data_init, "data")

    def test_data_block_timeout(self) -> None:
        """A body stalled (transport paused) for data_block seconds times out."""
        self._timeout(EHLO_PIPELINING, [b"250 ok\r\n250 ok\r\n354 go\r\n"], TIMEOUTS.data_block,
                      "body", transport=PausingTransport(), body=b"x\r\n" * BODY_CHUNK)

    def test_data_end_timeout(self) -> None:
        """No reply after the dot within the data_end timeout."""
        self._timeout(EHLO_PIPELINING, [b"250 ok\r\n250 ok\r\n354 go\r\n"], TIMEOUTS.data_end,
                      "dot")

    def test_pipelined_replies_restart_the_timer(self) -> None:
        """Each pipelined reply restarts the timer for the next one."""
        session = ready_session(EHLO_PIPELINING)
        d = send(session, message("a@x.test"))
        session.clock.advance(TIMEOUTS.mail - 1)
        session.feed(b"250 ok\r\n")
        session.clock.advance(TIMEOUTS.rcpt - 1)
        session.feed(b"250 ok\r\n")
        session.clock.advance(TIMEOUTS.data_init - 1)
        session.feed(b"354 go\r\n250 ok\r\n")
        self.assertTrue(self.successResultOf(d)[0].delivered)
        self.assert_clean(session)


class CloseTests(_Base):
    """QUIT and close."""

    def test_close_sends_quit(self) -> None:
        """close() sends QUIT, waits for 221, then closes the transport."""
        session = ready_session(EHLO_PLAIN)
        d = defer.Deferred.fromCoroutine(session.conn.close())
        self.assertEqual(session.take(), b"QUIT\r\n")
        self.assertNoResult(d)
        session.feed(b"221 bye\r\n")
        self.successResultOf(d)
        self.assertTrue(session.transport.disconnecting)
        self.assertFalse(session.conn.usable)
        self.assert_clean(session)

    def test_close_is_bounded(self) -> None:
        """close() gives up waiting for the QUIT reply after a few seconds."""
        session = ready_session(EHLO_PLAIN)
        d = defer.Deferred.fromCoroutine(session.conn.close())
        session.clock.advance(QUIT_TIMEOUT + 0.1)
        self.successResultOf(d)
        self.assertTrue(session.transport.disconnecting)
        self.assert_clean(session)

    def test_send_after_close(self) -> None:
        """A closed connection answers every recipient with an error, sending nothing."""
        session = ready_session(EHLO_PLAIN)
        d = defer.Deferred.fromCoroutine(session.conn.close())
        session.feed(b"221 bye\r\n")
        self.successResultOf(d)
        session.take()
        result = self.successResultOf(send(session, message("a@x.test")))
        self.assertEqual((result[0].reply, result[0].error), (None, "connection not usable"))
        self.assertEqual(session.take(), b"")
        self.assert_clean(session)
