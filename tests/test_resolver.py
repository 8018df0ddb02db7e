"""hurricane.resolver: resolv.conf read with public names, re-read on the injected clock."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.resolver import REREAD_INTERVAL, ResolverService


class ResolverServiceTests(SynchronousTestCase):
    """The name servers follow the file; no call is left on the reactor once stopped."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hurricane-resolver-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.path = os.path.join(self.dir, "resolv.conf")
        self.hosts = os.path.join(self.dir, "hosts").encode()
        with open(self.hosts, "wb"):
            pass
        self.write("nameserver 192.0.2.1\n", mtime=1000)

    def write(self, text: str, mtime: float) -> None:
        """Write the file with a given modification time (a change the resolver can see)."""
        with open(self.path, "w") as fp:
            fp.write(text)
        os.utime(self.path, (mtime, mtime))

    def service(self, clock: Clock | None = None) -> ResolverService:
        """A ResolverService on the test files."""
        return ResolverService(clock or MemoryReactorClock(), resolv_conf=self.path,
                               hosts_file=self.hosts)

    def test_servers_from_the_file(self) -> None:
        """The servers are read at construction, before anything runs, with no timer."""
        clock = MemoryReactorClock()
        service = self.service(clock)
        self.assertEqual(service.client.pickServer(), ("192.0.2.1", 53))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_reread_while_running(self) -> None:
        """While running, a changed file is read again within the interval; stopping
        leaves no delayed call."""
        clock = MemoryReactorClock()
        service = self.service(clock)
        service.startService()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.write("nameserver 192.0.2.7\n", mtime=2000)
        clock.advance(REREAD_INTERVAL)
        self.assertEqual(service.client.pickServer(), ("192.0.2.7", 53))
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unchanged_not_reparsed(self) -> None:
        """An unchanged file is not parsed again."""
        service = self.service()
        parsed = []
        original = service.client.parseConfig
        service.client.parseConfig = lambda conf: (parsed.append(1),  # type: ignore[method-assign]
                                                   original(conf))
        service.client.maybeParseConfig()
        self.assertEqual(parsed, [])

    def test_missing_file(self) -> None:
        """A missing file means the local name server, as Twisted treats it."""
        os.remove(self.path)
        service = self.service()
        self.assertEqual(service.client.pickServer(), ("127.0.0.1", 53))

    def test_unreadable_file_keeps_servers(self) -> None:
        """A file that cannot be read while running is logged; the servers stay."""
        clock = MemoryReactorClock()
        service = self.service(clock)
        service.startService()
        self.addCleanup(service.stopService)
        os.remove(self.path)
        os.mkdir(self.path)  # open() fails with IsADirectoryError
        os.utime(self.path, (3000, 3000))
        clock.advance(REREAD_INTERVAL)
        self.assertEqual(service.client.pickServer(), ("192.0.2.1", 53))
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # still looking


class _DatagramPort:
    """A UDP port in memory: connects its protocol as a real port does, and stops it."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written: list[tuple[bytes, Any]] = []
        protocol.makeConnection(self)

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:  # noqa: N802 - Twisted's name
        self.protocol.doStop()

    def getHost(self) -> Any:  # noqa: N802 - Twisted's name
        return None


class _UDPMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock with a listenUDP that connects the protocol to a _DatagramPort."""

    def __init__(self) -> None:
        super().__init__()
        self.datagram_ports: list[_DatagramPort] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "",  # noqa: N802
                  maxPacketSize: int = 8192) -> Any:  # noqa: N803
        p = _DatagramPort(protocol)
        self.datagram_ports.append(p)
        return p


class QuietLookupTests(SynchronousTestCase):
    """A lookup logs no "Starting protocol" / "Stopping protocol" lines."""

    def test_lookup_is_quiet(self) -> None:
        """A query (sent, timed out, its port closed) leaves no protocol start/stop event
        in the log."""
        from twisted.logger import capturedLogs

        top = tempfile.mkdtemp(prefix="hurricane-resolver-")
        self.addCleanup(shutil.rmtree, top, True)
        resolv = os.path.join(top, "resolv.conf")
        with open(resolv, "w") as fp:
            fp.write("nameserver 192.0.2.1\n")
        hosts_file = os.path.join(top, "hosts").encode()
        with open(hosts_file, "wb"):
            pass
        reactor = _UDPMemoryReactor()
        service = ResolverService(reactor, resolv_conf=resolv, hosts_file=hosts_file)
        with capturedLogs() as events:
            d = service.client.lookupMailExchange("example.com", timeout=[1])
            self.assertEqual(len(reactor.datagram_ports), 1)
            self.assertEqual(len(reactor.datagram_ports[0].written), 1)  # the query went out
            reactor.advance(2)
            self.failureResultOf(d)
        texts = [" ".join(map(str, e.get("message", ()))) + str(e.get("log_format", ""))
                 for e in events]
        self.assertEqual([t for t in texts if "protocol" in t], [])
        self.assertEqual(reactor.getDelayedCalls(), [])
