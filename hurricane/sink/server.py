"""The smart sink's ESMTP server, its counters, and the sender of asynchronous returns.

:class:`SinkESMTP` is a :class:`~hurricane.smtpd.protocol.HardenedESMTP`
whose policy hooks ask a :class:`~hurricane.sink.scenario.Scenario` what to
do with each recipient. Recipients of one transaction must agree on what
happens after the final dot; one that would not (say a ``spam-`` recipient
after an ``accept`` one) gets ``452 4.5.3`` so that the client sends it in a
transaction of its own, which keeps every recipient's outcome exact.

Attempts are remembered per address (``defer`` and ``drop`` count them), so
greylisting works across connections. After accepting, recipients whose
behaviour has a ``then`` get a return built by :mod:`hurricane.sink.returns`,
sent after ``delay`` seconds by :class:`ReturnSender` with Hurricane's own
ESMTP client to the bounce listener.

Clock and reactor are injected; nothing here imports the global reactor.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any, TypedDict, cast
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLServerConnectionCreator,
    IReactorTCP,
    IReactorTime,
)
from twisted.logger import Logger

from hurricane.address import Path
from hurricane.config import TimeoutsConfig
from hurricane.outcome import TlsPolicy
from hurricane.reactors import IClientReactor
from hurricane.sink.returns import Accepted, ReturnMessage, build_return
from hurricane.sink.scenario import Behaviour, ProviderPlay, Scenario
from hurricane.smtp_reply import Reply
from hurricane.smtpd.limits import ServerLimits
from hurricane.smtpd.protocol import (
    Decision,
    Envelope,
    HardenedESMTP,
    HardenedFactory,
    Recipient,
    ServerState,
)

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions

__all__ = ["ReturnSender", "SinkESMTP", "SinkFactory", "SinkStats", "sink_limits",
           "tls_context_for"]

log = Logger()

#: The sink plays many MX hosts for one client on loopback: no per-IP cap.
SINK_LIMITS = ServerLimits(
    max_message_size=50 * 1024 * 1024, max_recipients=1000, max_connections_per_ip=5000,
    max_connections=5000, max_errors=1000, reject_bare_line_endings=False,
)


def sink_limits(**overrides: Any) -> ServerLimits:
    """The sink's listener limits, with ``overrides`` applied."""
    from dataclasses import replace

    return replace(SINK_LIMITS, **overrides)


#: Outcomes counted per behaviour.
OUTCOMES = ("accepted", "rejected", "deferred", "dropped", "stalled", "split")
#: The outcomes that are final answers for a recipient.
FINAL_OUTCOMES = frozenset({"accepted", "rejected"})


class SinkSnapshot(TypedDict):
    """:meth:`SinkStats.as_dict`: the counters as JSON (``hurricane sink --stats-file``).

    One table per outcome of :data:`OUTCOMES` (behaviour -> count), the
    asynchronous returns by kind, the recipients with only temporary answers
    per behaviour, and the message and connection totals.
    """

    accepted: dict[str, int]
    rejected: dict[str, int]
    deferred: dict[str, int]
    dropped: dict[str, int]
    stalled: dict[str, int]
    split: dict[str, int]
    returns_scheduled: dict[str, int]
    returns_sent: dict[str, int]
    returns_failed: dict[str, int]
    unanswered: dict[str, int]
    messages: int
    connections: int


@dataclass
class SinkStats:
    """What the sink saw, per behaviour name.

    ``counts[outcome][behaviour]``: outcome is ``accepted`` (250 after the
    dot), ``rejected`` (5xx at RCPT or after the dot), ``deferred`` (4xx),
    ``dropped`` (connection closed mid-DATA), ``stalled`` or ``split``
    (452 to keep transactions uniform). ``accepted`` and ``rejected`` are
    final answers, counted once per recipient; the others are temporary and
    counted per attempt. ``unanswered`` holds the recipients that have had
    only temporary answers so far (address -> behaviour): what a client
    that gives up should report as expired. It shrinks as recipients get a
    final answer, so it stays as small as the sink's backlog of retries.
    ``returns_sent`` / ``returns_failed`` count asynchronous returns by kind.
    """

    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {o: Counter() for o in OUTCOMES})
    returns_sent: Counter[str] = field(default_factory=Counter)
    returns_failed: Counter[str] = field(default_factory=Counter)
    returns_scheduled: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    connections: int = 0
    unanswered: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: str, behaviour: str, n: int = 1) -> None:
        """Add ``n`` to ``counts[outcome][behaviour]``."""
        self.counts[outcome][behaviour] += n

    def answer(self, outcome: str, behaviour: str, address: str) -> None:
        """Count one answer to ``address`` and follow whether it has had a final one."""
        self.counts[outcome][behaviour] += 1
        key = address.lower()
        if outcome in FINAL_OUTCOMES:
            self.unanswered.pop(key, None)
        else:
            self.unanswered[key] = behaviour

    def total(self, outcome: str) -> int:
        """Recipients with this outcome, all behaviours together."""
        return sum(self.counts[outcome].values())

    def as_dict(self) -> SinkSnapshot:
        """A JSON-ready snapshot."""
        counts = {o: dict(sorted(c.items())) for o, c in self.counts.items()}
        return {
            "accepted": counts["accepted"], "rejected": counts["rejected"],
            "deferred": counts["deferred"], "dropped": counts["dropped"],
            "stalled": counts["stalled"], "split": counts["split"],
            "returns_scheduled": dict(self.returns_scheduled),
            "returns_sent": dict(self.returns_sent),
            "returns_failed": dict(self.returns_failed),
            "unanswered": dict(sorted(Counter(self.unanswered.values()).items())),
            "messages": self.messages,
            "connections": self.connections,
        }


@dataclass(frozen=True)
class _Decision:
    """What the sink decided for one accepted RCPT (kept as the recipient's info)."""

    behaviour: Behaviour
    attempt: int


class SinkESMTP(HardenedESMTP):
    """One connection to the sink."""

    factory: SinkFactory

    def connectionMade(self) -> None:
        """Count the connection, then greet."""
        self.factory.stats.connections += 1
        self._drop_in_data = False
        HardenedESMTP.connectionMade(self)

    def validate_recipient(self, recipient: Path, params: Mapping[str, str | None]
                           ) -> Decision[Recipient | Reply]:
        """Ask the scenario; refuse, defer, split or accept."""
        f = self.factory
        address = recipient.address
        b = f.scenario.decide(address)
        tx = self.transaction
        assert tx is not None
        refusal = f.provider_refusal(address)
        if refusal is not None:
            if refusal.code == 421:
                self.send_reply(refusal)
                self.close()
                return _Silent()
            return refusal
        if b.refuses_at_rcpt:
            attempt = f.attempt(address)
            if b.action == "defer" and b.times and attempt > b.times:
                pass  # greylisting over: accept below
            else:
                reply = Reply(b.code, b.status, b.text.replace("{rcpt}", address))
                f.stats.answer("rejected" if b.code >= 500 else "deferred", b.name, address)
                if b.code == 421:
                    self.send_reply(reply)
                    self.close()
                    return _Silent()
                return reply
        if tx.recipients:
            first = cast(_Decision, tx.recipients[0].info).behaviour
            if first.data_class != b.data_class:
                f.stats.answer("split", b.name, address)
                return Reply(452, "4.5.3", "Error: too many recipients, send this one again")
        return Recipient(recipient, params, _Decision(b, 0))

    def send_reply(self, reply: Reply) -> None:
        """Send a reply (a :class:`_Silent` one is not sent)."""
        if isinstance(reply, _Silent):
            return
        HardenedESMTP.send_reply(self, reply)

    def do_DATA(self, rest: str) -> None:
        """DATA; a ``drop`` transaction hangs up once the body starts arriving."""
        tx = self.transaction
        if tx is not None and tx.recipients and not rest:
            b = cast(_Decision, tx.recipients[0].info).behaviour
            if b.action == "drop":
                attempts = [self.factory.attempt(r.path.address) for r in tx.recipients]
                if not b.times or min(attempts) <= b.times:
                    for r in tx.recipients:
                        self.factory.stats.answer("dropped", b.name, r.path.address)
                    self._drop_in_data = True
        HardenedESMTP.do_DATA(self, rest)

    def dataReceived(self, data: bytes) -> None:
        """Hang up in the middle of DATA when the transaction is to be dropped."""
        if self._drop_in_data and self.state is ServerState.DATA:
            self._drop_in_data = False
            log.debug("dropping connection from {peer} mid-DATA", peer=self.session.peer)
            self.abort()
            return
        HardenedESMTP.dataReceived(self, data)

    def do_STARTTLS(self, rest: str) -> None:
        """STARTTLS; in ``fail`` mode, answer 220 and then break the handshake."""
        if self.factory.tls_mode == "fail" and not rest and self.can_start_tls:
            self.send_reply(Reply(220, "2.0.0", "Ready to start TLS"))
            self.input_buffer.clear()
            self.flush_replies()  # the 220 first
            # Not a TLS record: the client's handshake fails, then we hang up.
            self.writer.write(b"\x15\x03\x03\x00\x02\x02\x28")
            self.close()
            return
        HardenedESMTP.do_STARTTLS(self, rest)

    def message_received(self, envelope: Envelope, data: bytes) -> Decision[Reply]:
        """Accept, refuse, defer or stall the whole transaction, as its recipients say."""
        f = self.factory
        if self._drop_in_data:
            # The whole body came in one read with DATA: hang up all the same.
            self._drop_in_data = False
            self.abort()
            return Deferred()
        decisions = [cast(_Decision, r.info) for r in envelope.recipients]
        b = decisions[0].behaviour
        names = [d.behaviour.name for d in decisions]
        if b.action == "stall":
            for r, name in zip(envelope.recipients, names, strict=True):
                f.stats.answer("stalled", name, r.path.address)
            return f.stall(b.stall)
        if b.action in ("reject", "defer") and b.at == "data":
            attempts = [f.attempt(r.path.address) for r in envelope.recipients]
            if not (b.action == "defer" and b.times and min(attempts) > b.times):
                outcome = "rejected" if b.code >= 500 else "deferred"
                for r, name in zip(envelope.recipients, names, strict=True):
                    f.stats.answer(outcome, name, r.path.address)
                return Reply(b.code, b.status, b.text.replace(
                    "{rcpt}", envelope.recipients[0].path.address))
        return f.accept(envelope, data, decisions)


class _Silent(Reply):
    """A reply already sent by the hook itself (421 then close)."""

    def __init__(self) -> None:
        super().__init__(421, "", "")


class ReturnSender:
    """Mails asynchronous returns to Hurricane's bounce listener.

    Args:
        reactor: provides ``IReactorTCP`` and ``IReactorTime``.
        host: the bounce listener's address.
        port: its port.
        stats: where sent/failed returns are counted.
        helo: our EHLO name.
        concurrency: returns in flight at once.
        attempts: tries per return before it is counted as failed.
        retry_delay: seconds between tries.
    """

    def __init__(self, reactor: IClientReactor, host: str, port: int, stats: SinkStats, *,
                 helo: str = "mx.sink.test", concurrency: int = 8, attempts: int = 5,
                 retry_delay: float = 1.0) -> None:
        from hurricane.outbound.client import Connector

        self._clock = cast(IReactorTime, reactor)
        t = TimeoutsConfig(connect=10, greeting=30, mail=30, rcpt=30, data_init=30,
                           data_block=30, data_end=60)
        self._connector = Connector(cast(IReactorTCP, reactor), t)
        self.host = host
        self.port = port
        self.stats = stats
        self.helo = helo
        self._sem = DeferredSemaphore(concurrency)
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._timers: set[IDelayedCall] = set()
        #: Returns scheduled or in flight.
        self.pending = 0
        self._idle: list[Deferred[None]] = []

    def schedule(self, message: ReturnMessage, delay: float) -> None:
        """Send ``message`` after ``delay`` seconds."""
        self.pending += 1
        self.stats.returns_scheduled[message.kind] += 1

        def fire() -> None:
            self._timers.discard(call)
            d = self._sem.run(lambda: Deferred.fromCoroutine(self._send(message)))
            d.addErrback(lambda f: log.failure("return failed", f))
            d.addBoth(self._done)

        call = self._clock.callLater(delay, fire)
        self._timers.add(call)

    def _done(self, _: object) -> None:
        self.pending -= 1
        if not self.pending:
            waiters, self._idle = self._idle, []
            for w in waiters:
                w.callback(None)

    def when_idle(self) -> Deferred[None]:
        """Fires once no return is scheduled or in flight."""
        d: Deferred[None] = Deferred()
        if not self.pending:
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    async def _send(self, message: ReturnMessage) -> None:
        from hurricane.outbound.interface import (
            ConnectionFailed,
            OutboundMessage,
            OutboundRecipient,
        )

        if message.kind == "unsubscribe":
            await self._post(message)
            return
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                conn = await self._connector.connect(
                    self.host, self.host, self.port, tls_policy=TlsPolicy.none, helo=self.helo)
            except ConnectionFailed as e:
                error = str(e)
            else:
                try:
                    (result,) = await conn.send(OutboundMessage(
                        message.mail_from, (OutboundRecipient(0, message.rcpt),),
                        message.data))
                finally:
                    await conn.close()
                if result.delivered:
                    self.stats.returns_sent[message.kind] += 1
                    log.debug("sent {kind} to {rcpt}", kind=message.kind, rcpt=message.rcpt)
                    return
                error = str(result.reply or result.error)
                if result.reply is not None and result.reply.permanent:
                    break
            if attempt < self._attempts:
                d: Deferred[None] = Deferred()
                self._clock.callLater(self._retry_delay * attempt, d.callback, None)
                await d
        self.stats.returns_failed[message.kind] += 1
        log.warn("could not send {kind} to {rcpt}: {error}", kind=message.kind,
                 rcpt=message.rcpt, error=error)

    async def _post(self, message: ReturnMessage) -> None:
        """The RFC 8058 one-click POST of an ``unsubscribe`` return (``rcpt`` is the URL).

        Only to a loopback address: the URL comes from the received message,
        and the sink is a test tool that talks to nothing else.
        """
        from twisted.web.client import Agent, FileBodyProducer, readBody
        from twisted.web.http_headers import Headers

        parts = urlsplit(message.rcpt)
        try:
            loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if parts.scheme != "http" or not loopback:
            self.stats.returns_failed[message.kind] += 1
            log.warn("not posting an unsubscribe to {url}: only http on loopback",
                     url=message.rcpt[:200])
            return
        agent = Agent(cast(IReactorTCP, self._clock))
        try:
            response = await agent.request(
                b"POST", message.rcpt.encode("ascii"),
                Headers({b"content-type": [b"application/x-www-form-urlencoded"]}),
                FileBodyProducer(BytesIO(message.data)))
            await readBody(response)
        except Exception as e:
            self.stats.returns_failed[message.kind] += 1
            log.warn("unsubscribe POST to {url} failed: {error}", url=message.rcpt[:200],
                     error=str(e))
            return
        if response.code == 200:
            self.stats.returns_sent[message.kind] += 1
        else:
            self.stats.returns_failed[message.kind] += 1
            log.warn("unsubscribe POST to {url}: {code}", url=message.rcpt[:200],
                     code=response.code)

    def cancel(self) -> None:
        """Forget returns not yet started (on shutdown)."""
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()


class ProviderState:
    """The sink's provider-wide counters: accepted recipients in the last second,
    and accepted and complaining recipients since the start (issue 19).

    Args:
        play: the scenario's provider settings.
    """

    def __init__(self, play: ProviderPlay) -> None:
        self.play = play
        self._window: deque[float] = deque()
        self.accepted_total = 0
        self.complaints = 0

    def accepted(self, now: float, complaint: bool) -> None:
        """One recipient accepted (a ``complain`` one when ``complaint``)."""
        self.accepted_total += 1
        self.complaints += complaint
        if self.play.rate_limit > 0:
            self._window.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        # bounded: the window never holds more than rate_limit + one transaction
        while self._window and (self._window[0] <= now - 1.0
                                or len(self._window) > self.play.rate_limit + 1000):
            self._window.popleft()

    def refusal(self, now: float) -> str | None:
        """``block``, ``rate`` or None for one more RCPT now."""
        p = self.play
        if (p.complaint_rate > 0 and self.accepted_total >= p.complaint_min
                and self.complaints / self.accepted_total > p.complaint_rate):
            return "block"
        if p.rate_limit > 0:
            self._trim(now)
            if len(self._window) >= p.rate_limit:
                return "rate"
        return None


class SinkFactory(HardenedFactory):
    """The smart sink: builds :class:`SinkESMTP` protocols sharing one scenario and state.

    Args:
        scenario: who gets what.
        clock: the injected reactor time.
        returns: sends asynchronous returns; None counts them as scheduled
            but sends nothing (unit tests, ``--no-returns``).
        dump_dir: write every accepted message here (one file per recipient).
        tls_context: server context for STARTTLS (``tls`` ``on`` or ``fail``).
        limits: listener limits (default :data:`SINK_LIMITS`).
    """

    protocol = SinkESMTP

    def __init__(self, scenario: Scenario, clock: IReactorTime, *,
                 returns: ReturnSender | None = None, dump_dir: str | None = None,
                 tls_context: IOpenSSLServerConnectionCreator | None = None,
                 limits: ServerLimits = SINK_LIMITS,
                 stats: SinkStats | None = None) -> None:
        if scenario.tls != "off" and tls_context is None:
            raise ValueError(f"tls = {scenario.tls!r} needs a certificate")
        super().__init__(scenario.hostname, limits, clock,
                         tls_context if scenario.tls != "off" else None)
        self.scenario = scenario
        self.tls_mode = scenario.tls
        self.stats = stats or (returns.stats if returns is not None else SinkStats())
        self.returns = returns
        self.dump_dir = dump_dir
        self._attempts: Counter[str] = Counter()
        self.provider = ProviderState(scenario.provider)
        self._serial = 0
        self._stalls: set[IDelayedCall] = set()
        #: Every accepted (message, recipient), when ``keep`` is set (tests).
        self.accepted: list[tuple[Accepted, Behaviour]] = []
        self.keep = False
        #: Called with each accepted (message, recipient) pair.
        self.on_accept: Callable[[Accepted, Behaviour], None] | None = None
        if dump_dir:
            os.makedirs(dump_dir, exist_ok=True)

    def provider_refusal(self, address: str) -> Reply | None:
        """The provider's refusal of one more RCPT (rate or complaints), if any."""
        verdict = self.provider.refusal(self.clock.seconds())
        if verdict is None:
            return None
        self.stats.answer("rejected" if verdict == "block" else "deferred",
                          f"provider-{verdict}", address)
        if verdict == "block":
            return Reply(554, "5.7.1", "Service unavailable; sender blocked due to user "
                         "complaints (policy)")
        return Reply(421, "4.7.28", "Our system has detected an unusual rate of mail from "
                     "your IP address: rate limited, slow down")

    def attempt(self, address: str) -> int:
        """Count one more attempt at ``address``; return the count (1 for the first)."""
        key = address.lower()
        self._attempts[key] += 1
        return self._attempts[key]

    def stall(self, seconds: float) -> Deferred[Reply]:
        """A reply that comes only after ``seconds`` (451 4.4.2)."""
        d: Deferred[Reply] = Deferred()

        def fire() -> None:
            self._stalls.discard(call)
            d.callback(Reply(451, "4.4.2", "Error: timeout, try again later"))

        call = self.clock.callLater(seconds, fire)
        self._stalls.add(call)
        return d

    def accept(self, envelope: Envelope, data: bytes, decisions: list[_Decision]) -> Reply:
        """Count, dump and schedule returns for an accepted transaction."""
        self._serial += 1
        queue_id = f"S{self._serial:08X}"
        now = self.clock.seconds()
        self.stats.messages += 1
        for r, d in zip(envelope.recipients, decisions, strict=True):
            b = d.behaviour
            self.provider.accepted(now, b.then == "arf")
            self.stats.answer("accepted", b.name, r.path.address)
            acc = Accepted(envelope.sender.address, r.path.address, data, now, queue_id)
            if self.keep:
                self.accepted.append((acc, b))
            if self.on_accept is not None:
                self.on_accept(acc, b)
            if self.dump_dir:
                self._dump(acc, b)
            ret = build_return(acc, b, self.scenario.hostname, now + b.delay)
            if ret is not None:
                if self.returns is not None:
                    self.returns.schedule(ret, b.delay)
                else:
                    self.stats.returns_scheduled[ret.kind] += 1
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    def _dump(self, acc: Accepted, b: Behaviour) -> None:
        assert self.dump_dir is not None
        path = os.path.join(self.dump_dir, f"{acc.queue_id}-{self.stats.total('accepted'):07d}.eml")
        head = (f"X-Sink-Mail-From: <{acc.mail_from}>\r\nX-Sink-Rcpt-To: <{acc.rcpt}>\r\n"
                f"X-Sink-Behaviour: {b.name}\r\n").encode("utf-8", "replace")
        try:
            with open(path, "wb") as fp:
                fp.write(head + acc.data)
        except OSError as e:
            log.warn("cannot dump {path}: {error}", path=path, error=e.strerror)

    def stop(self) -> None:
        """Cancel stalls and returns not yet started."""
        for call in list(self._stalls):
            if call.active():
                call.cancel()
        self._stalls.clear()
        if self.returns is not None:
            self.returns.cancel()

    def write_stats(self, path: str) -> None:
        """Write :meth:`SinkStats.as_dict` to ``path`` atomically."""
        tmp = path + ".tmp"
        with open(tmp, "w") as fp:
            json.dump(self.stats.as_dict(), fp, sort_keys=True)
        os.replace(tmp, path)


def tls_context_for(hostname: str) -> CertificateOptions:
    """A server TLS context with a certificate for ``hostname`` and 127.0.0.1 (trustme).

    Raises:
        RuntimeError: when trustme is not installed.
    """
    try:
        import trustme
    except ImportError:
        raise RuntimeError("STARTTLS needs trustme (pip install trustme)") from None
    from OpenSSL import crypto
    from twisted.internet import ssl

    ca = trustme.CA()
    cert = ca.issue_cert(hostname, "127.0.0.1", "localhost")
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, cert.private_key_pem.bytes())
    chain = [ssl.Certificate.loadPEM(b.bytes()).original for b in cert.cert_chain_pems]
    return ssl.CertificateOptions(privateKey=key, certificate=chain[0],
                                  extraCertChain=chain[1:])
