"""HardenedESMTP on a StringTransport: each library trap of DESIGN.md, defended."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.smtpd.protocol import HardenedESMTP, ServerState
from hurricane.smtpd.reply import Reply
from tests.smtpd.helpers import (
    ENHANCED_RE,
    RecordingFactory,
    TLSStringTransport,
    codes,
    connect,
    disconnect,
    keywords,
    replies,
)


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        # Registered first, so it runs after every disconnect cleanup.
        self.addCleanup(lambda: self.assertEqual(self.clock.getDelayedCalls(), []))

    def start(self, tls: bool = False, ip: str = "203.0.113.5",
              factory: RecordingFactory | None = None, **limits: object):
        self.factory = factory or RecordingFactory(
            self.clock, tls_context=object() if tls else None, **limits)
        proto, transport = connect(self.factory, ip=ip, tls=tls)
        self.addCleanup(lambda: None if proto.lost else disconnect(proto))
        replies(transport)  # the greeting
        return proto, transport

    def ehlo(self, proto: HardenedESMTP, transport) -> None:
        proto.dataReceived(b"EHLO client.example\r\n")
        replies(transport)


class StartTLSTests(_Base):
    def test_pipelined_commands_after_starttls_are_discarded(self) -> None:
        """Commands sent in the same read as STARTTLS are never executed (CVE-2011-0411)."""
        proto, t = self.start(tls=True)
        self.ehlo(proto, t)
        proto.dataReceived(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n"
                           b"RCPT TO:<victim@example.com>\r\n")
        self.assertEqual(replies(t), [b"220 2.0.0 Ready to start TLS"])
        self.assertIsNotNone(t.tls_context)
        self.assertIsNone(proto.transaction)

    def test_220_written_before_the_handshake(self) -> None:
        """The 220 goes out in clear text before TLS starts, not held for the read's end."""
        proto, t = self.start(tls=True)
        self.ehlo(proto, t)
        proto.dataReceived(b"NOOP\r\nSTARTTLS\r\n")
        self.assertEqual(t.written_before_tls,
                         b"250 2.0.0 Ok\r\n220 2.0.0 Ready to start TLS\r\n")

    def test_session_reset_after_starttls(self) -> None:
        """After STARTTLS the client must EHLO again, and no transaction survives."""
        proto, t = self.start(tls=True)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        replies(t)
        proto.dataReceived(b"STARTTLS\r\n")
        replies(t)
        proto.dataReceived(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(codes(replies(t)), [b"503 5.5.1"])
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(replies(t), [b"503 5.5.1 Error: send HELO/EHLO first"])
        proto.dataReceived(b"EHLO client.example\r\n")
        self.assertNotIn(b"STARTTLS", keywords(replies(t)))

    def test_starttls_advertised_only_with_a_context(self) -> None:
        """STARTTLS is listed and usable only when a TLS context is configured."""
        proto, t = self.start(tls=False)
        proto.dataReceived(b"EHLO client.example\r\n")
        self.assertFalse(any(b"STARTTLS" in line for line in replies(t)))
        proto.dataReceived(b"STARTTLS\r\n")
        self.assertEqual(codes(replies(t)), [b"454 4.7.0"])
        proto2, t2 = self.start(tls=True, factory=None)
        proto2.dataReceived(b"EHLO client.example\r\n")
        self.assertIn(b"STARTTLS", keywords(replies(t2)))


class LineLengthTests(_Base):
    def test_unterminated_input_closes(self) -> None:
        """More than 4 KiB without a line ending gets 500 5.5.6 and the connection closes."""
        proto, t = self.start()
        proto.dataReceived(b"A" * 4000)
        self.assertFalse(t.disconnecting)
        proto.dataReceived(b"A" * 200)
        self.assertEqual(codes(replies(t)), [b"500 5.5.6"])
        self.assertTrue(t.disconnecting)

    def test_long_command_line_is_refused_and_session_goes_on(self) -> None:
        """A complete command line over 2 KiB gets 500 5.5.2; the next command works."""
        proto, t = self.start()
        proto.dataReceived(b"NOOP " + b"x" * 2100 + b"\r\nNOOP\r\n")
        self.assertEqual(codes(replies(t)), [b"500 5.5.2", b"250 2.0.0"])
        self.assertFalse(t.disconnecting)

    def test_long_line_in_data_stays_in_data(self) -> None:
        """An over-long DATA line never drops back into command mode; 554 5.3.4 after the dot."""
        proto, t = self.start(max_data_line_length=1000)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        self.assertEqual(codes(replies(t))[-1][:3], b"354")
        proto.dataReceived(b"Subject: x\r\n\r\n" + b"B" * 20000 + b"\r\n")
        # Stock Twisted would execute these as commands now.
        proto.dataReceived(b"RSET\r\nMAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.com>\r\n")
        self.assertEqual(replies(t), [])
        proto.dataReceived(b".\r\n")
        self.assertEqual(codes(replies(t)), [b"554 5.3.4"])
        self.assertEqual(self.factory.messages, [])
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.0.0"])

    def test_long_unterminated_data_does_not_close(self) -> None:
        """Unterminated input inside DATA is discarded, not buffered, and does not close."""
        proto, t = self.start(max_data_line_length=1000)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        replies(t)
        for _ in range(10):
            proto.dataReceived(b"C" * 5000)
        self.assertFalse(t.disconnecting)
        self.assertLess(len(proto.input_buffer) + len(proto.reader._partial), 1002)
        # The dot right after the long line is still inside that line.
        proto.dataReceived(b".\r\nstill data\r\n.\r\n")
        self.assertEqual(codes(replies(t)), [b"554 5.3.4"])


class HeloTests(_Base):
    def test_bare_lf_in_helo_is_refused(self) -> None:
        """A bare LF in EHLO is refused and never reaches a Received header."""
        proto, t = self.start()
        proto.dataReceived(b"EHLO client.example\nX-Injected: yes\r\n")
        self.assertEqual(codes(replies(t)), [b"500 5.5.2"])
        self.assertIsNone(proto.session.helo)

    def test_invalid_helo_arguments(self) -> None:
        """HELO/EHLO take one domain or address literal; others get 501 5.5.4."""
        proto, t = self.start()
        for bad in (b"", b"two words", b"<script>", b"a..b", b"[300.1.1.1]", b"-bad-.example",
                    b"x" * 300):
            proto.dataReceived(b"HELO " + bad + b"\r\n")
            self.assertEqual(codes(replies(t)), [b"501 5.5.4"], bad)
            proto.errors = 0
        for good in (b"client.example", b"[192.0.2.1]", b"[IPv6:2001:db8::1]", b"localhost",
                     b"WIN_HOST.corp.example."):
            proto.dataReceived(b"HELO " + good + b"\r\n")
            self.assertEqual(replies(t)[0][:4], b"250 ", good)

    def test_received_header_uses_validated_helo(self) -> None:
        """The Received header names the HELO and the peer's IP."""
        proto, t = self.start()
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        (envelope, data), = self.factory.messages
        first = data.split(b"\r\n\t", 1)[0]
        self.assertEqual(first, b"Received: from client.example ([203.0.113.5])")
        self.assertTrue(data.endswith(b"Subject: hi\r\n\r\nbody\r\n"))


class EndOfDataTests(_Base):
    def send_body(self, body: bytes, **limits: object):
        proto, t = self.start(**limits)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        replies(t)
        proto.dataReceived(body)
        return proto, t

    def test_smuggling_sequences_do_not_end_data(self) -> None:
        """\\n.\\n, \\r.\\r and \\r\\n.\\n never end DATA (CVE-2023-51764 family)."""
        for marker in (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"):
            proto, t = self.send_body(b"Subject: x\r\n\r\nhello" + marker
                                      + b"MAIL FROM:<smuggled@example.com>\r\n")
            self.assertEqual(replies(t), [], marker)
            proto.dataReceived(b"end\r\n.\r\n")
            self.assertEqual(codes(replies(t)), [b"550 5.6.2"], marker)
            self.assertEqual(self.factory.messages, [])
            disconnect(proto)

    def test_bare_line_endings_normalised_when_configured(self) -> None:
        """With normalising on, bare CR/LF become CRLF and the smuggled text stays body."""
        proto, t = self.send_body(b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<s@example.com>\r\n"
                                  b".\r\n", reject_bare_line_endings=False)
        self.assertEqual(codes(replies(t)), [b"250 2.0.0"])
        (_, data), = self.factory.messages
        self.assertTrue(data.endswith(b"hello\r\n.\r\nMAIL FROM:<s@example.com>\r\n"))

    def test_dot_unstuffing_and_empty_first_line(self) -> None:
        """Leading dots are unstuffed; a dot right after DATA is an empty message."""
        proto, t = self.send_body(b"..leading dot\r\n.\r\n")
        self.assertEqual(self.factory.messages[-1][1].split(b"\r\n")[-2], b".leading dot")
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b".\r\n")
        self.assertEqual(codes(replies(t))[-1], b"250 2.0.0")

    def test_body_in_several_reads(self) -> None:
        """CRLF.CRLF split across reads still ends the message exactly once."""
        proto, t = self.send_body(b"line one\r")
        for piece in (b"\n", b".", b"\r", b"\n"):
            proto.dataReceived(piece)
        self.assertEqual(codes(replies(t)), [b"250 2.0.0"])
        self.assertTrue(self.factory.messages[0][1].endswith(b"\r\nline one\r\n"))


class SizeAndRecipientTests(_Base):
    def test_size_advertised_and_mail_size_enforced(self) -> None:
        """EHLO advertises SIZE; MAIL with a larger SIZE= gets 552 5.3.4."""
        proto, t = self.start(max_message_size=1000)
        proto.dataReceived(b"EHLO client.example\r\n")
        self.assertIn(b"SIZE 1000", keywords(replies(t)))
        proto.dataReceived(b"MAIL FROM:<a@example.com> SIZE=1001\r\n")
        self.assertEqual(codes(replies(t)), [b"552 5.3.4"])
        proto.dataReceived(b"MAIL FROM:<a@example.com> SIZE=999 BODY=8BITMIME\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0"])

    def test_oversized_body_discarded_while_reading(self) -> None:
        """A body over the limit is dropped as it arrives and answered 552 5.3.4."""
        proto, t = self.start(max_message_size=1000)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        replies(t)
        for _ in range(100):
            proto.dataReceived(b"x" * 78 + b"\r\n")
        self.assertEqual(len(proto.reader.message()), 0)
        proto.dataReceived(b".\r\n")
        self.assertEqual(codes(replies(t)), [b"552 5.3.4"])
        self.assertEqual(self.factory.messages, [])

    def test_recipient_limit(self) -> None:
        """Recipients beyond the per-transaction limit get 452 4.5.3."""
        proto, t = self.start(max_recipients=2)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n" + b"".join(
            b"RCPT TO:<r%d@example.com>\r\n" % i for i in range(3)))
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                             b"452 4.5.3"])

    def test_bad_parameters(self) -> None:
        """Unknown MAIL/RCPT parameters get 555 5.5.4 and malformed ones 501 5.5.4."""
        proto, t = self.start()
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n"
                           b"MAIL FROM:<a@example.com> SIZE=abc\r\n"
                           b"MAIL FROM:<a@example.com>\r\n"
                           b"RCPT TO:<b@example.com> NOTIFY=NEVER\r\n")
        self.assertEqual(codes(replies(t)), [b"555 5.5.4", b"501 5.5.4", b"250 2.1.0",
                                             b"555 5.5.4"])


class ErrorsAndTimeoutTests(_Base):
    def test_too_many_errors_closes(self) -> None:
        """After max_errors error replies the server says 421 4.7.0 and closes."""
        proto, t = self.start(max_errors=3)
        proto.dataReceived(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
        self.assertEqual(codes(replies(t)), [b"500 5.5.2", b"500 5.5.2", b"500 5.5.2",
                                             b"421 4.7.0"])
        self.assertTrue(t.disconnecting)

    def test_idle_timeout(self) -> None:
        """With no command for idle_timeout seconds: 421 4.4.2 and close."""
        proto, t = self.start(idle_timeout=30)
        self.clock.advance(29)
        proto.dataReceived(b"NOOP\r\n")
        replies(t)
        self.clock.advance(29)
        self.assertFalse(t.disconnecting)
        self.clock.advance(1)
        self.assertEqual(codes(replies(t)), [b"421 4.4.2"])
        self.assertTrue(t.disconnecting)
        disconnect(proto)

    def test_no_timeout_while_waiting_for_the_store(self) -> None:
        """The idle timer stops while the owner is working on the final dot."""
        proto, t = self.start(idle_timeout=30)
        pending: defer.Deferred[Reply] = defer.Deferred()
        self.factory.on_message = lambda e, d: pending
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"x\r\n.\r\n")
        replies(t)
        self.clock.advance(100)
        self.assertFalse(t.disconnecting)
        pending.callback(Reply(250, "2.0.0", "Ok"))
        self.assertEqual(codes(replies(t)), [b"250 2.0.0"])

    def test_connection_limits(self) -> None:
        """Connections beyond the per-IP and total limits get 421 4.7.0 at greeting."""
        factory = RecordingFactory(self.clock, max_connections_per_ip=2, max_connections=3)
        p1, _ = connect(factory, "198.51.100.1")
        p2, _ = connect(factory, "198.51.100.1")
        p3, t3 = connect(factory, "198.51.100.1")
        self.assertEqual(codes(replies(t3)), [b"421 4.7.0"])
        self.assertTrue(t3.disconnecting)
        disconnect(p3)
        p4, t4 = connect(factory, "198.51.100.2")
        self.assertEqual(replies(t4)[0][:4], b"220 ")
        p5, t5 = connect(factory, "198.51.100.3")
        self.assertEqual(codes(replies(t5)), [b"421 4.7.0"])
        disconnect(p5)
        disconnect(p1)
        p6, t6 = connect(factory, "198.51.100.1")
        self.assertEqual(replies(t6)[0][:4], b"220 ")
        for p in (p2, p4, p6):
            disconnect(p)
        self.assertEqual(factory.connections.count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class EnhancedStatusTests(_Base):
    def test_every_reply_has_an_enhanced_code(self) -> None:
        """All 2xx/4xx/5xx replies but the greeting and EHLO carry an enhanced status code."""
        proto, t = self.start(max_errors=100)
        proto.dataReceived(b"EHLO client.example\r\n")
        self.assertIn(b"ENHANCEDSTATUSCODES", keywords(replies(t)))
        proto.dataReceived(
            b"MAIL FROM:<a@example.com>\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<>\r\n"
            b"RCPT TO:<b@example.com>\r\nRCPT TO:bad address\r\nRSET\r\nNOOP\r\nVRFY x\r\n"
            b"EXPN x\r\nHELP\r\nDATA\r\nRCPT TO:<b@example.com>\r\nFOO\r\nAUTH PLAIN\r\n"
            b"MAIL FROM:<a@@b>\r\nMAIL\r\nHELO\r\nQUIT\r\n")
        lines = replies(t)
        self.assertGreater(len(lines), 15)
        for line in lines:
            self.assertRegex(line, ENHANCED_RE)


class PipeliningTests(_Base):
    def test_pipelined_transaction_with_async_validation(self) -> None:
        """Input pauses while MAIL validation is pending, so pipelined RCPT/DATA still work.

        What was read with the command waits in the buffer; reading itself
        stops once more input comes while the answer is pending.
        """
        proto, t = self.start()
        self.ehlo(proto, t)
        pending: defer.Deferred[Reply] = defer.Deferred()
        self.factory.on_sender = lambda p: pending
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n")
        self.assertEqual(replies(t), [])
        self.assertEqual(t.producerState, "producing")  # nothing more came yet
        proto.dataReceived(b"RCPT TO:<c@example.com>\r\nDATA\r\n")
        self.assertEqual(replies(t), [])
        self.assertEqual(t.producerState, "paused")
        pending.callback(Reply(250, "2.1.0", "Ok"))
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.1.5",
                                             b"354 End"])
        self.assertEqual(t.producerState, "producing")

    def test_pipelined_async_recipients_then_data(self) -> None:
        """Asynchronous RCPT answers keep their order, and DATA waits for them."""
        proto, t = self.start()
        self.ehlo(proto, t)
        waits: list[defer.Deferred[object]] = []

        def later(p: object) -> defer.Deferred[object]:
            waits.append(defer.Deferred())
            return waits[-1]

        self.factory.on_recipient = later
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                           b"RCPT TO:<c@example.com>\r\nDATA\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0"])
        waits[0].callback(Reply(550, "5.1.1", "no"))
        self.assertEqual(codes(replies(t)), [b"550 5.1.1"])
        from hurricane.smtpd.address import parse_path
        from hurricane.smtpd.protocol import Recipient
        waits[1].callback(Recipient(parse_path("<c@example.com>", "recipient")[0]))
        self.assertEqual(codes(replies(t)), [b"250 2.1.5", b"354 End"])

    def test_commands_after_the_dot_wait_for_the_reply(self) -> None:
        """Commands pipelined after the final dot run only after the message is answered."""
        proto, t = self.start()
        self.ehlo(proto, t)
        pending: defer.Deferred[Reply] = defer.Deferred()
        self.factory.on_message = lambda e, d: pending
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"body\r\n.\r\nQUIT\r\n")
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"250 2.1.5", b"354 End"])
        pending.callback(Reply(250, "2.0.0", "Ok: queued as X"))
        self.assertEqual(codes(replies(t)), [b"250 2.0.0", b"221 2.0.0"])
        self.assertTrue(t.disconnecting)


class EndOfMessageFailureTests(_Base):
    def test_failed_owner_answers_451_not_550(self) -> None:
        """When message handling fails, the client is told 451 4.3.0 (try later), never 550."""
        proto, t = self.start()
        self.ehlo(proto, t)
        self.factory.on_message = lambda e, d: defer.fail(RuntimeError("database went away"))
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"body\r\n.\r\n")
        self.assertEqual(codes(replies(t))[-1], b"451 4.3.0")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_raising_owner_answers_451(self) -> None:
        """An exception raised synchronously by the owner is also a 451."""
        proto, t = self.start()
        self.ehlo(proto, t)

        def boom(e: object, d: object) -> None:
            raise ValueError("bug")

        self.factory.on_message = boom
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"body\r\n.\r\n")
        self.assertEqual(codes(replies(t))[-1], b"451 4.3.0")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_connection_lost_while_storing(self) -> None:
        """A reply that comes after the client left is dropped without error."""
        proto, t = self.start()
        self.ehlo(proto, t)
        pending: defer.Deferred[Reply] = defer.Deferred()
        self.factory.on_message = lambda e, d: pending
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                           b"body\r\n.\r\n")
        replies(t)
        disconnect(proto)
        pending.callback(Reply(250, "2.0.0", "Ok"))
        self.assertEqual(replies(t), [])


class TLSTransportTests(SynchronousTestCase):
    def test_tls_string_transport_is_tls_capable(self) -> None:
        """The helper transport provides ITLSTransport (so STARTTLS tests are meaningful)."""
        from twisted.internet.interfaces import ITLSTransport

        self.assertTrue(ITLSTransport.providedBy(TLSStringTransport()))


class ReplyWriteTests(_Base):
    """Replies to one read leave in one write; a later reply is not held back."""

    def writes(self, t) -> list[bytes]:
        calls: list[bytes] = []
        original = t.write

        def write(data: bytes) -> None:
            calls.append(data)
            original(data)

        t.write = write
        return calls

    def test_pipelined_replies_in_one_write(self) -> None:
        """MAIL, RCPT and DATA in one read: 250, 250 and 354 in one write (RFC 2920)."""
        proto, t = self.start()
        self.ehlo(proto, t)
        calls = self.writes(t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                           b"DATA\r\n")
        self.assertEqual([codes(replies(t))], [[b"250 2.1.0", b"250 2.1.5", b"354 End"]])
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].count(b"\r\n"), 3)

    def test_ehlo_reply_in_one_write(self) -> None:
        """A multi-line reply is one write, not one per line."""
        proto, t = self.start()
        calls = self.writes(t)
        proto.dataReceived(b"EHLO client.example\r\n")
        self.assertEqual(len(calls), 1)
        self.assertGreater(calls[0].count(b"\r\n"), 3)

    def test_quit_reply_before_close(self) -> None:
        """QUIT: the 221 is written before the connection is closed.

        (A TLS transport drops what is written after loseConnection.)
        """
        proto, t = self.start()
        calls = self.writes(t)
        write = t.write
        t.write = lambda data: None if t.disconnecting else write(data)
        proto.dataReceived(b"QUIT\r\n")
        self.assertEqual(len(calls), 1)
        self.assertTrue(t.disconnecting)
        self.assertEqual(replies(t), [b"221 2.0.0 Bye"])

    def test_reply_after_asynchronous_hook_not_held(self) -> None:
        """A reply produced later (a hook's Deferred firing) is written at once."""
        self.factory = RecordingFactory(self.clock)
        pending: defer.Deferred = defer.Deferred()
        self.factory.on_sender = lambda p: pending
        proto, t = self.start(factory=self.factory)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        self.assertEqual(replies(t), [])
        pending.callback(Reply(250, "2.1.0", "Ok"))
        self.assertEqual(codes(replies(t)), [b"250 2.1.0"])

    def test_late_reply_and_pipelined_replies_in_one_write(self) -> None:
        """A reply a hook gives later, and the replies to the commands pipelined
        behind it, leave in one write (apart, Nagle would delay the second)."""
        self.factory = RecordingFactory(self.clock)
        pending: list[defer.Deferred] = []

        def on_sender(path):
            d: defer.Deferred = defer.Deferred()
            pending.append(d)
            return d

        self.factory.on_sender = on_sender
        proto, t = self.start(factory=self.factory)
        self.ehlo(proto, t)
        calls = self.writes(t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
                           b"NOOP\r\n")
        self.assertEqual(calls, [])
        pending[0].callback(Reply(250, "2.1.0", "Ok"))
        self.assertEqual(len(calls), 1)
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"250 2.1.5", b"250 2.0.0"])

    def test_no_delay_on_the_connection(self) -> None:
        """The server turns Nagle's algorithm off on each connection."""
        proto, t = self.start()
        self.assertTrue(t.no_delay)

    def test_bug_while_resuming_closes_with_421(self) -> None:
        """A handler that raises on pipelined input after a late reply: 421 and
        close (as Twisted does for dataReceived), not a session left hanging."""
        self.factory = RecordingFactory(self.clock)
        pending: defer.Deferred = defer.Deferred()
        self.factory.on_sender = lambda p: pending
        proto, t = self.start(factory=self.factory)
        self.ehlo(proto, t)

        def broken(rest: str) -> None:
            raise RuntimeError("bug")

        proto.do_NOOP = broken  # type: ignore[method-assign]
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nNOOP\r\nRSET\r\n")
        pending.callback(Reply(250, "2.1.0", "Ok"))
        self.assertEqual(codes(replies(t)), [b"250 2.1.0", b"421 4.3.0"])
        self.assertTrue(t.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class StateTests(_Base):
    """The explicit state machine: where the connection is after each step."""

    def test_states_of_a_transaction(self) -> None:
        """COMMAND, DATA after 354, WAITING while the owner stores, COMMAND after the
        reply, CLOSING after QUIT and CLOSED once the transport is gone."""
        proto, t = self.start()
        self.assertIs(proto.state, ServerState.COMMAND)
        self.ehlo(proto, t)
        proto.dataReceived(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        self.assertIs(proto.state, ServerState.DATA)
        pending: defer.Deferred[Reply] = defer.Deferred()
        self.factory.on_message = lambda e, d: pending
        proto.dataReceived(b"body\r\n.\r\nQUIT\r\n")
        self.assertIs(proto.state, ServerState.WAITING)
        proto.dataReceived(b"NOOP\r\n")  # more input while waiting: reading stops
        self.assertEqual(t.producerState, "paused")
        pending.callback(Reply(250, "2.0.0", "Ok"))
        self.assertEqual(codes(replies(t))[-2:], [b"250 2.0.0", b"221 2.0.0"])
        self.assertIs(proto.state, ServerState.CLOSING)
        disconnect(proto)
        self.assertIs(proto.state, ServerState.CLOSED)
        self.assertTrue(proto.lost)

    def test_input_after_close_is_ignored(self) -> None:
        """Once closing, input is neither buffered nor answered."""
        proto, t = self.start()
        proto.dataReceived(b"QUIT\r\n")
        replies(t)
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(replies(t), [])
        self.assertEqual(len(proto.input_buffer), 0)

    def test_answer_needing_a_second_hook_keeps_input_paused(self) -> None:
        """An answer that waits on a second Deferred keeps pipelined commands waiting
        until that one fires too (one command at a time, however long it takes)."""
        proto, t = self.start()
        first: defer.Deferred[str] = defer.Deferred()
        second: defer.Deferred[str] = defer.Deferred()

        def two_steps(rest: str) -> None:
            proto.wait_for(first, lambda _: proto.wait_for(
                second, lambda _: proto.send_reply(Reply(250, "2.0.0", "two steps"))))

        proto.do_HELP = two_steps  # type: ignore[method-assign]
        proto.dataReceived(b"HELP\r\n")
        first.callback("one")
        proto.dataReceived(b"NOOP\r\n")
        self.assertEqual(replies(t), [])
        self.assertIs(proto.state, ServerState.WAITING)
        self.assertEqual(t.producerState, "paused")
        second.callback("two")
        self.assertEqual(replies(t), [b"250 2.0.0 two steps", b"250 2.0.0 Ok"])
        self.assertEqual(t.producerState, "producing")


class OwnProtocolTests(SynchronousTestCase):
    def test_not_twisted_mail(self) -> None:
        """The server is a plain Protocol of ours: nothing of twisted.mail.smtp under it."""
        from twisted.internet.protocol import Protocol

        names = {f"{c.__module__}.{c.__qualname__}" for c in HardenedESMTP.__mro__}
        self.assertFalse([n for n in names if n.startswith("twisted.mail")], names)
        self.assertTrue(issubclass(HardenedESMTP, Protocol))
