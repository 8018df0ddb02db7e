"""A load of submissions and returned bounces against a Hurricane that is being killed.

Shared by the crash tests and ``bench/soak.py``. Clients never resend a
message whose outcome they do not know: each attempt carries a fresh tag, so
the checks can be exact ("a 250 is recorded exactly once, a 4xx/5xx never,
an unknown outcome at most once").
"""

from __future__ import annotations

import collections
import random
import smtplib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.hardening.harness import (
    BOUNCE_DOMAIN,
    SINK_DOMAIN,
    Hurricane,
    SmtpSink,
    StoreReader,
    make_message,
    smtp_send,
    wait_until,
)

#: States of a delivery the remote accepted (a returned bounce may follow).
_SENT = ("delivered", "bounced")


@dataclass
class Ledger:
    """What the clients were told, per tag."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: tag -> reply code to the final dot (250, 451...), or 0 for "unknown".
    messages: dict[str, int] = field(default_factory=dict)
    bounces: dict[str, int] = field(default_factory=dict)
    #: reply codes seen while the store was known to be away
    codes: collections.Counter[int] = field(default_factory=collections.Counter)

    def note(self, kind: str, tag: str, code: int) -> None:
        """Record one outcome."""
        with self.lock:
            getattr(self, kind)[tag] = code
            self.codes[code] += 1

    def accepted(self, kind: str) -> set[str]:
        """Tags answered 250."""
        with self.lock:
            return {t for t, c in getattr(self, kind).items() if c == 250}


class LoadGenerator:
    """Client threads submitting messages and returning bounces to ``server``.

    Args:
        server: the Hurricane under test (its ports change at each restart).
        rng: seeded; decides recipients and which bounces name a delivery.
        submitters: concurrent submission clients.
        bounce_every: seconds between returned bounces.
    """

    def __init__(self, server: Hurricane, rng: random.Random, submitters: int = 3,
                 bounce_every: float = 0.05, prefix: str = "m") -> None:
        self.server = server
        self.rng = rng
        self.submitters = submitters
        self.bounce_every = bounce_every
        self.prefix = prefix
        self.ledger = Ledger()
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self._counter = 0
        self._count_lock = threading.Lock()
        self.verp_targets: list[str] = []

    def _tag(self, kind: str) -> str:
        with self._count_lock:
            self._counter += 1
            return f"{self.prefix}{kind}{self._counter:05d}"

    def start(self) -> None:
        """Start the client threads."""
        for i in range(self.submitters):
            t = threading.Thread(target=self._submit_loop, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self._bounce_loop, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        """Stop and join the client threads."""
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def _port(self, kind: str) -> int | None:
        ports = self.server.ports.get(kind)
        return ports[0] if ports and self.server.alive() else None

    def _submit_loop(self, index: int) -> None:
        while not self.stop_event.is_set():
            port = self._port("submission")
            if port is None:
                time.sleep(0.02)
                continue
            tag = self._tag("s")
            rcpt = f"{tag}@{SINK_DOMAIN}"
            try:
                code, _text = smtp_send(port, "app@app.hx.test", [rcpt],
                                        make_message(tag, rcpt), timeout=10)
            except ConnectionRefusedError:
                code = -1  # never connected: must not be recorded
            except (OSError, smtplib.SMTPException):
                code = 0
            self.ledger.note("messages", tag, code)
            if code != 250:
                time.sleep(0.02)

    def _bounce_loop(self) -> None:
        while not self.stop_event.wait(self.bounce_every):
            port = self._port("bounce")
            if port is None:
                continue
            tag = self._tag("b")
            rcpt = f"postmaster@{BOUNCE_DOMAIN}"
            if self.verp_targets and self.rng.random() < 0.5:
                rcpt = self.rng.choice(self.verp_targets)
            data = (f"From: MAILER-DAEMON@remote.test\r\nTo: {rcpt}\r\n"
                    f"Subject: Undelivered Mail Returned to Sender {tag}\r\n"
                    f"Content-Type: text/plain\r\n\r\n"
                    f"This is the mail system. {tag}\r\n"
                    f"<nobody@{SINK_DOMAIN}>: host mx.remote.test said: 550 5.1.1 "
                    f"User unknown (in reply to RCPT TO command)\r\n").encode()
            try:
                code, _ = smtp_send(port, "", [rcpt], data, timeout=10)
            except ConnectionRefusedError:
                code = -1
            except (OSError, smtplib.SMTPException):
                code = 0
            self.ledger.note("bounces", tag, code)


@dataclass
class CrashReport:
    """What one run checked (printed by the soak script, asserted by the tests)."""

    kills: int
    messages_250: int
    messages_unknown: int
    messages_refused: int
    bounces_250: int
    bounces_unknown: int
    sink_copies: int
    duplicates: int
    refused_codes: dict[int, int]

    def lines(self) -> list[str]:
        """Human-readable summary."""
        return [
            f"kill -9 points: {self.kills}",
            f"messages answered 250: {self.messages_250} (each recorded exactly once, "
            f"delivered at least once)",
            f"messages with unknown outcome (connection cut): {self.messages_unknown} "
            f"(each recorded at most once)",
            f"messages refused (4xx/5xx, never recorded): {self.messages_refused} "
            f"{self.refused_codes}",
            f"bounces answered 250: {self.bounces_250} (each stored exactly once); "
            f"unknown: {self.bounces_unknown}",
            f"copies at the sink: {self.sink_copies}; duplicates: {self.duplicates}",
        ]


def run_crash_load(server: Hurricane, sink: SmtpSink, seed: int, kills: int,
                   settle: float = 60.0, max_in_flight: int = 20,
                   gap: tuple[float, float] = (0.4, 1.5)) -> CrashReport:
    """Load ``server``, kill -9 it ``kills`` times at seeded random moments, then check.

    The server must already be configured with ``[routes] "*"`` = the sink and
    ``max_in_flight`` = ``max_in_flight``. Raises AssertionError on any
    violated guarantee.
    """
    rng = random.Random(seed)
    reader = StoreReader(server.store_url)
    server.start()
    load = LoadGenerator(server, random.Random(seed + 1))
    codec = server.codec()
    load.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*gap))
            # a few bounces name real deliveries (VERP) from here on
            try:
                ids = [d["delivery_id"] for d in reader.deliveries()[:50]]
            except Exception:  # the db may be mid-recovery; not important here
                ids = []
            load.verp_targets = [codec.encode(i, None, None) for i in ids]
            server.kill9()
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        time.sleep(rng.uniform(*gap))
    finally:
        load.stop()
    ledger = load.ledger
    accepted = ledger.accepted("messages")

    def all_delivered() -> bool:
        rows = {d["message_id"]: d for d in reader.deliveries()}
        return all(rows.get(t, {}).get("state") in _SENT for t in accepted)

    wait_until(all_delivered, settle, "every accepted message to be delivered", 0.25)
    rows = reader.deliveries()
    by_tag = collections.Counter(d["message_id"] for d in rows)
    for tag, code in ledger.messages.items():
        n = by_tag.get(tag, 0)
        if code == 250:
            assert n == 1, f"{tag} answered 250 but recorded {n} times"
        elif code == 0:
            assert n <= 1, f"{tag} (outcome unknown) recorded {n} times"
        else:
            assert n == 0, f"{tag} answered {code} but recorded"
    unexpected = set(by_tag) - set(ledger.messages)
    assert not unexpected, f"recorded but never submitted: {sorted(unexpected)[:5]}"
    # the sink: every accepted message at least once
    def sink_tags() -> collections.Counter[str]:
        tags: collections.Counter[str] = collections.Counter()
        for raw in sink.messages():
            for line in raw.splitlines():
                if line.startswith(b"Subject: hx "):
                    tags[line[len(b"Subject: hx "):].strip().decode()] += 1
        return tags

    def sink_complete() -> collections.Counter[str] | None:
        tags = sink_tags()
        return tags if all(tags.get(t) for t in accepted) else None

    tags = wait_until(sink_complete, 15, "every accepted message at the sink", 0.2)
    delivered_tags = {d["message_id"] for d in rows if d["state"] in _SENT}
    assert set(tags) <= delivered_tags | set(ledger.messages), "unknown mail at the sink"
    duplicates = sum(n - 1 for n in tags.values() if n > 1)
    # Only what was in flight at a kill may go out twice.
    assert duplicates <= kills * max_in_flight, (duplicates, kills, max_in_flight)
    # bounces: every 250 stored exactly once, no bounce stored twice
    bounce_tags: collections.Counter[str] = collections.Counter()
    for b in reader.bounces():
        for tag in ledger.bounces:
            if tag.encode() in b["raw"]:
                bounce_tags[tag] += 1
                break
    for tag, code in ledger.bounces.items():
        n = bounce_tags.get(tag, 0)
        if code == 250:
            assert n == 1, f"bounce {tag} answered 250 but stored {n} times"
        elif code == 0:
            assert n <= 1, f"bounce {tag} (unknown) stored {n} times"
        else:
            assert n == 0, f"bounce {tag} answered {code} but stored"
    # analysis of stored bounces resumes after the restarts
    wait_until(lambda: not any(b["status"] == "pending" for b in reader.bounces()), settle,
               "every stored bounce to be analysed", 0.25)
    events = reader.query("SELECT delivery_id, bounce_id, count(*) FROM events "
                          "WHERE bounce_id IS NOT NULL GROUP BY delivery_id, bounce_id "
                          "HAVING count(*) > 1")
    assert not events, f"a bounce recorded twice on a delivery: {events[:5]}"
    refused = {c: n for c, n in ledger.codes.items() if c not in (-1, 0, 250)}
    return CrashReport(
        kills=kills,
        messages_250=len(accepted),
        messages_unknown=sum(1 for c in ledger.messages.values() if c == 0),
        messages_refused=sum(1 for c in ledger.messages.values() if c not in (-1, 0, 250)),
        bounces_250=len(ledger.accepted("bounces")),
        bounces_unknown=sum(1 for c in ledger.bounces.values() if c == 0),
        sink_copies=sum(tags.values()),
        duplicates=duplicates,
        refused_codes=refused,
    )


def crash_overrides(sink_port: int, store_url: str = "",
                    max_in_flight: int = 20) -> dict[str, dict[str, Any]]:
    """Config for a crash run: everything routed to the sink.

    Leases keep their default length (10 minutes): a restarted node must
    take back its own leases at start-up, not wait for them to expire.
    """
    out: dict[str, dict[str, Any]] = {
        "routes": {"*": f"127.0.0.1:{sink_port}"},
        "delivery": {"max_in_flight": max_in_flight},
    }
    if store_url:
        out["store"] = {"url": store_url}
    return out
