"""SMTP TLS reports (RFC 8460) from the attempts Hurricane already records.

Every attempt that reached a TLS decision records its policy
(``tls_policy_type`` ``sts`` or ``no-policy-found``, ``tls_policy_id`` the
MTA-STS ``MODE ID``) and its result (``success`` or an RFC 8460 result
type): :mod:`hurricane.outbound.dialer`. A day's report for a recipient
domain is those attempts grouped by policy, with the failures by result,
sending address, MX host and MX address. Hurricane counts *attempts* (one
per recipient and try), which is what it records: a session carrying ten
recipients counts ten, a fact the docs state (docs/transport.md).

Reports go where the domain's ``_smtp._tls`` TXT record (``v=TLSRPTv1;
rua=...``) says: ``mailto:`` through our own outbound queue (a message
with the gzipped JSON, RFC 8460 5.3), ``https:`` as a gzipped POST (5.4).
``hurricane tlsrpt --config FILE --day YYYY-MM-DD [--domain D]`` prints
them without sending (``--send`` sends).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, TextIO

import treq
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from hurricane.model import NewMessage, NewRecipient
from hurricane.store.transport import ITransportStore, StoredStsPolicy, TlsAttemptCount

if TYPE_CHECKING:
    from hurricane.config import Config
    from hurricane.reactors import IStoreReactor
    from hurricane.store.interface import IOutcomeStore

__all__ = ["MAX_RUA", "DailyReports", "ReportSender", "add_parser", "build_report",
           "day_range", "https_poster", "report_message", "rua_of", "tlsrpt_service"]

log = Logger()

#: Report destinations used per domain at most.
MAX_RUA = 5
#: Bytes of one report at most (mail and POST alike).
MAX_REPORT_BYTES = 10 * 1024 * 1024
DAY = 86400


def day_range(day: datetime.date) -> tuple[float, float]:
    """[start, end) of a UTC day, in epoch seconds."""
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
    return start, start + DAY


def rua_of(records: Sequence[str]) -> list[str]:
    """The ``rua`` URIs of the one ``v=TLSRPTv1`` record (mailto: and https: only)."""
    found = [r for r in records if r.replace(" ", "").startswith("v=TLSRPTv1;")]
    if len(found) != 1:
        return []
    for part in found[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "rua":
            uris = [u.strip() for u in value.split(",")]
            return [u for u in uris if u.startswith(("mailto:", "https://"))][:MAX_RUA]
    return []


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(domain: str, day: datetime.date, counts: Sequence[TlsAttemptCount], *,
                 organization: str, contact: str,
                 policies: dict[str, StoredStsPolicy] | None = None) -> dict[str, object]:
    """The RFC 8460 4.4 report of ``domain`` for ``day`` from its grouped attempts.

    Args:
        domain: the policy domain (the recipient domain).
        day: the UTC day.
        counts: :meth:`ITransportStore.tls_attempts` rows (other domains are skipped).
        organization: organization-name.
        contact: contact-info.
        policies: the kept MTA-STS policies by domain (policy-string and mx-host).

    Returns:
        the report as JSON-ready data.
    """
    start, end = day_range(day)
    groups: dict[tuple[str, str | None], dict[str, object]] = {}
    for c in counts:
        if c.domain != domain.lower():
            continue
        key = (c.policy_type, c.policy_id)
        entry = groups.get(key)
        if entry is None:
            entry = {"policy": _policy(domain, c.policy_type, c.policy_id, policies or {}),
                     "summary": {"total-successful-session-count": 0,
                                 "total-failure-session-count": 0},
                     "failure-details": {}}
            groups[key] = entry
        summary = entry["summary"]
        assert isinstance(summary, dict)
        if c.result == "success":
            summary["total-successful-session-count"] += c.count
            continue
        summary["total-failure-session-count"] += c.count
        details = entry["failure-details"]
        assert isinstance(details, dict)
        dkey = (c.result, c.source_ip, c.remote_host, c.remote_ip)
        details[dkey] = details.get(dkey, 0) + c.count
    result: list[dict[str, object]] = []
    for entry in groups.values():
        details = entry.pop("failure-details")
        assert isinstance(details, dict)
        rows = [{k: v for k, v in (("result-type", r), ("sending-mta-ip", s),
                                   ("receiving-mx-hostname", h), ("receiving-ip", i),
                                   ("failed-session-count", n)) if v is not None}
                for (r, s, h, i), n in sorted(details.items(), key=lambda kv: str(kv[0]))]
        if rows:
            entry["failure-details"] = rows
        result.append(entry)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _iso(start), "end-datetime": _iso(end - 1)},
        "contact-info": contact,
        "report-id": f"{_iso(start)}_{domain.lower()}",
        "policies": result,
    }


def _policy(domain: str, policy_type: str, policy_id: str | None,
            policies: dict[str, StoredStsPolicy]) -> dict[str, object]:
    policy: dict[str, object] = {"policy-type": policy_type, "policy-domain": domain.lower()}
    kept = policies.get(domain.lower())
    if policy_type == "sts" and kept is not None and policy_id == f"{kept.mode} {kept.policy_id}":
        policy["policy-string"] = [line for line in kept.policy.splitlines() if line.strip()]
        policy["mx-host"] = list(kept.mx)
    return policy


def report_message(report: dict[str, object], domain: str, sender: str, rua: str,
                   submitter: str) -> NewMessage:
    """The RFC 8460 5.3 message carrying a report to a ``mailto:`` rua."""
    data = gzip.compress(json.dumps(report).encode(), mtime=0)
    msg = EmailMessage()
    report_id = str(report["report-id"])
    msg["From"] = sender
    msg["To"] = rua.removeprefix("mailto:")
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=submitter or None)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg.set_content(f"TLS report for {domain}, {report_id}.\n")
    msg.add_attachment(data, maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{submitter}!{domain}!{report_id}.json.gz")
    msg.replace_header("Content-Type", msg.get_content_type() + '; report-type="tlsrpt"')
    return NewMessage(sender=sender, recipients=(NewRecipient(msg["To"]),),
                      body=bytes(msg), mailing_id="tlsrpt")


class ReportSender:
    """Sends one day's reports to the domains that ask for them.

    Args:
        store: the attempts and kept policies; enqueues the ``mailto:`` reports.
        lookup: TXT look-up (``_smtp._tls.DOMAIN``).
        post: HTTPS POST of gzipped bytes to a URL (raises on failure).
        organization, contact, submitter: the report's and the message's names.
    """

    def __init__(self, store: ITransportStore, enqueue: Callable[[NewMessage], Awaitable[object]],
                 lookup: Callable[[str], Awaitable[list[str]]],
                 post: Callable[[str, bytes], Awaitable[None]], *, organization: str,
                 contact: str, submitter: str) -> None:
        self._store = store
        self._enqueue = enqueue
        self._lookup = lookup
        self._post = post
        self._organization = organization
        self._contact = contact
        self._submitter = submitter

    async def send_day(self, day: datetime.date) -> list[tuple[str, str]]:
        """Send ``day``'s reports; return the (domain, rua) each went to."""
        counts = await self._store.tls_attempts(*day_range(day))
        sent: list[tuple[str, str]] = []
        for domain in sorted({c.domain for c in counts}):
            uris = rua_of(await self._lookup(f"_smtp._tls.{domain}"))
            if not uris:
                continue
            kept = await self._store.load_sts_policy(domain)
            report = build_report(domain, day, counts, organization=self._organization,
                                  contact=self._contact,
                                  policies={domain: kept} if kept is not None else None)
            for uri in uris:
                if uri.startswith("mailto:"):
                    await self._enqueue(report_message(report, domain, self._contact, uri,
                                                       self._submitter))
                else:
                    await self._post(uri, gzip.compress(json.dumps(report).encode(), mtime=0))
                sent.append((domain, uri))
        return sent


# -- the command --------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``hurricane tlsrpt``."""
    from hurricane.cli import _add_config

    p = sub.add_parser("tlsrpt", help="print a day's TLS reports (RFC 8460) as JSON")
    _add_config(p)
    p.add_argument("--day", required=True, help="the UTC day, YYYY-MM-DD")
    p.add_argument("--domain", help="only this recipient domain")
    p.set_defaults(func=cmd_tlsrpt)


def cmd_tlsrpt(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print one JSON report per line, one per recipient domain with attempts that day."""
    from hurricane.cli import EXIT_OK, CommandError, _config, _run_store

    try:
        day = datetime.date.fromisoformat(args.day)
    except ValueError:
        raise CommandError(f"--day: expected YYYY-MM-DD, got {args.day!r}") from None
    config: Config = _config(args)
    stream = out or sys.stdout

    async def work(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        del reactor
        if not isinstance(store, ITransportStore):
            raise CommandError("tlsrpt needs an SQL store (sqlite or postgresql)")
        domain = args.domain.lower() if args.domain else None
        counts = await store.tls_attempts(*day_range(day), domain)
        for name in sorted({c.domain for c in counts}):
            kept = await store.load_sts_policy(name)
            report = build_report(name, day, counts, organization=(
                config.delivery.tlsrpt.organization or config.server.hostname),
                contact=config.delivery.tlsrpt.contact,
                policies={name: kept} if kept is not None else None)
            stream.write(json.dumps(report, sort_keys=True) + "\n")
        return EXIT_OK

    return _run_store(config, work)


# -- the daily job -------------------------------------------------------------------


def https_poster(agent: IAgent, clock: object,
                 timeout: float = 60.0) -> Callable[[str, bytes], Awaitable[None]]:
    """A POST of a gzipped report (RFC 8460 5.4) through a verifying agent."""
    async def post(url: str, data: bytes) -> None:
        if len(data) > MAX_REPORT_BYTES:
            raise ValueError(f"report of {len(data)} bytes is too large")
        headers = Headers({b"Content-Type": [b"application/tlsrpt+gzip"]})
        response = await treq.post(url, data=data, agent=agent, timeout=timeout,
                                   allow_redirects=False, headers=headers,
                                   reactor=clock)  # type: ignore[arg-type]
        if not 200 <= response.code < 300:
            raise ValueError(f"{url} answered HTTP {response.code}")
    return post


class DailyReports:
    """Sends yesterday's reports once (the store remembers the last day sent).

    Args:
        sender: builds and sends a day's reports.
        store: the mark of the last day sent.
        clock: today (UTC).
    """

    def __init__(self, sender: ReportSender, store: ITransportStore, clock: IReactorTime) -> None:
        self._sender = sender
        self._store = store
        self._clock = clock

    async def tick(self) -> datetime.date | None:
        """Send yesterday's reports unless done; return the day sent, or None."""
        today = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.UTC).date()
        yesterday = today - datetime.timedelta(days=1)
        if await self._store.tlsrpt_day() >= yesterday.toordinal():
            return None
        await self._sender.send_day(yesterday)
        await self._store.set_tlsrpt_day(yesterday.toordinal())
        return yesterday

    def service(self, interval: float = 3600.0) -> TimerService:
        """A TimerService running :meth:`tick` every ``interval`` seconds on the clock."""
        def run() -> Deferred[datetime.date | None]:
            d = Deferred.fromCoroutine(self.tick())
            d.addErrback(lambda f: log.failure("sending TLS reports failed", f))
            return d
        timer = TimerService(interval, run)
        timer.clock = self._clock
        return timer


def tlsrpt_service(config: Config, store: IOutcomeStore, reactor: IReactorTime,
                   lookup: Callable[[str], Awaitable[list[str]]],
                   wake: Callable[[], None]) -> list[TimerService]:
    """The daily TLS report job of ``[delivery.tlsrpt]`` (none when off or without SQL).

    Args:
        config: the configuration.
        store: the outcome store (its attempts; the mailto: reports are enqueued in it).
        reactor: timers and HTTPS.
        lookup: TXT look-up.
        wake: tells the outbound queue a report was enqueued.
    """
    settings = config.delivery.tlsrpt
    keeper = store
    if not settings.enabled or not isinstance(keeper, ITransportStore):
        return []
    from hurricane.outbound.stsfetch import https_agent

    async def enqueue(message: NewMessage) -> None:
        await store.enqueue(message, reactor.seconds())
        wake()

    sender = ReportSender(keeper, enqueue, lookup, https_poster(https_agent(reactor), reactor),
                          organization=settings.organization or config.server.hostname,
                          contact=settings.contact or f"postmaster@{config.server.hostname}",
                          submitter=config.server.hostname)
    return [DailyReports(sender, keeper, reactor).service()]
