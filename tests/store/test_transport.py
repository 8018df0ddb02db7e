"""Issue 21's store reads and the TLS report built from them (SQLite and PostgreSQL).

The report's counts are checked against the attempts this test records,
spread over domains, days, policies and results (including attempts that
must not count: another day, another domain, no TLS result).
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import random
import tempfile
from collections import Counter
from email import message_from_bytes
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from hurricane.model import AttemptResult, BounceEvent, EventKind, ReturnedMessage, State
from hurricane.store.sqlite import SqliteStore
from hurricane.store.transport import FirstUse, StoredStsPolicy
from hurricane.tlsrpt import (
    DailyReports,
    ReportSender,
    build_report,
    day_range,
)

from .contract import message
from .test_postgres import PostgresMixin

DAY = datetime.date(2026, 12, 5)
START, END = day_range(DAY)
RESULTS = ("success", "success", "success", "starttls-not-supported", "certificate-expired")


async def new_delivery(store: Any, recipient: str) -> int:
    """One message to ``recipient``, created before the day; its delivery id."""
    result = await store.enqueue(message(recipient), START - 100)
    return int(result.recipients[0].delivery_id)


async def record_attempts(store: Any,
                          rng: random.Random) -> Counter[tuple[str, str, str | None, str]]:
    """Random attempts for two domains around the day; the counts expected in its reports."""
    expected: Counter[tuple[str, str, str | None, str]] = Counter()
    results = []
    for i in range(120):
        domain = rng.choice(("a.test", "b.test"))
        did = await new_delivery(store, f"u{i}@{domain}")
        at = rng.choice((START - 10, START, START + 40000, END - 0.5, END))
        sts = rng.random() < 0.5
        result = rng.choice((*RESULTS, None))
        policy_type = "sts" if sts else "no-policy-found"
        policy_id = "enforce 1" if sts else None
        results.append(AttemptResult(
            delivery_id=did, at=at, state=State.delivered if result == "success"
            else State.deferred, remote_host=f"mx.{domain}", remote_ip="192.0.2.1",
            source_ip=rng.choice(("127.0.0.2", "127.0.0.3")),
            tls_policy_type=policy_type if result else None,
            tls_policy_id=policy_id if result else None, tls_result=result))
        if result is not None and START <= at < END:
            expected[(domain, policy_type, policy_id, result)] += 1
    await store.record_attempts(results)
    return expected


class TransportMixin:
    """The reads against ``self.store``."""

    store: Any
    assertEqual: Any
    assertIsNone: Any
    assertIn: Any
    assertNotIn: Any

    async def make_store(self) -> Any:
        raise NotImplementedError

    async def setUp(self) -> None:  # noqa: D102 - trial hook
        self.store = await self.make_store()

    async def delivery(self, recipient: str) -> int:
        return await new_delivery(self.store, recipient)

    async def record(self, rng: random.Random) -> Counter[tuple[str, str, str | None, str]]:
        return await record_attempts(self.store, rng)

    async def test_report_counts_equal_the_recorded_attempts(self) -> None:
        """Per domain and policy, successes and failures are the attempts of that day."""
        expected = await self.record(random.Random(7))
        counts = await self.store.tls_attempts(START, END)
        for domain in ("a.test", "b.test"):
            report = build_report(domain, DAY, counts, organization="Shop", contact="tls@shop")
            self.assertEqual(report["date-range"], {"start-datetime": "2026-12-05T00:00:00Z",
                                                    "end-datetime": "2026-12-05T23:59:59Z"})
            got: Counter[tuple[str, str, str | None, str]] = Counter()
            for p in report["policies"]:
                ptype = p["policy"]["policy-type"]
                pid = "enforce 1" if ptype == "sts" else None
                got[(domain, ptype, pid, "success")] += p["summary"][
                    "total-successful-session-count"]
                failures = sum(d["failed-session-count"] for d in p.get("failure-details", []))
                self.assertEqual(failures, p["summary"]["total-failure-session-count"])
                for d in p.get("failure-details", []):
                    got[(domain, ptype, pid, d["result-type"])] += d["failed-session-count"]
            want = {k: v for k, v in expected.items() if k[0] == domain}
            self.assertEqual(+got, want)
        only_a = await self.store.tls_attempts(START, END, "A.test")
        self.assertEqual({c.domain for c in only_a}, {"a.test"})

    async def test_sts_policy_kept(self) -> None:
        """A policy saved is loaded as saved; saving again replaces it."""
        p = StoredStsPolicy("example.test", "1", "enforce", ("mx.example.test", "*.mx.test"),
                            86400.0, "version: STSv1\nmode: enforce\n", 10.0, 86410.0)
        await self.store.save_sts_policy(p)
        self.assertEqual(await self.store.load_sts_policy("Example.TEST"), p)
        newer = StoredStsPolicy("example.test", "2", "testing", ("mx.example.test",), 60.0,
                                "x", 20.0, 80.0)
        await self.store.save_sts_policy(newer)
        self.assertEqual(await self.store.load_sts_policy("example.test"), newer)
        self.assertIsNone(await self.store.load_sts_policy("other.test"))

    async def test_warmup_kept(self) -> None:
        """A first use is kept once (a later one does not move it); day counts are replaced."""
        await self.store.save_warmup([FirstUse("127.0.0.2", "google.com", 5.0, 1, 10),
                                      FirstUse("127.0.0.3", "google.com", 7.0, 1, 3)])
        await self.store.save_warmup([FirstUse("127.0.0.2", "google.com", 9.0, 2, 4)])
        self.assertEqual(await self.store.first_uses(),
                         [FirstUse("127.0.0.2", "google.com", 5.0, 2, 4),
                          FirstUse("127.0.0.3", "google.com", 7.0, 1, 3)])

    async def test_warmup_counts_survive_a_restart(self) -> None:
        """The server's warm-up service saves the day's counts (every 2 s on its clock,
        and at stop) and loads them at start: the limit holds across a restart."""
        from hurricane.config import DeliveryConfig, SendingPoolConfig
        from hurricane.outbound.pools import transport_services

        config = DeliveryConfig(pool="p", pools=(SendingPoolConfig(
            "p", ("192.0.2.10",), warmup=((1, 5),)),))
        clock = Clock()
        clock.advance(START)

        async def no_txt(name: str) -> list[str]:
            return []

        async def start() -> tuple[Any, Any]:
            pools, _, services = transport_services(config, clock, no_txt, self.store)
            services[0].startService()
            await services[0].loaded
            return pools, services[0]

        pools, service = await start()
        self.assertEqual(pools.warmup.take("192.0.2.10", "google.com", 2), 2)
        clock.advance(2)
        await service.stopService()  # the periodic save ran; this saves what is left
        self.assertEqual(await self.store.first_uses(),
                         [FirstUse("192.0.2.10", "google.com", START, 1, 2)])
        pools, service = await start()
        self.assertEqual(pools.warmup.take("192.0.2.10", "google.com", 9), 3)
        await service.stopService()
        self.assertEqual((await self.store.first_uses())[0].sent, 5)

    async def test_source_outcomes(self) -> None:
        """Attempts by state per source address, in the window."""
        a = await self.delivery("x@a.test")
        b = await self.delivery("y@a.test")
        await self.store.record_attempts([
            AttemptResult(delivery_id=a, at=START + 1, state=State.deferred, source_ip="127.0.0.2"),
            AttemptResult(delivery_id=a, at=START + 2, state=State.delivered,
                          source_ip="127.0.0.3"),
            AttemptResult(delivery_id=b, at=END + 1, state=State.delivered, source_ip="127.0.0.2"),
        ])
        bounce_id = await self.store.store_bounce(ReturnedMessage(
            b"Subject: x\r\n\r\nx", "", "b@bounce.test", START + 5))
        await self.store.record_bounce(bounce_id, [BounceEvent(
            delivery_id=a, kind=EventKind.bounce, at=START + 5, bounce_id=bounce_id,
            reason="userunknown", status="5.1.1", correlation="verp")], "bounce", "verp", "{}")
        found = {(c.source_ip, c.what, c.count) for c in
                 await self.store.source_outcomes(START, END)}
        self.assertEqual(found, {("127.0.0.2", "deferred", 1), ("127.0.0.3", "delivered", 1),
                                 ("127.0.0.3", "bounced", 1)})
        outcome = {o.delivery_id: o.source_ip for o in await self.store.outcomes()}
        self.assertEqual(outcome, {a: "127.0.0.3", b: "127.0.0.2"})

    async def test_sender_mails_and_posts(self) -> None:
        """Domains with a rua get their report by mail (enqueued) or POST; others get none."""
        await self.record(random.Random(3))
        queued: list[Any] = []
        posted: list[tuple[str, bytes]] = []
        records = {"_smtp._tls.a.test": ["v=TLSRPTv1; rua=mailto:tls@a.test"],
                   "_smtp._tls.b.test": ["v=TLSRPTv1;rua=https://rpt.b.test/x,ftp://no"]}

        async def lookup(name: str) -> list[str]:
            return records.get(name, [])

        async def enqueue(m: Any) -> None:
            queued.append(m)

        async def post(url: str, data: bytes) -> None:
            posted.append((url, data))

        sender = ReportSender(self.store, enqueue, lookup, post, organization="Shop",
                              contact="tlsrpt@shop.test", submitter="shop.test")
        sent = await sender.send_day(DAY)
        self.assertEqual(sent, [("a.test", "mailto:tls@a.test"),
                                ("b.test", "https://rpt.b.test/x")])
        report = json.loads(gzip.decompress(posted[0][1]))
        self.assertEqual(report["report-id"], "2026-12-05T00:00:00Z_b.test")
        mail = message_from_bytes(queued[0].body)
        self.assertEqual(mail["TLS-Report-Domain"], "a.test")
        attached = [p for p in mail.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        self.assertEqual(json.loads(gzip.decompress(attached[0].get_payload(decode=True)))[
            "report-id"], "2026-12-05T00:00:00Z_a.test")

    async def test_daily_job_sends_yesterday_once(self) -> None:
        """The job sends the previous UTC day once, remembered in the store; then the next."""
        await self.record(random.Random(5))
        days: list[datetime.date] = []

        class Sender:
            async def send_day(self, day: datetime.date) -> list[tuple[str, str]]:
                days.append(day)
                return []

        clock = Clock()
        clock.advance(END + 3600)  # 01:00 on the 6th
        job = DailyReports(Sender(), self.store, clock)  # type: ignore[arg-type]
        self.assertEqual(await job.tick(), DAY)
        self.assertIsNone(await job.tick())
        again = DailyReports(Sender(), self.store, clock)  # type: ignore[arg-type]
        self.assertIsNone(await again.tick())  # a restart does not send twice
        clock.advance(86400)
        self.assertEqual(await job.tick(), DAY + datetime.timedelta(days=1))
        self.assertEqual(days, [DAY, DAY + datetime.timedelta(days=1)])


class SqliteTransportTests(TransportMixin, TestCase):
    """On SQLite."""

    async def make_store(self) -> Any:
        store = SqliteStore(os.path.join(tempfile.mkdtemp(), "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        return store


class PostgresTransportTests(PostgresMixin, TransportMixin, TestCase):
    """On PostgreSQL."""

    async def make_store(self) -> Any:
        self.make_schema()
        return await self.open_store()
