"""One running Hurricane shared by the tests of a class (started in setUpClass)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, ClassVar

import trustme
from twisted.trial.unittest import TestCase

from hurricane.passwords import hash_password
from tests.hardening.harness import SMTP_SINK, Hurricane, SmtpSink, StoreReader

PASSWORD = "correct horse battery staple"
#: A non-loopback address of this machine, if it has one (for "off loopback" tests).
_OFF = None


def off_loopback_address() -> str | None:
    """An IPv4 address of this host that is not loopback, or None."""
    global _OFF
    if _OFF is None:
        import socket

        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
                addr = s.getsockname()[0]
        except OSError:
            addr = ""
        _OFF = "" if addr.startswith("127.") else addr
    return _OFF or None


class _FakeTest:
    """Collects cleanups registered while a class-level fixture is built."""

    def __init__(self) -> None:
        self.cleanups: list[tuple[Any, tuple[Any, ...]]] = []

    def addCleanup(self, fn: Any, *args: Any) -> None:
        self.cleanups.append((fn, args))

    def run(self) -> None:
        for fn, args in reversed(self.cleanups):
            try:
                fn(*args)
            except Exception:
                pass


class LiveServerTestCase(TestCase):
    """Starts one Hurricane (and an smtp-sink every route points at) for the class.

    The submission listener is configured as if off the trusted network
    (``trusted_networks = []``, ``require_auth = true``) with one user,
    ``alice``; the bounce listener has STARTTLS. Limits are small so that
    the tests reach them quickly.
    """

    timeout = 120
    server: ClassVar[Hurricane]
    sink: ClassVar[SmtpSink]
    reader: ClassVar[StoreReader]
    ca: ClassVar[trustme.CA]
    _fixture: ClassVar[_FakeTest]
    #: Extra config merged over the class defaults.
    overrides: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def setUpClass(cls) -> None:
        if not os.path.exists(SMTP_SINK):
            return  # each test skips in setUp
        fixture = cls._fixture = _FakeTest()
        workdir = tempfile.mkdtemp(prefix="hurricane-hx-")
        fixture.addCleanup(shutil.rmtree, workdir, True)
        cls.ca = trustme.CA()
        cert = cls.ca.issue_cert("localhost", "127.0.0.1", "mx.hx.test")
        cert_path = os.path.join(workdir, "cert.pem")
        key_path = os.path.join(workdir, "key.pem")
        with open(cert_path, "wb") as fp:
            for blob in cert.cert_chain_pems:
                fp.write(blob.bytes())
        cert.private_key_pem.write_to_path(key_path)
        cls.sink = SmtpSink(fixture).start()
        submission_listen = ["tcp:0:interface=127.0.0.1"]
        off = off_loopback_address()
        if off:
            submission_listen.append(f"tcp:0:interface={off}")
        config: dict[str, dict[str, Any]] = {
            "submission": {
                "listen": submission_listen, "trusted_networks": [], "require_auth": True,
                "users": {"alice": hash_password(PASSWORD, iterations=1000)},
                "max_auth_failures": 3, "auth_block_seconds": 600.0,
                "idle_timeout": 2.0, "max_errors": 20, "max_recipients": 100,
            },
            "bounce": {
                "tls_certificate": cert_path, "tls_key": key_path,
                "idle_timeout": 2.0, "max_errors": 10, "max_recipients": 20,
                "max_connections_per_ip": 10, "max_message_size": 5 * 1024 * 1024,
                "analysis_cpu_seconds": 2.0,
            },
            "routes": {"*": f"127.0.0.1:{cls.sink.port}"},
        }
        for name, body in cls.overrides.items():
            config[name] = {**config.get(name, {}), **body}
        cls.server = Hurricane(workdir, config)
        fixture.addCleanup(cls.server.kill)
        try:
            cls.server.start()
        except BaseException:
            fixture.run()
            raise
        cls.reader = StoreReader(cls.server.store_url)

    @classmethod
    def tearDownClass(cls) -> None:
        fixture = getattr(cls, "_fixture", None)
        if fixture is not None:
            fixture.run()

    def setUp(self) -> None:
        if not os.path.exists(SMTP_SINK):
            if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
                self.fail(f"{SMTP_SINK} missing and HURRICANE_REQUIRE_PEERS=1")
            self.skipTest(f"{SMTP_SINK} not installed (Debian package postfix)")
        self.assertTrue(self.server.alive(), self.server.log_text()[-3000:])

    def tearDown(self) -> None:
        # whatever the test did, the server is still up
        self.assertTrue(self.server.alive(), self.server.log_text()[-3000:])
