"""Hurricane's outbound client against a hostile receiver, over real sockets."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import trustme
from twisted.trial.unittest import TestCase

from tests.hardening.harness import (
    Hurricane,
    StoreReader,
    make_message,
    smtp_send,
    temp_dir,
    wait_until,
)


class InjectingTLSSink:
    """Offers STARTTLS and answers it with ``220`` plus injected replies in the same packet."""

    INJECTION = b"250-injected.example\r\n250-AUTH PLAIN\r\n250 PIPELINING\r\n"

    def __init__(self, test: TestCase) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        directory = temp_dir(test)
        chain = os.path.join(directory, "chain.pem")
        with open(chain, "wb") as fp:
            fp.write(cert.private_key_and_cert_chain_pem.bytes())
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(10)
        self.port = self.server.getsockname()[1]
        #: (tls, command line) as received
        self.commands: list[tuple[bool, bytes]] = []
        self.messages: list[bytes] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        test.addCleanup(self.close)

    def close(self) -> None:
        self.stop.set()
        self.server.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        tls = False
        sock: socket.socket = conn
        try:
            f = sock.makefile("rb")
            sock.sendall(b"220 hostile ESMTP\r\n")
            while True:
                line = f.readline(10000)
                if not line:
                    return
                self.commands.append((tls, line.rstrip(b"\r\n")))
                verb = line[:4].upper()
                if verb == b"EHLO":
                    sock.sendall(b"250-hostile\r\n" + (b"" if tls else b"250-STARTTLS\r\n")
                                 + b"250 8BITMIME\r\n")
                elif verb == b"STAR":
                    sock.sendall(b"220 2.0.0 go ahead\r\n" + self.INJECTION)
                    sock = self.context.wrap_socket(sock, server_side=True)
                    f = sock.makefile("rb")
                    tls = True
                elif verb == b"DATA":
                    sock.sendall(b"354 go\r\n")
                    data = b""
                    while (chunk := f.readline(1 << 20)) not in (b".\r\n", b""):
                        data += chunk
                    self.messages.append(data)
                    sock.sendall(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                else:
                    sock.sendall(b"250 2.0.0 ok\r\n")
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()


class ClientResponseInjectionTests(TestCase):
    """Replies injected after the receiver's 220 to STARTTLS are never taken as the EHLO reply."""

    timeout = 60

    def test_reehlo_after_starttls(self) -> None:
        """The client discards the injection, says EHLO inside TLS and then delivers."""
        sink = InjectingTLSSink(self)
        server = Hurricane(temp_dir(self), {"routes": {"*": f"127.0.0.1:{sink.port}"}}
                           ).start(self)
        code, text = smtp_send(server.submission_port, "app@app.hx.test", ["u@sink.test"],
                               make_message("inject", "u@sink.test"))
        self.assertEqual(code, 250, text)
        reader = StoreReader(server.store_url)
        wait_until(lambda: [d for d in reader.deliveries() if d["state"] == "delivered"], 20,
                   "the delivery", 0.1)
        after_tls = [cmd for tls, cmd in sink.commands if tls]
        self.assertTrue(after_tls[0].upper().startswith(b"EHLO"), sink.commands)
        self.assertFalse([c for c in after_tls if c.upper().startswith(b"AUTH")])
        self.assertEqual(len(sink.messages), 1)
