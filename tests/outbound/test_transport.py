"""Issue 21 in the scheduler: sending pools, warm-up limits and MTA-STS, on fakes and a Clock."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import SendingPoolConfig, TlsPolicyConfig
from hurricane.model import State
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.interface import ConnectionFailed
from hurricane.outbound.mtasts import MtaSts, StsError, parse_policy, sts_record_id
from hurricane.outbound.mx import MXResolver
from hurricane.outbound.pools import Pools, SendingPool
from hurricane.outbound.queue import OutboundSettings
from hurricane.outbound.warmup import CURVES, DAY, Warmup, WarmupSchedule, mx_provider
from hurricane.store.transport import FirstUse

from .fakes import FakeConnection, FakeConnector
from .test_queue import OutboundService, SchedulerTestCase

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n"


@dataclass
class SourceConnector(FakeConnector):
    """A FakeConnector that remembers the source and EHLO name of each connection."""

    sources: list[tuple[str, str]] = field(default_factory=list)

    async def connect(self, host: str, ip: str, port: int, *, tls_policy: str,
                      helo: str, source: str = "") -> FakeConnection:
        self.sources.append((source, helo))
        return await super().connect(host, ip, port, tls_policy=tls_policy, helo=helo,
                                     source=source)


class PoolChoiceTests(SynchronousTestCase):
    """Round robin, weights, and addresses whose warm-up is spent."""

    def test_round_robin(self) -> None:
        """Equal weights take turns."""
        pool = SendingPool("p", ["192.0.2.10", "192.0.2.11", "192.0.2.12"])
        self.assertEqual([pool.choose("x") for _ in range(6)],
                         ["192.0.2.10", "192.0.2.11", "192.0.2.12"] * 2)

    def test_weighted(self) -> None:
        """Shares follow the weights exactly over a full cycle, interleaved."""
        pool = SendingPool("p", ["192.0.2.10", "192.0.2.11"], weights={"192.0.2.10": 3})
        picks = [pool.choose("x") for _ in range(8)]
        self.assertEqual(Counter(picks), {"192.0.2.10": 6, "192.0.2.11": 2})
        self.assertNotEqual(picks[:3], ["192.0.2.10"] * 3)  # smooth, not bursts

    def test_spent_address_skipped(self) -> None:
        """An address at its day's limit for a provider is not chosen for it."""
        clock = Clock()
        warmup = Warmup(clock, {"192.0.2.10": WarmupSchedule(((1, 2),))})
        pool = SendingPool("p", ["192.0.2.10", "192.0.2.11"], warmup=warmup)
        self.assertEqual(warmup.take("192.0.2.10", "google.com", 5), 2)
        self.assertEqual({pool.choose("google.com") for _ in range(4)}, {"192.0.2.11"})
        self.assertIn("192.0.2.10", {pool.choose("yahoo.com") for _ in range(4)})


class WarmupTests(SynchronousTestCase):
    """The schedule by day from first use."""

    def test_schedule_by_day(self) -> None:
        """Each day takes the last step reached; after the last step, no limit."""
        s = WarmupSchedule(((1, 50), (2, 100), (4, 400)))
        self.assertEqual([s.limit(d) for d in range(1, 6)], [50, 100, 100, 400, None])
        self.assertEqual(WarmupSchedule.of((), "standard"), WarmupSchedule(CURVES["standard"]))
        self.assertIsNone(WarmupSchedule.of(()))

    def test_days_count_from_first_use_and_survive_a_restart(self) -> None:
        """Day 2 starts 86,400 s after the first use; what changed is handed to the store
        once, and a Warmup loaded from it keeps the day and the day's count."""
        clock = Clock()
        clock.advance(1000.0)
        schedule = {"a": WarmupSchedule(((1, 3), (2, 5)))}
        w = Warmup(clock, schedule)
        self.assertEqual(w.take("a", "p", 2), 2)
        self.assertEqual(w.changed(), [FirstUse("a", "p", 1000.0, 1, 2)])
        self.assertEqual(w.changed(), [])
        restarted = Warmup(clock, schedule)
        restarted.load([FirstUse("a", "p", 1000.0, 1, 2)])
        self.assertEqual(restarted.take("a", "p", 10), 1)  # 3 a day, 2 sent before
        self.assertEqual(restarted.take("a", "p", 1), 0)
        clock.advance(DAY - 1)
        self.assertEqual(restarted.remaining("a", "p"), 0)
        clock.advance(1)
        self.assertEqual(restarted.day("a", "p"), 2)
        self.assertEqual(restarted.take("a", "p", 10), 5)
        self.assertEqual(restarted.changed(), [FirstUse("a", "p", 1000.0, 2, 5)])
        unlimited = Warmup(clock, {})
        self.assertEqual(unlimited.take("b", "p", 10), 10)
        self.assertEqual(unlimited.changed(), [])

    def test_provider_roll_up(self) -> None:
        """The default provider is the MX host's parent domain."""
        self.assertEqual(mx_provider("gmail.com", "alt1.gmail-smtp-in.l.google.com."),
                         "google.com")
        self.assertEqual(mx_provider("example.com", ""), "example.com")
        self.assertEqual(mx_provider("example.com", "127.0.0.1"), "example.com")  # a route


class PoolSchedulerTestCase(SchedulerTestCase):
    """The scheduler with a pool of two addresses and a warm-up of ``LIMIT`` a day."""

    LIMIT = 7

    def setUp(self) -> None:
        super().setUp()
        self.connector = SourceConnector(self.clock)
        self.pools = Pools([SendingPoolConfig(
            "bulk", ("192.0.2.10", "192.0.2.11"),
            helo={"192.0.2.10": "mta10.shop.example", "192.0.2.11": "mta11.shop.example"},
            warmup=((1, self.LIMIT), (2, 2 * self.LIMIT)))], "bulk", self.clock)
        self.sts: MtaSts | None = None

    def build(self, settings: OutboundSettings, routes: dict[str, str] | None = None,
              dkim_signer: Any = None) -> OutboundService:
        resolver = MXResolver(self.dns, self.clock, routes or {}, 3600, rng=random.Random(0))
        dialer = Dialer(resolver, self.connector, "out.shop.example",
                        settings.delivery.tls_policy, pools=self.pools, sts=self.sts)
        return OutboundService(self.store, dialer, self.codec, self.classifier, settings,
                               self.clock, dkim=dkim_signer, rng=random.Random(0))

    def states(self, ids: list[int]) -> Counter[State]:
        return Counter(self.delivery(i).state for i in ids)


class PoolSchedulerTests(PoolSchedulerTestCase):
    """Every attempt records its source; warm-up limits hold exactly."""

    def test_sources_alternate_with_their_helo(self) -> None:
        """One connection per message: the two addresses take turns, each with its EHLO name."""
        self.start(messages_per_connection=1, max_connections_per_destination=1)
        ids = self.enqueue(*[f"u{i}@example.com" for i in range(6)])
        self.turn()
        self.assertEqual(self.states(ids), {State.delivered: 6})
        self.assertEqual(Counter(self.connector.sources),
                         {("192.0.2.10", "mta10.shop.example"): 3,
                          ("192.0.2.11", "mta11.shop.example"): 3})
        recorded = Counter(r.source_ip for r in self.results().values())
        self.assertEqual(recorded, {"192.0.2.10": 3, "192.0.2.11": 3})

    def test_dial_names_its_pool(self) -> None:
        """dial(pool=...) takes that pool's addresses; "" the default's (the stream hook)."""
        self.pools = Pools([SendingPoolConfig("bulk", ("192.0.2.10",)),
                            SendingPoolConfig("transactional", ("192.0.2.20",),
                                              helo={"192.0.2.20": "tx.shop.example"})],
                           "bulk", self.clock)
        dialer = Dialer(MXResolver(self.dns, self.clock, {}, 3600), self.connector,
                        "out.shop.example", pools=self.pools)
        for pool in ("transactional", ""):
            conn = self.successResultOf(Deferred.fromCoroutine(
                dialer.dial("example.com", lambda: False, pool)))
            assert conn is not None
            self.assertEqual(conn.info.source_ip, "192.0.2.20" if pool else "192.0.2.10")
        self.assertEqual(self.connector.sources[-2:], [("192.0.2.20", "tx.shop.example"),
                                                       ("192.0.2.10", "out.shop.example")])

    def test_warmup_limit_holds_exactly(self) -> None:
        """2 x LIMIT go on day 1 (LIMIT from each address), the rest waits for day 2."""
        self.start(first_retry=3600, max_retry_interval=3600)
        total = 3 * self.LIMIT
        ids = self.enqueue(*[f"u{i}@example.com" for i in range(total)])
        for _ in range(20):
            self.turn(60)
        self.assertEqual(self.states(ids)[State.delivered], 2 * self.LIMIT)
        by_source = Counter(r.source_ip for r in self.results().values()
                            if r.state is State.delivered)
        self.assertEqual(by_source, {"192.0.2.10": self.LIMIT, "192.0.2.11": self.LIMIT})
        waiting = [i for i in ids if self.delivery(i).state is State.deferred]
        self.assertEqual(len(waiting), self.LIMIT)
        self.assertIn("warm-up", self.delivery(waiting[0]).text or "")
        # a day later (day 2: twice the limit) the rest goes
        for _ in range(30):
            self.turn(3600)
        self.assertEqual(self.states(ids), {State.delivered: total})

    def test_per_message_batches_split_at_the_limit(self) -> None:
        """A transaction with more recipients than the day allows sends only what it may."""
        self.pools = Pools([SendingPoolConfig("bulk", ("192.0.2.10",), warmup=((1, 3),))],
                           "bulk", self.clock)
        self.start(verp="per-message", first_retry=3600, max_retry_interval=3600)
        ids = self.enqueue(*[f"u{i}@example.com" for i in range(5)])
        for _ in range(10):
            self.turn(60)
        self.assertEqual(self.states(ids), {State.delivered: 3, State.deferred: 2})
        self.assertEqual(sum(len(m.recipients) for _, m in self.connector.messages), 3)


class MtaStsSchedulerTests(PoolSchedulerTestCase):
    """MTA-STS policies applied by the dialer (fake DNS TXT and fetch)."""

    def setUp(self) -> None:
        super().setUp()
        self.pools = Pools([], "", self.clock)
        self.fetches: list[str] = []
        self.policy = POLICY

        async def lookup(name: str) -> list[str]:
            return ["v=STSv1; id=20260101"] if name == "_mta-sts.example.com" else []

        async def fetch(domain: str) -> bytes:
            self.fetches.append(domain)
            return self.policy

        self.sts = MtaSts(self.clock, lookup, fetch)

    def test_enforce_verifies_the_matching_mx_only(self) -> None:
        """enforce: only mx1 (the policy's) is tried, with verify TLS; the attempt records it."""
        self.connector.failures["192.0.2.1"] = ConnectionFailed(
            "TLS certificate not verified: certificate has expired", "starttls",
            reason="securityerror")
        self.start()
        [did] = self.enqueue("a@example.com")
        self.turn()
        self.assertEqual([a[1:] for a in self.connector.attempts],
                         [("192.0.2.1", 25, "verify")])
        r = self.results()[did]
        self.assertEqual((r.state, r.tls_policy_type, r.tls_policy_id, r.tls_result),
                         (State.deferred, "sts", "enforce 20260101", "certificate-expired"))
        self.assertIn("MTA-STS enforce 20260101", r.text or "")

    def test_enforce_delivers_over_verified_tls(self) -> None:
        """A verified session to the policy's MX delivers and records success."""
        self.start()
        [did] = self.enqueue("a@example.com")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.tls_result), (State.delivered, "success"))
        # the policy is kept by max_age: the next domain look-up fetches nothing
        self.enqueue("b@example.com")
        self.turn()
        self.assertEqual(self.fetches, ["example.com"])

    def test_testing_delivers_and_records_the_failure(self) -> None:
        """testing: the failed verify is recorded, the mail goes with the configured policy."""
        self.policy = POLICY.replace(b"enforce", b"testing")
        self.connector.failures["192.0.2.1"] = ConnectionFailed(
            "STARTTLS required but not offered", "starttls", reason="failedstarttls")
        failures = self.connector.failures

        async def connect(host: str, ip: str, port: int, *, tls_policy: str, helo: str,
                          source: str = "") -> FakeConnection:
            if tls_policy != "verify":
                failures.pop(ip, None)  # the plain retry works
            return await SourceConnector.connect(self.connector, host, ip, port,
                                                 tls_policy=tls_policy, helo=helo, source=source)

        self.connector.connect = connect  # type: ignore[method-assign]
        self.connector.tls = None
        self.start()
        [did] = self.enqueue("a@example.com")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.tls_policy_id, r.tls_result),
                         (State.delivered, "testing 20260101", "starttls-not-supported"))
        self.assertEqual([a[3] for a in self.connector.attempts], ["verify", "opportunistic"])

    def test_fetch_error_recorded(self) -> None:
        """A published policy that cannot be had: delivered as without one, recorded with
        RFC 8460's name for why (not a policy: sts-policy-invalid; no answer: fetch error)."""
        self.policy = b"not a policy"
        self.start()
        [did] = self.enqueue("a@example.com")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.tls_policy_type, r.tls_result),
                         (State.delivered, "no-policy-found", "sts-policy-invalid"))
        self.assertEqual([a[3] for a in self.connector.attempts], ["opportunistic"])

        async def unreachable(domain: str) -> bytes:
            raise ConnectionRefusedError("connection refused")

        self.sts = MtaSts(self.clock, lambda name: succeed(["v=STSv1; id=9"]), unreachable)
        self.service.stopService()
        self.start()
        [did] = self.enqueue("b@example.com")
        self.turn()
        self.assertEqual(self.results()[did].tls_result, "sts-policy-fetch-error")

    def test_domain_tls_policy_overrides(self) -> None:
        """A per-domain tls_policy wins: no policy look-up, no-policy-found recorded."""
        self.start(tls_policy=TlsPolicyConfig(domains={"example.com": "require"}))
        [did] = self.enqueue("a@example.com")
        self.turn()
        r = self.results()[did]
        self.assertEqual((r.state, r.tls_policy_type, r.tls_result),
                         (State.delivered, "no-policy-found", "success"))
        self.assertEqual(self.fetches, [])


class PolicyParsingTests(SynchronousTestCase):
    """RFC 8461 3.1-3.4: the record, the file, the patterns."""

    def test_record(self) -> None:
        """One v=STSv1 record with an alphanumeric id; none or two: no policy."""
        self.assertEqual(sts_record_id(["v=STSv1; id=abc123;"]), "abc123")
        self.assertIsNone(sts_record_id(["v=STSv1; id=a", "v=STSv1; id=b"]))
        self.assertIsNone(sts_record_id(["v=spf1 -all"]))
        self.assertIsNone(sts_record_id(["v=STSv1; id=not valid!"]))

    def test_policy_and_patterns(self) -> None:
        """mx patterns: exact, or *. for one leftmost label."""
        p = parse_policy("Example.com", b"version: STSv1\nmode: testing\nmx: *.mx.example.com\n"
                         b"mx: mail.example.com\nmax_age: 9999999999\n", "1")
        self.assertEqual((p.mode, p.max_age), ("testing", 31557600.0))
        self.assertTrue(p.matches("a.mx.example.com."))
        self.assertFalse(p.matches("a.b.mx.example.com"))
        self.assertTrue(p.matches("MAIL.example.com"))
        self.assertFalse(p.matches("evil-mail.example.com"))

    def test_bad_policies(self) -> None:
        """Wrong version, no mx, no max_age, too long: StsError."""
        for body in (b"version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                     b"version: STSv1\nmode: enforce\nmax_age: 1\n",
                     b"version: STSv1\nmode: enforce\nmx: a\n",
                     b"x" * 70000):
            with self.assertRaises(StsError):
                parse_policy("example.com", body, "1")

    def test_proactive_refresh(self) -> None:
        """refresh() fetches a policy again past half its max_age, same id or not."""
        clock = Clock()
        fetched: list[str] = []

        async def lookup(name: str) -> list[str]:
            return ["v=STSv1; id=1"]

        async def fetch(domain: str) -> bytes:
            fetched.append(domain)
            return POLICY

        sts = MtaSts(clock, lookup, fetch)
        self.successResultOf(Deferred.fromCoroutine(sts.policy("example.com")))
        self.successResultOf(Deferred.fromCoroutine(sts.refresh()))
        self.assertEqual(len(fetched), 1)  # fresh, same id: not fetched again
        clock.advance(86400 / 2 + 1)
        self.successResultOf(Deferred.fromCoroutine(sts.refresh()))
        self.assertEqual(len(fetched), 2)
        clock.advance(86400 / 2 + 1)  # the first copy would have expired by now
        self.assertIsNotNone(self.successResultOf(Deferred.fromCoroutine(
            sts.policy("example.com"))))
        self.assertEqual(len(fetched), 2)

    def test_failed_fetch_keeps_the_last_policy(self) -> None:
        """A fetch failure after a new id keeps the valid policy and records the error."""
        clock = Clock()
        ids = ["1"]
        bodies = [POLICY]

        async def lookup(name: str) -> list[str]:
            return [f"v=STSv1; id={ids[0]}"]

        async def fetch(domain: str) -> bytes:
            if not bodies:
                raise StsError("HTTP 404")
            return bodies.pop()

        sts = MtaSts(clock, lookup, fetch)
        first = self.successResultOf(Deferred.fromCoroutine(sts.policy("example.com")))
        assert first is not None
        ids[0] = "2"
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(sts.refresh())), 1)
        self.assertEqual(sts.fetch_errors, {"example.com": "HTTP 404"})
        self.assertIs(self.successResultOf(Deferred.fromCoroutine(sts.policy("example.com"))),
                      first)
        clock.advance(first.max_age)
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(sts.policy("example.com"))))
