#!/usr/bin/env python3
"""CPU of the ESMTP server protocol alone: microseconds per transaction, no I/O.

    python bench/protocol.py [--transactions 5000]

A :class:`~hurricane.smtpd.protocol.HardenedESMTP` whose hooks accept
everything at once, on a ``StringTransport``, fed one session of N
transactions (MAIL, RCPT, DATA with a 5 KB body), twice: pipelined (the
whole transaction in one read) and lock-step (one read per command). Process
CPU time, so the figure hardly moves with the machine's load, unlike the
socket benchmarks; it is what bench/compare.py uses to compare the protocol
code of two trees. Bounded: at most 100,000 transactions.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping

# Last, not first: a tree put on PYTHONPATH (bench/compare.py) must win.
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from hurricane.smtpd import protocol  # noqa: E402
from hurricane.smtpd.address import Path  # noqa: E402
from hurricane.smtpd.limits import ServerLimits  # noqa: E402
from hurricane.smtpd.reply import Reply  # noqa: E402

BODY = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 64
COMMANDS = [b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n",
            BODY + b".\r\n"]


class AcceptAll(protocol.HardenedESMTP):
    """Every recipient and every message accepted at once."""

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]
                           ) -> protocol.Recipient:
        """Accept."""
        return protocol.Recipient(recipient, params)

    def message_received(self, envelope: protocol.Envelope, data: bytes) -> Reply:
        """Accept."""
        return Reply(250, "2.0.0", "Ok")


class Factory(protocol.HardenedFactory):
    """Builds :class:`AcceptAll`."""

    protocol = AcceptAll


def session(transactions: int, pipelined: bool) -> float:
    """CPU microseconds per transaction for one session."""
    factory = Factory("mx.bench.test", ServerLimits(), Clock())
    addr = IPv4Address("TCP", "127.0.0.1", 1234)
    proto = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    proto.dataReceived(b"EHLO client.bench.test\r\n")
    reads = [b"".join(COMMANDS)] if pipelined else COMMANDS
    started = time.process_time()
    for i in range(transactions):
        for data in reads:
            proto.dataReceived(data)
        if i % 100 == 0:
            transport.clear()
    elapsed = time.process_time() - started
    if not transport.value().endswith(b"250 2.0.0 Ok\r\n"):
        raise RuntimeError(f"unexpected replies: {transport.value()[-300:]!r}")
    proto.connectionLost(None)  # type: ignore[arg-type]
    return elapsed / transactions * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=5000)
    args = ap.parse_args()
    if not 1 <= args.transactions <= 100_000:
        ap.error("--transactions: 1 to 100000")
    pipelined = session(args.transactions, True)
    lockstep = session(args.transactions, False)
    print(f"protocol CPU per transaction: pipelined {pipelined:.1f} us, "
          f"lock-step {lockstep:.1f} us ({args.transactions} transactions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
