"""The attack surface of a running Hurricane, over real sockets.

Each test here fails against stock twisted.mail (its ESMTP server relays what
its delivery object accepts, executes pipelined input after STARTTLS, treats
bare LF as a line end and buffers unterminated input without bound) and passes
against Hurricane's listeners.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import time

from hurricane.verp import VerpCodec, load_keys
from tests.hardening.harness import (
    BOUNCE_DOMAIN,
    RawSMTP,
    SmtpSink,
    make_message,
    smtp_send,
    temp_dir,
    wait_until,
)
from tests.hardening.live import PASSWORD, LiveServerTestCase, off_loopback_address
from tests.peers import missing_peer

#: Relay probes: (MAIL FROM, RCPT TO). None of these may ever be relayed.
RELAY_PROBES: list[tuple[str, str]] = [
    ("<app@app.hx.test>", "<user@sink.test>"),
    ("<app@app.hx.test>", "<USER@SINK.TEST>"),
    ("<app@app.hx.test>", "<user@sink.test.>"),
    ("<app@app.hx.test>", f"<user%sink.test@{BOUNCE_DOMAIN}>"),
    ("<app@app.hx.test>", f"<user%sink.test@{BOUNCE_DOMAIN.upper()}>"),
    ("<app@app.hx.test>", f"<sink.test!user@{BOUNCE_DOMAIN}>"),
    ("<app@app.hx.test>", "<sink.test!user>"),
    ("<app@app.hx.test>", f"<@{BOUNCE_DOMAIN}:user@sink.test>"),
    ("<app@app.hx.test>", f"<@{BOUNCE_DOMAIN},@sink.test:user@sink.test>"),
    ("<app@app.hx.test>", f"<\"user@sink.test\"@{BOUNCE_DOMAIN}>"),
    ("<app@app.hx.test>", f"<\"user%sink.test\"@{BOUNCE_DOMAIN}>"),
    ("<app@app.hx.test>", "<\"user\"@sink.test>"),
    ("<app@app.hx.test>", "<user@[127.0.0.1]>"),
    ("<app@app.hx.test>", "<postmaster@[127.0.0.1]>"),
    ("<app@app.hx.test>", "<user@[IPv6:::1]>"),
    ("<app@app.hx.test>", f"<user@{BOUNCE_DOMAIN}.sink.test>"),
    ("<app@app.hx.test>", f"<user@sink.test@{BOUNCE_DOMAIN}>"),
    ("<app@app.hx.test>", "<postmaster@sink.test>"),
    ("<app@app.hx.test>", "<user@localhost>"),
    ("<app@app.hx.test>", "<user>"),
    ("<app@app.hx.test>", "user@sink.test"),
    ("<>", "<user@sink.test>"),
    ("<>", f"<user%sink.test@{BOUNCE_DOMAIN}>"),
    (f"<postmaster@{BOUNCE_DOMAIN}>", "<user@sink.test>"),
    ("<postmaster>", "<user@sink.test>"),
    (f"<MAILER-DAEMON@{BOUNCE_DOMAIN}>", "<User@Sink.Test>"),
]


def ehlo(c: RawSMTP, name: bytes = b"client.hx.test") -> list[str]:
    """Read the greeting and say EHLO; the EHLO reply lines."""
    code, _ = c.reply()
    assert code == 220, code
    code, lines = c.command(b"EHLO " + name)
    assert code == 250, lines
    return lines


class RelayProbeTests(LiveServerTestCase):
    """Nothing is ever relayed, by the bounce receiver or by submission without AUTH."""

    def _probe(self, port: int, sender: str, rcpt: str) -> int:
        c = RawSMTP(port)
        try:
            ehlo(c)
            code, lines = c.command(f"MAIL FROM:{sender}".encode())
            if code != 250:
                return code
            code, lines = c.command(f"RCPT TO:{rcpt}".encode())
            if code == 250:
                # go on as a relay would: DATA, so the sink would see it
                c.command(b"DATA")
                c.send(b"Subject: relay probe\r\n\r\nprobe\r\n.\r\n")
                c.reply()
            c.command(b"QUIT")
            return code
        finally:
            c.close()

    def test_relay_probes(self) -> None:
        """Every probe is refused with a 5xx at RCPT on both listeners; the sink gets nothing."""
        refused = []
        for port in (self.server.bounce_port, self.server.submission_port):
            for sender, rcpt in RELAY_PROBES:
                code = self._probe(port, sender, rcpt)
                self.assertTrue(500 <= code < 600, (port, sender, rcpt, code))
                refused.append(code)
        self.assertEqual(len(refused), 2 * len(RELAY_PROBES))
        # give a relayed message every chance to go out (poll_interval is 0.2 s)
        time.sleep(1.5)
        self.assertEqual(self.sink.count(), 0)
        self.assertEqual(self.reader.deliveries(), [])

    def test_submission_bound_off_loopback_needs_auth_over_tls(self) -> None:
        """Off loopback, without TLS, EHLO offers no AUTH and AUTH is refused; RCPT is refused."""
        off = off_loopback_address()
        if not off or len(self.server.ports["submission"]) < 2:
            missing_peer("this host has no non-loopback IPv4 address")
        port = self.server.ports["submission"][1]
        sock = socket.create_connection((off, port), timeout=10, source_address=(off, 0))
        c = RawSMTP.__new__(RawSMTP)
        c.sock, c.buf = sock, b""
        try:
            lines = ehlo(c)
            self.assertFalse([line for line in lines if "AUTH" in line.upper()], lines)
            creds = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
            code, lines = c.command(b"AUTH PLAIN " + creds)
            self.assertTrue(500 <= code < 600 or code == 454, (code, lines))
            code, _ = c.command(b"MAIL FROM:<app@app.hx.test>")
            self.assertEqual(code, 250)
            code, _ = c.command(b"RCPT TO:<user@sink.test>")
            self.assertEqual(code // 100, 5)
        finally:
            c.close()
        # on loopback AUTH is offered (and works: see the smuggling tests)
        c = RawSMTP(self.server.submission_port)
        try:
            self.assertTrue([line for line in ehlo(c) if "AUTH" in line.upper()])
        finally:
            c.close()

    def test_binds_only_where_configured(self) -> None:
        """The process listens on exactly the configured listener addresses and nothing else."""
        pid = self.server.proc.pid  # type: ignore[union-attr]
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
        mine = set()
        for line in out.splitlines():
            if f"pid={pid}," in line:
                local = line.split()[3]
                host, _, port = local.rpartition(":")
                mine.add((host.strip("[]"), int(port)))
        expected = {(host, port) for _, host, port in self.server.addresses}
        # each listener on the interface its endpoint string names
        configured = {"submission": {"127.0.0.1", off_loopback_address()},
                      "bounce": {"127.0.0.1"}, "web": {"127.0.0.1"}}
        for kind, host, _ in self.server.addresses:
            self.assertIn(host, configured.get(kind, set()), kind)
        self.assertEqual(len(self.server.addresses), len(expected))
        if not out.strip():
            missing_peer("ss(8) gave no output")
        self.assertEqual(mine, expected)


class VerpTokenTests(LiveServerTestCase):
    """Forged, altered, expired and cross-domain VERP tokens are refused at RCPT."""

    def _rcpt(self, address: str) -> tuple[int, list[str]]:
        c = RawSMTP(self.server.bounce_port)
        try:
            ehlo(c)
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            return c.command(f"RCPT TO:<{address}>".encode())
        finally:
            c.close()

    def test_tokens(self) -> None:
        """Only the genuine, current token for this domain gets 250; the rest the same 550 5.1.1."""
        keys = load_keys(os.path.join(self.server.data_dir, "verp-keys.json"))
        good = VerpCodec(BOUNCE_DOMAIN, keys)
        today = good.today()
        valid = good.encode(123, "sale-1", "msg-1")
        self.assertEqual(self._rcpt(valid)[0], 250)
        self.assertEqual(self._rcpt(valid.upper())[0], 250)  # MTAs fold case
        local, _, _ = valid.partition("@")
        # altered: every position of the local part's head changed once (sampled)
        altered = []
        for i in range(0, len(local), 3):
            ch = "a" if local[i] != "a" else "b"
            altered.append(local[:i] + ch + local[i + 1:] + "@" + BOUNCE_DOMAIN)
        expired = VerpCodec(BOUNCE_DOMAIN, keys, today=today - 31).encode(123, "sale-1", "m")
        forged_key = VerpCodec(BOUNCE_DOMAIN, [type(keys[0])(keys[0].key_id, b"x" * 32, 1.0)])
        other_domain = VerpCodec("bounces.other.test", keys).encode(123, None, None)
        cross = other_domain.split("@")[0] + "@" + BOUNCE_DOMAIN
        future = VerpCodec(BOUNCE_DOMAIN, keys, today=today + 5).encode(123, None, None)
        bad = [*altered, expired, forged_key.encode(123, None, None), cross, future,
               local[:-1] + "@" + BOUNCE_DOMAIN, local + "x@" + BOUNCE_DOMAIN]
        answers = {a: self._rcpt(a) for a in bad}
        for address, (code, lines) in answers.items():
            self.assertEqual(code, 550, (address, lines))
            self.assertIn("5.1.1", lines[-1], address)
        # the right token on another domain is a relay attempt
        self.assertEqual(self._rcpt(other_domain)[0], 550)
        # all the refusals read alike: a prober learns nothing about which check failed
        self.assertEqual(len({tuple(lines) for _, lines in answers.values()}), 1)


class StartTLSInjectionTests(LiveServerTestCase):
    """Commands pipelined after STARTTLS in clear text are never executed after the handshake."""

    def test_injected_commands_dropped(self) -> None:
        """MAIL and RCPT sent in the STARTTLS packet are discarded and the session restarts."""
        c = RawSMTP(self.server.bounce_port)
        try:
            lines = ehlo(c)
            self.assertIn("STARTTLS", " ".join(lines))
            c.send(b"STARTTLS\r\nMAIL FROM:<evil@evil.test>\r\n"
                   b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode() + b">\r\n")
            code, _ = c.reply()
            self.assertEqual(code, 220)
            self.assertEqual(c.buf, b"")  # nothing else answered before the handshake
            context = ssl.create_default_context()
            self.ca.configure_trust(context)
            c.sock = context.wrap_socket(c.sock, server_hostname="localhost")
            # the session was reset: MAIL before EHLO is refused, RCPT has no MAIL
            code, _ = c.command(b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode() + b">")
            self.assertEqual(code, 503)
            code, lines = c.command(b"EHLO client.hx.test")
            self.assertEqual(code, 250)
            self.assertNotIn("STARTTLS", " ".join(lines))
            code, _ = c.command(b"MAIL FROM:<>")
            self.assertEqual(code, 250)  # no nested MAIL left from the injection
        finally:
            c.close()


class SmugglingTests(LiveServerTestCase):
    """Bare LF, bare CR and ``\\n.\\n`` variants never end DATA, on either listener."""

    VARIANTS = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\n..\n"]

    def _auth(self, c: RawSMTP) -> None:
        ehlo(c)
        creds = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
        code, lines = c.command(b"AUTH PLAIN " + creds)
        self.assertEqual(code, 235, lines)

    def test_inbound_variants(self) -> None:
        """Each variant stays inside one message: submission refuses it, bounce stores one."""
        before = len(self.reader.bounces())
        for i, variant in enumerate(self.VARIANTS):
            smuggled = (b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<victim%d@sink.test>\r\n"
                        b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n" % i)
            for kind in ("submission", "bounce"):
                c = RawSMTP(self.server.ports[kind][0])
                try:
                    if kind == "submission":
                        self._auth(c)
                        rcpt = b"<legit%d@sink.test>" % i
                    else:
                        ehlo(c)
                        rcpt = b"<postmaster@" + BOUNCE_DOMAIN.encode() + b">"
                    self.assertEqual(c.command(b"MAIL FROM:<app@app.hx.test>")[0], 250)
                    self.assertEqual(c.command(b"RCPT TO:" + rcpt)[0], 250)
                    self.assertEqual(c.command(b"DATA")[0], 354)
                    c.send(b"Subject: carrier %d\r\n\r\nbody" % i + variant + smuggled
                           + b".\r\n")
                    code, lines = c.reply()
                    if kind == "submission":
                        self.assertEqual((code, lines[-1][4:9]), (550, "5.6.2"), variant)
                    else:
                        self.assertEqual(code, 250, (variant, lines))
                    # exactly one reply for the one transaction
                    self.assertEqual(c.command(b"NOOP")[0], 250)
                finally:
                    c.close()
        rows = self.reader.bounces()
        self.assertEqual(len(rows), before + len(self.VARIANTS))
        for row in rows[before:]:
            self.assertIn(b"smuggled", row["raw"])  # kept inside the carrier
        self.assertFalse([d for d in self.reader.deliveries()
                          if d["recipient"].startswith("victim")])

    def test_bare_lf_in_helo(self) -> None:
        """A bare LF in EHLO is refused and never reaches the Received header of a stored bounce."""
        c = RawSMTP(self.server.bounce_port)
        try:
            self.assertEqual(c.reply()[0], 220)
            code, _ = c.command(b"EHLO evil.test\nX-Injected: yes")
            self.assertEqual(code // 100, 5)
            code, _ = c.command(b"EHLO evil.test X-Injected: yes")
            self.assertEqual(code, 501)
            self.assertEqual(c.command(b"EHLO helo-lf.test")[0], 250)
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            self.assertEqual(c.command(b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode()
                                       + b">")[0], 250)
            self.assertEqual(c.command(b"DATA")[0], 354)
            c.send(b"Subject: helo-lf\r\n\r\nbody\r\n.\r\n")
            self.assertEqual(c.reply()[0], 250)
        finally:
            c.close()
        [row] = [b for b in self.reader.bounces() if b"helo-lf" in b["raw"]]
        self.assertNotIn(b"X-Injected", row["raw"])
        self.assertTrue(row["raw"].startswith(b"Received: from helo-lf.test ("))

    def test_outbound_never_emits_bare_line_ends(self) -> None:
        """Dot lines, 16 KiB boundaries and long lines reach smtp-sink as one clean message each."""
        body_lines = [".", "..", ".hidden", "x" * 2000, "end"]  # no other x in the message
        # a line starting with "." exactly at a 16 KiB boundary
        pad = "p" * (16384 - 200)
        body = "\r\n".join([pad, *body_lines, ".", "tail"])
        for i in range(3):
            tag = f"smug-out-{i}"
            rcpt = f"{tag}@sink.test"
            c = RawSMTP(self.server.submission_port)
            try:
                self._auth(c)
                self.assertEqual(c.command(b"MAIL FROM:<app@app.hx.test>")[0], 250)
                self.assertEqual(c.command(f"RCPT TO:<{rcpt}>".encode())[0], 250)
                self.assertEqual(c.command(b"DATA")[0], 354)
                data = make_message(tag, rcpt, body=body)
                stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line
                                       for line in data.split(b"\r\n"))
                c.send(stuffed + b".\r\n")
                self.assertEqual(c.reply()[0], 250)
            finally:
                c.close()

        def arrived() -> list[bytes] | None:
            found = [m for m in self.sink.messages() if b"smug-out-" in m]
            return found if len(found) >= 3 else None

        messages = wait_until(arrived, 20, "three messages at smtp-sink", 0.1)
        self.assertEqual(len(messages), 3)
        for raw in messages:
            _, _, content = raw.partition(b"Received: ")
            text = content.replace(b"\r\n", b"\n")
            self.assertNotIn(b"\r", text)  # no bare CR made it through
            lines = text.split(b"\n")
            for line in (".", "..", ".hidden", "end", "tail"):
                self.assertIn(line.encode(), lines)
            self.assertTrue(all(len(line) <= 998 for line in lines), "a line over 998")
            # long lines are folded, never cut short
            self.assertEqual(sum(len(line) for line in lines if line and not line.strip(b"x")),
                             2000)


class LimitsTests(LiveServerTestCase):
    """Line, header, recipient, error, connection and idle limits, with their documented replies."""

    overrides = {"bounce": {"max_message_size": 256 * 1024}}

    def _bounce(self) -> RawSMTP:
        c = RawSMTP(self.server.bounce_port)
        ehlo(c)
        return c

    def test_unterminated_line_closes(self) -> None:
        """Input with no CRLF beyond 4 KiB gets 500 5.5.6 and the connection is closed."""
        c = self._bounce()
        try:
            try:
                c.send(b"MAIL FROM:<" + b"a" * 200_000)
            except OSError:
                pass
            code, lines = c.reply()
            self.assertEqual((code, lines[-1][4:9]), (500, "5.5.6"))
            self.assertTrue(c.closed())
        finally:
            c.close()

    def test_long_command_line(self) -> None:
        """A 3000-octet command gets 500 5.5.2 and the session goes on."""
        c = self._bounce()
        try:
            code, lines = c.command(b"NOOP " + b"x" * 3000)
            self.assertEqual((code, lines[-1][4:9]), (500, "5.5.2"))
            self.assertEqual(c.command(b"NOOP")[0], 250)
        finally:
            c.close()

    def test_long_data_line_stays_in_data(self) -> None:
        """A 100 KiB header line fails the message after the dot; no body line runs as a command."""
        c = self._bounce()
        try:
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            self.assertEqual(c.command(b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode()
                                       + b">")[0], 250)
            self.assertEqual(c.command(b"DATA")[0], 354)
            c.send(b"X-Huge: " + b"h" * 100_000 + b"\r\nQUIT\r\nRSET\r\n\r\nbody\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual((code, lines[-1][4:9]), (554, "5.3.4"))
            self.assertEqual(c.command(b"NOOP")[0], 250)  # QUIT in the body did nothing
        finally:
            c.close()

    def test_huge_headers_over_size(self) -> None:
        """Many header lines past the size limit get 552 5.3.4, and memory stays bounded."""
        rss = _rss(self.server.proc.pid)  # type: ignore[union-attr]
        c = self._bounce()
        try:
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            self.assertEqual(c.command(b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode()
                                       + b">")[0], 250)
            self.assertEqual(c.command(b"DATA")[0], 354)
            header = b"X-Filler: " + b"f" * 900 + b"\r\n"
            chunk = header * 1000  # about 0.9 MB per send
            for _ in range(40):
                c.send(chunk)
            c.send(b"\r\nbody\r\n.\r\n")
            code, lines = c.reply()
            self.assertEqual((code, lines[-1][4:9]), (552, "5.3.4"))
        finally:
            c.close()
        grown = _rss(self.server.proc.pid) - rss  # type: ignore[union-attr]
        self.assertLess(grown, 20 * 1024 * 1024, "36 MB sent, limit 256 KiB")

    def test_too_many_recipients(self) -> None:
        """The 21st recipient on the bounce listener gets 452 4.5.3; repeats count once."""
        codec = self.server.codec()
        c = self._bounce()
        try:
            self.assertEqual(c.command(b"MAIL FROM:<>")[0], 250)
            # one mailbox named 21 times is one recipient
            codes = [c.command(b"RCPT TO:<postmaster@" + BOUNCE_DOMAIN.encode() + b">")[0]
                     for _ in range(21)]
            self.assertEqual(codes, [250] * 21)
            codes = [c.command(b"RCPT TO:<" + codec.encode(i).encode() + b">")[0]
                     for i in range(1, 21)]
            self.assertEqual(codes, [250] * 19 + [452])
        finally:
            c.close()

    def test_too_many_errors(self) -> None:
        """The 10th error reply is followed by 421 4.7.0 and the connection is closed."""
        c = self._bounce()
        try:
            for _ in range(9):
                self.assertEqual(c.command(b"BOGUS")[0], 500)
            code, lines = c.command(b"BOGUS")
            self.assertEqual(code, 500)
            code, lines = c.reply()
            self.assertEqual(code, 421)
            self.assertTrue(c.closed())
        finally:
            c.close()

    def test_too_many_connections_from_one_address(self) -> None:
        """The 11th concurrent connection from one address gets 421 and is closed."""
        conns: list[RawSMTP] = []

        def one_more() -> bool:
            # a slot of an earlier test's connection may take a moment to come back
            c = RawSMTP(self.server.bounce_port)
            if c.reply()[0] == 220:
                conns.append(c)
                return True
            c.close()
            return False

        try:
            for _ in range(10):
                wait_until(one_more, 10, "a connection slot", 0.1)
            extra = RawSMTP(self.server.bounce_port)
            try:
                code, lines = extra.reply()
                self.assertEqual(code, 421, lines)
                self.assertTrue(extra.closed())
            finally:
                extra.close()
        finally:
            for c in conns:
                c.close()
        # the slots come back
        wait_until(lambda: _greeting(self.server.bounce_port) == 220, 10,
                   "a free slot after closing")

    def test_slow_loris(self) -> None:
        """A command dribbled one byte at a time is cut off by the idle timeout (421 4.4.2)."""
        c = self._bounce()
        try:
            started = time.monotonic()
            closed = False
            for ch in b"MAIL FROM:<slow@loris.test>":
                try:
                    c.send(bytes([ch]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.25)
                if time.monotonic() - started > 6:
                    break
            if not closed:
                code, lines = c.reply()
                self.assertEqual((code, lines[-1][4:9] if lines else ""), (421, "4.4.2"))
            self.assertLess(time.monotonic() - started, 6)
            self.assertTrue(c.closed())
        finally:
            c.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _greeting(port: int) -> int:
    c = RawSMTP(port)
    try:
        return c.reply()[0]
    finally:
        c.close()


class AuthBruteForceTests(LiveServerTestCase):
    """AUTH failures are limited per connection and per address."""

    def test_per_connection_then_per_address(self) -> None:
        """Three failures get 421 and a close; the next connection is refused AUTH with 454."""
        c = RawSMTP(self.server.submission_port)
        try:
            ehlo(c)
            for attempt in range(3):
                bad = base64.b64encode(b"\0alice\0wrong%d" % attempt)
                code, lines = c.command(b"AUTH PLAIN " + bad)
                self.assertEqual(code, 535, lines)
            code, lines = c.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(c.closed())
        finally:
            c.close()
        c = RawSMTP(self.server.submission_port)
        try:
            ehlo(c)
            good = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
            code, lines = c.command(b"AUTH PLAIN " + good)
            self.assertEqual(code, 454, lines)  # blocked, even with the right password
        finally:
            c.close()


class SinkCaptureTests(LiveServerTestCase):
    """A message submitted with AUTH reaches smtp-sink once, with a VERP envelope sender."""

    def test_authenticated_submission_delivered(self) -> None:
        """The control case for the relay probes: an authenticated client does get mail out."""
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.server.submission_port, timeout=10) as s:
            s.ehlo("client.hx.test")
            s.login("alice", PASSWORD)
            s.sendmail("app@app.hx.test", ["control@sink.test"],
                       make_message("control", "control@sink.test"))
        found = wait_until(lambda: [m for m in self.sink.messages() if b"hx control" in m],
                           20, "the control message at the sink", 0.1)
        self.assertEqual(len(found), 1)
        self.assertIn(f"@{BOUNCE_DOMAIN}>".encode(), found[0].split(b"X-Rcpt-Args")[0])


# keep the imports used by helpers in other modules visible to linters
__all__ = ["SmtpSink", "smtp_send", "temp_dir"]
