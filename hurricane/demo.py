"""``hurricane demo``: the whole job on one machine, with no set-up.

One reactor runs both sides:

- the smart sink (:mod:`hurricane.sink`) on a loopback port, playing every
  remote MX with a realistic, seeded mix of behaviours (most recipients
  accept; some are unknown, full, greylisted, refuse the message as spam,
  drop the connection, or accept and later send a DSN, a free-text NDR, an
  auto-reply or a complaint);
- Hurricane itself (:func:`hurricane.app.build_service`) on a temporary
  SQLite data directory, with the sink as the route for every domain
  (``[routes] "*"``), short retry intervals and a short ``max_age`` so that
  deferred recipients either get through or expire within seconds.

The demo submits a mailing (``--recipients``, one personalised message per
recipient) through the submission port with Hurricane's own ESMTP client
(pipelined, several connections at once), waits (bounded) for the queue to
drain and the asynchronous returns to be analyzed, prints a summary, and then
leaves the web report up until Ctrl-C (or, without a web listener, prints the
``hurricane outcomes`` command to inspect the data).

:class:`Rig` is the reusable part: sink + Hurricane on an injected reactor;
the end-to-end tests use it too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from hurricane.outcome import EventKind
from hurricane.sink.scenario import Scenario, default_scenario, mix_rule

if TYPE_CHECKING:
    from hurricane.cli import Subcommands
    from hurricane.config import Config
    from hurricane.model import Delivery, Summary
    from hurricane.reactors import IServerReactor
    from hurricane.service import HurricaneService, ListenerService
    from hurricane.sink.server import ReturnSender, SinkFactory, SinkSnapshot
    from hurricane.store.interface import IOutcomeStore

log = Logger()

#: The demo's mix of behaviours, in percent.
DEMO_MIX: Mapping[str, float] = {
    "accept": 84.5, "unsubscribe": 1.0, "unsubscribe-mailto": 0.5,
    "unknown": 3.0, "full": 1.0, "spam": 1.5, "grey": 2.0,
    "late": 1.5, "ndr-exim": 0.5, "ndr-exchange": 0.5, "ndr-gmail": 0.5,
    "delayed": 0.5, "complain": 1.0, "vacation": 1.5, "drop": 0.5,
}

#: The demo mailing's stream: a newsletter.
DEMO_STREAM = "newsletter"

DEMO_DOMAINS = ("gmail.test", "yahoo.test", "outlook.test", "gmx.test", "orange.test",
                "example.org")

PENDING_STATES = ("queued", "deferred")


def demo_scenario(seed: int | str = 2026, mix: Mapping[str, float] = DEMO_MIX) -> Scenario:
    """The default scenario's prefix rules, then ``mix`` for every other address."""
    base = default_scenario(seed)
    rules = tuple(r for r in base.rules if r.match != "*") + (mix_rule(mix),)
    return dataclasses.replace(base, rules=rules, hostname="mx.sink.test")


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):  # an inline table: [[delivery.providers]] as a list of them
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}"
                               for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def write_toml(data: Mapping[str, Mapping[str, object] | Sequence[Mapping[str, object]]],
               path: str) -> None:
    """Write a configuration dict (sections of scalars and sub-tables; a top-level
    list of tables, such as ``streams``, as an array of tables ``[[streams]]``)."""
    lines: list[str] = []

    def section(name: str, table: Mapping[str, object], array: bool = False) -> None:
        lines.append(f"[[{name}]]" if array else f"[{name}]")
        subs = []
        for k, v in table.items():
            if isinstance(v, Mapping):
                subs.append((k, v))
            else:
                key = k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)
                lines.append(f"{key} = {_toml_value(v)}")
        lines.append("")
        for k, v in subs:
            section(f"{name}.{k}", v)

    for name, table in data.items():
        if isinstance(table, Mapping):
            section(name, table)
        else:
            for item in table:
                section(name, item, array=True)
    with open(path, "w") as fp:
        fp.write("\n".join(lines))


@dataclass
class SubmitResult:
    """What the submitting side saw."""

    accepted: int = 0
    refused: int = 0
    errors: int = 0


@dataclass(frozen=True)
class DeferredReason:
    """Deferred recipients that share why they wait.

    Args:
        why: what the last attempt got, in words ("retried after a dropped
            connection ('connection lost')").
        count: how many (within the sample read).
        next_retry: the soonest next attempt among them (epoch seconds).
        expires: when the oldest of them expires if every retry fails.
    """

    why: str
    count: int
    next_retry: float | None
    expires: float


@dataclass(frozen=True)
class Waiting:
    """What keeps the demo from being settled."""

    queued: int = 0
    deferred: int = 0
    reasons: tuple[DeferredReason, ...] = ()
    #: Returns the sink has scheduled or is sending (late DSNs, NDRs, ARF...).
    returns_pending: int = 0
    #: Returned messages stored by the bounce listener, not analyzed yet.
    bounces_pending: int = 0

    @property
    def nothing(self) -> bool:
        """True when nothing is waited for."""
        return not (self.queued or self.deferred or self.returns_pending
                    or self.bounces_pending)


_STATUS_AND_ADDRESS = re.compile(r"^\s*\d\.\d{1,3}\.\d{1,3}\s+|<[^<>]*>:?\s*")


def _why(delivery: Delivery) -> str:
    """Why a deferred delivery waits, in words, without the recipient's address
    (so that recipients deferred for the same reason group together)."""
    text = (delivery.text or "").strip()
    if delivery.code is None:
        head = text.split(":", 1)[0].strip() or (delivery.reason or "no answer")
        kind = "dropped" if "lost" in head or "closed" in head else "failed"
        return f"retried after a {kind} connection ('{head}')"
    short = _STATUS_AND_ADDRESS.sub("", text).strip()
    if len(short) > 60:
        short = short[:57] + "..."
    status = f" {delivery.status}" if delivery.status else ""
    return f"retried after {delivery.code}{status} {short}".rstrip()


def deferred_reasons(deferred: Sequence[Delivery], max_age: float
                     ) -> tuple[DeferredReason, ...]:
    """Group deferred deliveries by why they wait, largest group first."""
    groups: dict[str, list[Delivery]] = {}
    for d in deferred:
        groups.setdefault(_why(d), []).append(d)
    reasons = []
    for why, members in groups.items():
        retries = [d.next_attempt_at for d in members if d.next_attempt_at is not None]
        reasons.append(DeferredReason(
            why, len(members), min(retries) if retries else None,
            min(d.created_at for d in members) + max_age))
    return tuple(sorted(reasons, key=lambda r: (-r.count, r.why)))


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def describe_waiting(waiting: Waiting, now: float, max_age: float | None = None) -> str:
    """One line saying what the demo waits for, e.g. "13 deferred recipients: 13
    retried after a dropped connection ('connection lost'), next retry 14:02:03
    (in 1 s), given up after 14:02:09 (max_age 10 s)".

    Args:
        waiting: what :meth:`Rig.waiting` found.
        now: the current time (epoch seconds), for "in N s".
        max_age: ``[delivery] max_age``, named next to the time deferred
            recipients are given up (expired) if their retries keep failing.
    """
    parts = []
    if waiting.deferred:
        groups = []
        for r in waiting.reasons:
            text = f"{r.count} {r.why}"
            if r.next_retry is not None:
                wait = r.next_retry - now
                text += (f", next retry {_clock(r.next_retry)} "
                         + (f"(in {wait:.0f} s)" if wait >= 1 else "(due now)"))
            text += f", given up after {_clock(r.expires)}"
            if max_age is not None:
                text += f" (max_age {max_age:g} s)"
            groups.append(text)
        parts.append(f"{waiting.deferred} deferred recipient"
                     f"{'' if waiting.deferred == 1 else 's'}"
                     + (": " + "; ".join(groups) if groups else ""))
    if waiting.queued:
        parts.append(f"{waiting.queued} queued (not tried yet)")
    if waiting.returns_pending:
        parts.append(f"{waiting.returns_pending} return(s) the sink has yet to send "
                     "(late DSNs, NDRs, auto-replies, complaints)")
    if waiting.bounces_pending:
        parts.append(f"{waiting.bounces_pending} returned message(s) being analyzed")
    return "; ".join(parts) if parts else "nothing"


@dataclass(frozen=True)
class Comparison:
    """One line of the side-by-side count: Hurricane's figure and the sink's."""

    label: str
    hurricane: int
    sink: int


def compare_with_sink(summary: Summary, notices: Mapping[str, int],
                      sink: SinkSnapshot) -> list[Comparison]:
    """Hurricane's outcomes next to what the sink did, line by line.

    The sink knows what it answered and what it sent back: every recipient
    it accepted is delivered unless a DSN, NDR or complaint was sent for it;
    every recipient it refused is a synchronous failure; every recipient it
    only ever deferred or dropped is one Hurricane gives up on (expired, or
    still deferred while retries are due). Auto-replies and delay notices
    change no state: they are counted as events.

    Args:
        summary: Hurricane's summary of the mailing.
        notices: Hurricane's auto-reply and delay-notice events
            (:meth:`Rig.notices`).
        sink: :meth:`SinkStats.as_dict` of the sink.
    """
    def counts(key: str) -> Mapping[str, int]:
        # .get: a snapshot read back from a --stats-file may lack a table
        value = sink.get(key, {})
        return value if isinstance(value, Mapping) else {}

    def total(outcome: str) -> int:
        return sum(counts(outcome).values())

    sent = counts("returns_sent")
    bounced = sent.get("dsn", 0) + sent.get("ndr", 0)
    complained = sent.get("arf", 0)
    by_state = summary.by_state
    return [
        Comparison("delivered (accepted, nothing came back)", by_state.get("delivered", 0),
                   total("accepted") - bounced - complained),
        Comparison("synchronous failures (refused during SMTP)", summary.sync_failures,
                   total("rejected")),
        Comparison("asynchronous bounces (DSN / NDR later)", summary.async_bounces, bounced),
        Comparison("complaints (ARF)", summary.complaints, complained),
        Comparison("expired or deferred (never accepted)",
                   sum(by_state.get(k, 0) for k in ("expired", *PENDING_STATES)),
                   sum(counts("unanswered").values())),
        Comparison("auto-replies (RFC 3834; stay delivered)",
                   notices.get(EventKind.autoreply.value, 0),
                   # the sink's own count of the auto-replies it sent
                   sent.get(EventKind.autoreply.value, 0)),
        Comparison('delay notices (DSN "delayed"; stay delivered)',
                   notices.get(EventKind.delayed.value, 0),
                   sent.get(EventKind.delayed.value, 0)),
        Comparison("unsubscribes (one-click POST or mailto)",
                   notices.get(EventKind.unsubscribed.value, 0),
                   sent.get("unsubscribe", 0) + sent.get("unsubscribe-mailto", 0)),
    ]


class Rig:
    """The smart sink and a whole Hurricane service on one reactor, on loopback.

    Args:
        reactor: the reactor (the trial reactor in tests, the global one in
            ``hurricane demo``).
        data_dir: Hurricane's data directory (SQLite file, VERP keys).
        scenario: the sink's scenario.
        store_url: "" for SQLite in ``data_dir``, else e.g. a PostgreSQL URL.
        delivery: ``[delivery]`` overrides.
        web: also start a web listener on a free port when the service has one.
    """

    def __init__(self, reactor: IServerReactor, data_dir: str, scenario: Scenario, *,
                 store_url: str = "", delivery: Mapping[str, object] | None = None,
                 web: bool = True, sqlite_synchronous: str = "NORMAL") -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.scenario = scenario
        self.store_url = store_url
        self.delivery: dict[str, object] = {
            "first_retry": 1.0, "max_retry_interval": 2.0, "max_age": 10.0,
            "retry_jitter": 0.0, "poll_interval": 0.2, "lease_seconds": 60.0,
            "max_connections_per_destination": 10,
            "timeouts": {"connect": 5.0, "greeting": 10.0, "mail": 10.0, "rcpt": 10.0,
                         "data_init": 10.0, "data_block": 10.0, "data_end": 10.0},
            **(delivery or {}),
        }
        self.web = web
        self.sqlite_synchronous = sqlite_synchronous
        self.root: HurricaneService | None = None
        self.sink: SinkFactory | None = None
        self.returns: ReturnSender | None = None
        self.config: Config | None = None
        self.config_file = os.path.join(data_dir, "hurricane.toml")
        self._sink_port: IListeningPort | None = None
        self.fatal: list[str] = []
        self.web_port = 0

    # -- start and stop ------------------------------------------------------

    def config_dict(self, sink_port: int
                    ) -> dict[str, dict[str, object] | list[dict[str, object]]]:
        """The configuration of the Hurricane side, as TOML-ready data."""
        data: dict[str, dict[str, object]] = {
            "server": {"hostname": "demo.hurricane.test", "data_dir": self.data_dir,
                       "node_id": "demo"},
            "store": {"sqlite_synchronous": self.sqlite_synchronous},
            "submission": {"listen": ["tcp:0:interface=127.0.0.1"],
                           "max_connections_per_ip": 100},
            "bounce": {"listen": ["tcp:0:interface=127.0.0.1"], "domain": "bounces.demo.test",
                       "max_connections_per_ip": 100},
            "delivery": dict(self.delivery),
            "routes": {"*": f"127.0.0.1:{sink_port}"},
            "web": {"listen": [f"tcp:{self.web_port}:interface=127.0.0.1"]
                    if self.web else []},
        }
        if self.web:
            data["unsubscribe"] = {"base_url": f"http://127.0.0.1:{self.web_port}"}
        if self.store_url:
            data["store"]["url"] = self.store_url
        # The mailing is a newsletter: a bulk stream, with one-click unsubscribe
        # links pointing at the web listener (issue 20).
        return {**data, "streams": [{"name": DEMO_STREAM, "kind": "bulk",
                                     "feedback_id": "{mailing}:{stream}:{sender}"}]}

    async def start(self) -> None:
        """Start the sink, then Hurricane; point the sink's returns at the bounce port."""
        from hurricane.app import build_service
        from hurricane.config import config_from_dict
        from hurricane.sink.server import ReturnSender, SinkFactory, SinkStats, tls_context_for

        os.makedirs(self.data_dir, exist_ok=True)
        stats = SinkStats()
        self.returns = ReturnSender(self.reactor, "127.0.0.1", 0, stats,
                                    helo=self.scenario.hostname, retry_delay=0.5)
        ctx = tls_context_for(self.scenario.hostname) if self.scenario.tls != "off" else None
        self.sink = SinkFactory(self.scenario, self.reactor, returns=self.returns,
                                tls_context=ctx)
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface="127.0.0.1")
        self._sink_port = await endpoint.listen(self.sink)
        if self.web:
            # A port known before the start: the unsubscribe links name it.
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.web_port = int(s.getsockname()[1])
        data = self.config_dict(self.sink_port())
        write_toml(data, self.config_file)
        self.config = dataclasses.replace(config_from_dict(data), source=self.config_file)
        root = self.root = build_service(self.config, self.reactor, on_fatal=self.fatal.append)
        root.startService()
        assert root.started is not None  # set by startService
        await root.started
        if self.fatal:
            raise RuntimeError(self.fatal[0])
        self.returns.port = self.port("bounce")

    async def stop(self) -> None:
        """Stop Hurricane, then the sink."""
        if self.sink is not None:
            self.sink.stop()
        if self.root is not None and self.root.running:
            await self.root.stopService()
        if self._sink_port is not None:
            stopped = self._sink_port.stopListening()
            self._sink_port = None
            if stopped is not None:
                await stopped

    def sink_port(self) -> int:
        """The sink's port."""
        if self._sink_port is None:
            raise LookupError("the sink is not listening")
        return _port_of(self._sink_port)

    def listener(self, kind: str) -> ListenerService | None:
        """The first listener service of ``kind`` (submission, bounce, web), or None."""
        from hurricane.service import ListenerService

        for child in self.root or ():
            if isinstance(child, ListenerService) and child.kind == kind and child.port:
                return child
        return None

    def port(self, kind: str) -> int:
        """The port a listener got."""
        listener = self.listener(kind)
        if listener is None or listener.port is None:
            raise LookupError(f"no {kind} listener")
        return _port_of(listener.port)

    @property
    def store(self) -> IOutcomeStore:
        """Hurricane's store."""
        if self.root is None:
            raise RuntimeError("the rig has not started")
        return self.root.store

    # -- mailing ---------------------------------------------------------------

    async def submit(self, recipients: Sequence[str], *, mailing_id: str = "demo-1",
                     connections: int = 8, size: int = 2000,
                     progress: Callable[[], None] | None = None) -> SubmitResult:
        """Submit one personalised message per recipient over ``connections`` sessions."""
        from hurricane.config import TimeoutsConfig
        from hurricane.outbound.client import Connector
        from hurricane.outbound.interface import OutboundMessage, OutboundRecipient

        port = self.port("submission")
        connector = Connector(self.reactor, TimeoutsConfig(
            connect=10, greeting=30, mail=30, rcpt=30, data_init=30, data_block=30,
            data_end=60))
        result = SubmitResult()
        filler = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
                  "eiusmod tempor incididunt ut labore et dolore magna aliqua.\r\n")
        body_text = (filler * (size // len(filler) + 1))[:size]
        shares = [list(recipients[i::connections]) for i in range(connections)]

        async def worker(share: list[str], n: int) -> None:
            conn = None
            for i, rcpt in enumerate(share):
                if conn is None or not conn.usable:
                    conn = await connector.connect("127.0.0.1", "127.0.0.1", port,
                                                   tls_policy="none", helo="app.demo.test")
                msg = (f"From: Demo Shop <news@shop.demo.test>\r\nTo: <{rcpt}>\r\n"
                       f"Subject: Spring sale for {rcpt.split('@')[0]}\r\n"
                       f"Message-ID: <{mailing_id}.{n}.{i}@shop.demo.test>\r\n"
                       f"X-Hurricane-Mailing-Id: {mailing_id}\r\n"
                       f"X-Hurricane-Message-Id: m{n}-{i}\r\n"
                       f"X-Hurricane-Stream: {DEMO_STREAM}\r\n"
                       "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
                       f"\r\nHello {rcpt},\r\n\r\n{body_text}").encode()
                (reply,) = await conn.send(OutboundMessage(
                    "news@shop.demo.test", (OutboundRecipient(i, rcpt),), msg))
                if reply.delivered:
                    result.accepted += 1
                elif reply.reply is not None:
                    result.refused += 1
                else:
                    result.errors += 1
                if progress is not None:
                    progress()
            if conn is not None:
                await conn.close()

        ds = [Deferred.fromCoroutine(worker(s, n)) for n, s in enumerate(shares) if s]
        results = await DeferredList(ds, consumeErrors=True)
        for ok, value in results:
            if not ok:
                log.failure("submission worker failed", value)
                result.errors += 1
        return result

    async def settled(self) -> bool:
        """True when nothing is queued or deferred, no return is pending, and
        every returned message has been analyzed."""
        depth = await self.store.queue_depth()
        if any(depth.get(s, 0) for s in PENDING_STATES):
            return False
        if self.returns is not None and self.returns.pending:
            return False
        return not await self.store.pending_bounces(1)

    async def wait_settled(self, timeout: float, interval: float = 0.2,
                           tick: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Poll :meth:`settled` until true or ``timeout`` seconds; True if settled."""
        deadline = self.reactor.seconds() + timeout
        while True:
            if tick is not None:
                await tick()
            if await self.settled():
                # one more round: a return may be in the bounce pipeline
                await self.sleep(interval)
                if await self.settled():
                    return True
            if self.reactor.seconds() > deadline:
                return False
            await self.sleep(interval)

    def max_age(self) -> float:
        """The ``[delivery] max_age`` the rig configures, in seconds."""
        value = self.delivery["max_age"]
        if not isinstance(value, int | float):
            raise TypeError(f"delivery max_age: expected a number, got {value!r}")
        return float(value)

    async def waiting(self, sample: int = 500) -> Waiting:
        """What :meth:`settled` still waits for (see :class:`Waiting`)."""
        depth = await self.store.queue_depth()
        deferred = (await self.store.search_deliveries(state="deferred", limit=sample)
                    if depth.get("deferred", 0) else [])
        return Waiting(
            queued=depth.get("queued", 0), deferred=depth.get("deferred", 0),
            reasons=deferred_reasons(deferred, self.max_age()),
            returns_pending=self.returns.pending if self.returns is not None else 0,
            bounces_pending=len(await self.store.pending_bounces(sample)),
        )

    async def notices(self) -> Counter[str]:
        """Events that record an answer without changing a delivered state, by kind:
        ``autoreply`` (RFC 3834), ``delayed`` ("delayed" DSNs) and ``unsubscribed``
        (one-click or mailto unsubscribes)."""
        from hurricane.model import EventKind

        kinds = {EventKind.autoreply.value, EventKind.delayed.value,
                 EventKind.unsubscribed.value}
        found: Counter[str] = Counter()
        after = 0
        while True:
            page = await self.store.events_after(after, 5000)
            for record in page:
                kind = str(getattr(record.event.kind, "value", record.event.kind))
                if kind in kinds:
                    found[kind] += 1
            if len(page) < 5000:
                return found
            after = page[-1].event.event_id

    def sleep(self, seconds: float) -> Deferred[None]:
        """A Deferred firing after ``seconds`` on the rig's reactor."""
        d: Deferred[None] = Deferred()
        self.reactor.callLater(seconds, d.callback, None)
        return d


def _port_of(port: IListeningPort) -> int:
    """The TCP port a listening port is bound to."""
    address = port.getHost()
    if not isinstance(address, (IPv4Address, IPv6Address)):
        raise LookupError(f"not a TCP port: {address}")
    return address.port


def demo_recipients(n: int) -> list[str]:
    """``n`` distinct addresses spread over a few domains."""
    return [f"user{i:05d}@{DEMO_DOMAINS[i % len(DEMO_DOMAINS)]}" for i in range(n)]


# -- the command ---------------------------------------------------------------------


def add_parser(subparsers: Subcommands) -> None:
    """Register ``hurricane demo``."""
    p = subparsers.add_parser(
        "demo", help="send a mailing to the smart sink and show what happened",
        description="Start Hurricane and the smart sink in one process on a temporary "
        "SQLite directory, send a mailing with a realistic mix of outcomes, wait for "
        "the bounces, print a summary and keep the web report up until Ctrl-C.",
    )
    p.add_argument("--recipients", type=int, default=2000, metavar="N",
                   help="recipients in the mailing (default 2000)")
    p.add_argument("--connections", type=int, default=8, metavar="K",
                   help="concurrent submission sessions (default 8)")
    p.add_argument("--seed", default="2026", help="seed of the sink's mix")
    p.add_argument("--timeout", type=float, default=90.0, metavar="S",
                   help="longest wait for the queue to drain (default 90 s)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="keep the data here (default: a temporary directory)")
    p.add_argument("--no-wait", action="store_true",
                   help="exit after the summary (do not keep the report up)")
    p.set_defaults(func=cmd_demo)


class Progress:
    """A one-line progress bar (redrawn in place on a terminal), and notes above it."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.total = total
        self.tty = out.isatty()
        self._last = 0.0
        self._line = ""
        self.submitted = 0

    def draw(self, done: int, counts: Mapping[str, int], final: bool = False) -> None:
        """Draw the bar: ``done`` of ``total`` recipients finished."""
        now = time.monotonic()
        if not final and not self.tty and now - self._last < 2.0:
            return
        self._last = now
        width = 30
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        parts = " ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
        line = self._line = (f"[{bar}] {done}/{self.total} settled, submitted "
                             f"{self.submitted}{'  ' + parts if parts else ''}")
        if self.tty:
            self.out.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """Print a line of its own (above the bar on a terminal, which is redrawn)."""
        if self.tty:
            self.out.write("\r\x1b[K" + text + "\n" + self._line)
        else:
            self.out.write(text + "\n")
        self.out.flush()


@dataclass
class _WaitNotes:
    """When to say what the demo waits for: after the count stood still a while,
    then when the reason changes or every few seconds."""

    done: int = -1
    since: float = 0.0
    said: str = ""
    said_at: float = 0.0
    quiet: float = 1.0
    every: float = 4.0
    #: Set once every message is submitted: before, the wait is the submission.
    armed: bool = False
    last: list[str] = field(default_factory=list)

    def due(self, done: int, now: float) -> bool:
        """Whether to describe the wait now (``done`` settled at ``now``)."""
        if done != self.done:
            self.done, self.since = done, now
            return False
        return self.armed and now - self.since >= self.quiet

    def say(self, text: str, now: float) -> bool:
        """Whether ``text`` is worth printing (new, or the last one is old)."""
        key = re.sub(r"\((in \d+ s|due now)\)|next retry [\d:]+", "", text)
        if key == self.said and now - self.said_at < self.every:
            return False
        self.said, self.said_at = key, now
        self.last.append(text)
        return True


class SinkCounters(Protocol):
    """What the summary reads of the sink (:class:`~hurricane.sink.server.SinkStats`)."""

    def as_dict(self) -> SinkSnapshot:
        """The counters as JSON."""


def summary_text(summary: Summary, sink_stats: SinkCounters, submitted: SubmitResult,
                 elapsed: float,
                 settled: bool, notices: Mapping[str, int] | None = None,
                 waiting: str = "") -> str:
    """The table printed at the end of the demo.

    Args:
        summary: Hurricane's summary of the mailing.
        sink_stats: the sink's :class:`~hurricane.sink.server.SinkStats`.
        submitted: what the submitting side saw.
        elapsed: seconds since the mailing started.
        settled: whether everything came to rest before the timeout.
        notices: auto-reply and delay-notice events by kind.
        waiting: what is still waited for when not settled.
    """
    notices = notices or {}
    lines = ["", f"Mailing of {summary.recipients} recipients "
             f"({submitted.accepted} accepted at submission) in {elapsed:.1f} s"
             + ("" if settled else "  (timed out waiting: some still pending)"), ""]
    if not settled and waiting:
        lines += [f"  still waiting for: {waiting}", ""]
    lines.append(f"  {'state':<14}{'recipients':>11}")
    for state in ("delivered", "deferred", "queued", "failed", "bounced", "complained",
                  "expired", "suppressed"):
        n = summary.by_state.get(state, 0)
        if n or state in ("delivered", "failed", "bounced", "complained", "expired"):
            lines.append(f"  {state:<14}{n:>11}")
    lines.append("")
    # "delivered" is the reason of every delivered recipient: the states say it.
    reasons = sorted(((r, n) for r, n in summary.by_reason.items() if r != "delivered"),
                     key=lambda kv: (-kv[1], kv[0]))
    lines.append(f"  {'reason':<16}{'recipients':>11}   (failed, bounced, complained, expired)")
    for reason, n in reasons:
        lines.append(f"  {reason:<16}{n:>11}")
    st = sink_stats.as_dict()
    rows = compare_with_sink(summary, notices, st)
    width = max(len(r.label) for r in rows)
    lines.append("")
    lines.append(f"  {'':<{width}}  {'Hurricane':>9}  {'sink':>6}")
    for r in rows:
        mark = "" if r.hurricane == r.sink else "   <- differs"
        lines.append(f"  {r.label:<{width}}  {r.hurricane:>9}  {r.sink:>6}{mark}")
    lines.append("")
    differ = [r for r in rows if r.hurricane != r.sink]
    if not differ:
        lines.append("  Hurricane's count matches the sink's on every line.")
    else:
        lines.append(f"  Hurricane's count differs from the sink's on {len(differ)} "
                     f"line{'s' if len(differ) > 1 else ''}"
                     + (" (still waiting: see above)." if not settled else
                        ": see demo.log and the report."))
    failed_returns = sum(st["returns_failed"].values())
    if failed_returns:
        lines.append(f"  The sink could not send {failed_returns} return(s) to the bounce "
                     "listener (see demo.log).")
    lines.append("")
    lines.append("  the sink's own count (final answers per recipient, temporary ones per "
                 "attempt):")
    for outcome, table in (("accepted", st["accepted"]), ("rejected", st["rejected"]),
                           ("deferred", st["deferred"]), ("dropped", st["dropped"])):
        items = ", ".join(f"{k} {v}" for k, v in table.items())
        if items:
            lines.append(f"    {outcome:<9} {items}")
    sent = ", ".join(f"{k} {v}" for k, v in st["returns_sent"].items())
    lines.append(f"    returns   {sent or 'none'}")
    return "\n".join(lines) + "\n"


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo; see the module docstring."""
    from hurricane.cli import EXIT_OK, EXIT_USAGE, CommandError

    if args.recipients < 1 or args.connections < 1:
        raise CommandError("--recipients and --connections must be >= 1", EXIT_USAGE)
    from twisted.internet import defer, task

    temporary = args.data_dir is None
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="hurricane-demo-")
    data_dir = os.path.abspath(data_dir)
    # A temporary directory is removed after a --no-wait run; any other run
    # keeps its data and says where (also on Ctrl-C).
    keep = not (temporary and args.no_wait)
    out = sys.stdout
    _log_to_file(os.path.join(data_dir, "demo.log"))
    codes: list[int] = []

    async def main(reactor: IServerReactor) -> None:
        codes.append(await run_demo(reactor, args, data_dir, out, keep=keep))

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            print(f"hurricane demo: failed, see {os.path.join(data_dir, 'demo.log')}",
                  file=sys.stderr)
            return int(e.code) if isinstance(e.code, int) else 1
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    return codes[0] if codes else EXIT_OK


def _log_to_file(path: str) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fp = open(path, "a")  # noqa: SIM115 (kept open for the process)
    observer = FilteringLogObserver(textFileLogObserver(fp),
                                    [LogLevelFilterPredicate(LogLevel.info)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def kept_data_text(data_dir: str, config_file: str) -> str:
    """Where the demo left its data and how to look at it again."""
    return (f"The demo's data is kept in {data_dir}:\n"
            f"  hurricane outcomes --config {config_file}   # one JSON line per recipient\n"
            f"  {os.path.join(data_dir, 'demo.log')}   # Hurricane's log\n"
            f"Remove it with: rm -r {data_dir}\n")


async def run_demo(reactor: IServerReactor, args: argparse.Namespace, data_dir: str,
                   out: TextIO, *, keep: bool = True) -> int:
    """The demo on ``reactor``; returns the exit code.

    Args:
        reactor: the reactor it runs on (the global one in ``hurricane demo``).
        args: the command's options.
        data_dir: Hurricane's data directory.
        out: where the progress and the summary go.
        keep: the data stays after the demo (say where on Ctrl-C and at the end).
    """
    # The demo's mix shows every outcome, so about 6 % of it bounces hard and 1 %
    # complains: above the circuit breaker's defaults (5 %, 0.3 %), which would
    # hold the demo's own mailing (issue 19). The breaker is off here.
    rig = Rig(reactor, data_dir, demo_scenario(args.seed),
              delivery={"circuit_breaker": {"enabled": False}})
    out.write(f"Hurricane demo: data in {data_dir}\n")
    stopping: list[bool] = []

    async def on_shutdown() -> None:
        # Ctrl-C (or SIGTERM) at any point: stop cleanly, then say where the
        # data is, since a temporary directory is not removed on this path.
        if stopping:
            return
        stopping.append(True)
        await rig.stop()
        if keep:
            out.write("\n\nStopped. " + kept_data_text(data_dir, rig.config_file))
            out.flush()

    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: Deferred.fromCoroutine(on_shutdown()))
    await rig.start()
    out.write(f"  submission 127.0.0.1:{rig.port('submission')}, bounces "
              f"127.0.0.1:{rig.port('bounce')}, sink (every MX) "
              f"127.0.0.1:{rig.sink_port()}\n")
    recipients = demo_recipients(args.recipients)
    bar = Progress(out, len(recipients))
    notes = _WaitNotes()
    started = reactor.seconds()

    def submitted_one() -> None:
        bar.submitted += 1

    async def tick() -> None:
        s = await rig.store.summary()
        pending = sum(s.by_state.get(k, 0) for k in PENDING_STATES)
        done = max(0, s.recipients - pending)
        bar.draw(done, s.by_state)
        now = reactor.seconds()
        if notes.due(done, now):
            waiting = await rig.waiting()
            text = describe_waiting(waiting, now, rig.max_age())
            if not waiting.nothing and notes.say(text, now):
                bar.note(f"  waiting for {text}")

    ticking = True

    async def ticker() -> None:
        while ticking:
            await tick()
            await rig.sleep(0.25)

    ticker_d = Deferred.fromCoroutine(ticker())
    sub = await rig.submit(recipients, connections=args.connections, progress=submitted_one)
    ticking = False
    await ticker_d
    notes.armed = True
    remaining = max(1.0, args.timeout - (reactor.seconds() - started))
    settled = await rig.wait_settled(remaining, interval=0.25, tick=tick)
    summary = await rig.store.summary()
    bar.draw(summary.recipients, summary.by_state, final=True)
    assert rig.sink is not None  # started
    waiting_text = "" if settled else describe_waiting(
        await rig.waiting(), reactor.seconds(), rig.max_age())
    out.write(summary_text(summary, rig.sink.stats, sub, reactor.seconds() - started,
                           settled, await rig.notices(), waiting_text))
    web = rig.listener("web")
    if args.no_wait:
        stopping.append(True)  # stopped here, not by the shutdown trigger
        await rig.stop()
        if keep:
            out.write("\n" + kept_data_text(data_dir, rig.config_file))
        return 0
    if web is not None:
        out.write(f"\nWeb report: http://127.0.0.1:{rig.port('web')}/  (mailing: "
                  f"http://127.0.0.1:{rig.port('web')}/mailing/demo-1)\n"
                  "Ctrl-C to stop; the data stays where it is.\n")
    else:
        out.write(f"\nNo web report in this build. Inspect the records with:\n"
                  f"  hurricane outcomes --config {rig.config_file}\n"
                  "(the demo keeps running until Ctrl-C)\n")
    out.flush()
    forever: Deferred[None] = Deferred()
    await forever
    return 0
