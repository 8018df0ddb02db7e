"""The provider map, the adaptive limiter, the pool's gate and the mailing breaker,
on task.Clock: no wall time anywhere."""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import (
    AdaptiveConfig,
    CircuitBreakerConfig,
    ConfigError,
    DeliveryConfig,
    ProviderConfig,
    config_from_dict,
)
from hurricane.model import AttemptResult
from hurricane.outbound.dialer import Dialer
from hurricane.outbound.mx import MXResolver
from hurricane.outbound.pool import DestinationPool, PoolSettings
from hurricane.outbound.providers import ProviderGate
from hurricane.outcome import Reason, State
from hurricane.policy.breaker import Evidence, Tally, judge
from hurricane.policy.providers import (
    LateCounts,
    ProviderLimiter,
    ProviderMap,
    Signal,
    signal_of,
)
from tests.outbound.fakes import FakeConnector, FakeResolver
from tests.outbound.test_pool import FakeDispatch, delivery

GOOGLE = ProviderConfig(name="google", mx=("*.google.com",), domains=("gmail.com",),
                        max_connections=2, rate_per_minute=6000)


def result(state: State, reason: Reason | None = None, code: int | None = None,
           status: str | None = None, text: str | None = None, at: float = 0.0,
           hard: bool = False) -> AttemptResult:
    """One attempt's result."""
    return AttemptResult(delivery_id=1, at=at, state=state, reason=reason, code=code,
                         status=status, text=text, hard=hard)


def limiter(**adaptive: object) -> ProviderLimiter:
    delivery_config = DeliveryConfig(providers=(GOOGLE,))
    return ProviderLimiter(ProviderMap(delivery_config),
                           AdaptiveConfig(**adaptive))  # type: ignore[arg-type]


class ProviderMapTests(SynchronousTestCase):
    """Domains and MX hosts to providers."""

    def test_domain_glob_mx_rollup_and_default(self) -> None:
        """gmail.com by its domain glob; a hosted domain once seen through an MX
        of the provider; anything else is its own default budget."""
        m = ProviderMap(DeliveryConfig(providers=(GOOGLE,), rate_per_minute=60))
        self.assertEqual(m.of("GMAIL.com").name, "google")
        self.assertEqual(m.of("shop.example").name, "default")
        self.assertEqual(m.budget("shop.example"), "default:shop.example")
        self.assertEqual(m.learn("shop.example", "aspmx.l.google.com.").name, "google")
        self.assertEqual(m.budget("shop.example"), "google")
        self.assertEqual(m.learn("other.example", "mx.other.example").name, "default")
        self.assertEqual(m.domains("google"), ["shop.example"])
        self.assertEqual(m.named("google").rate_per_minute, 6000)
        self.assertEqual(m.default.rate_per_minute, 60)

    def test_warmup_name(self) -> None:
        """A source address warms up per configured provider when one claims the
        destination (by domain or by MX: every domain hosted there shares one
        schedule), else per the MX host's parent domain (issue 21 with issue 19)."""
        from hurricane.outbound.warmup import mx_provider

        m = ProviderMap(DeliveryConfig(providers=(GOOGLE,)))
        self.assertEqual(m.warmup_name("gmail.com", "gmail-smtp-in.l.google.com", mx_provider),
                         "google")
        self.assertEqual(m.warmup_name("shop.example", "aspmx.l.google.com.", mx_provider),
                         "google")
        self.assertEqual(m.warmup_name("other.example", "mx1.mail.other.example", mx_provider),
                         "other.example")

    def test_config_checks(self) -> None:
        """A provider needs a unique name and a glob; rates are fractions."""
        ok = {"delivery": {"providers": [{"name": "g", "mx": ["*.google.com"]}]}}
        self.assertEqual(config_from_dict(ok).delivery.providers[0].name, "g")
        for bad in ({"providers": [{"name": "g"}]},
                    {"providers": [{"name": "default", "mx": ["x"]}]},
                    {"providers": [{"name": "g", "mx": ["x"]}, {"name": "g", "mx": ["y"]}]},
                    {"circuit_breaker": {"hard_bounce_rate": 0}},
                    {"adaptive": {"throttle_factor": 1.5}}):
            with self.assertRaises(ConfigError):
                config_from_dict({"delivery": bad})


class SignalTests(SynchronousTestCase):
    """What a result says about its provider."""

    def test_signals(self) -> None:
        self.assertIs(signal_of(result(State.delivered)), Signal.success)
        self.assertIs(signal_of(result(State.deferred, Reason.speeding, 421)), Signal.throttle)
        self.assertIs(signal_of(result(State.deferred, Reason.securityerror, 421, "4.7.28",
                                       "slow")), Signal.throttle)
        self.assertIs(signal_of(result(State.deferred, Reason.undefined, 451, None,
                                       "Rate limit exceeded")), Signal.throttle)
        self.assertIs(signal_of(result(State.failed, Reason.blocked, 550)), Signal.block)
        # greylisting (451 4.7.1) is classified blocked: temporary, it suspends nothing
        self.assertIs(signal_of(result(State.deferred, Reason.blocked, 451, "4.7.1",
                                       "Greylisted, try again later")), Signal.neutral)
        # recipient-side answers say nothing about the provider
        self.assertIs(signal_of(result(State.failed, Reason.userunknown, 550)), Signal.neutral)
        self.assertIs(signal_of(result(State.deferred, Reason.mailboxfull, 452)),
                      Signal.neutral)


class LimiterTests(SynchronousTestCase):
    """Cut, pause, suspend, ramp, late windows."""

    def test_throttle_cuts_once_per_pause_then_ramps_back(self) -> None:
        lim = limiter(throttle_factor=0.5, throttle_pause=2.0, ramp_after=3, ramp_factor=2.0)
        refused = result(State.deferred, Reason.speeding, 421)
        action = lim.observe("gmail.com", refused, 10.0)
        assert action is not None
        self.assertEqual((action.action, action.before, action.after),
                         ("throttle", "rate 6000/min", "rate 3000/min"))
        self.assertEqual(action.until, 12.0)
        # the refusals of sends already under way are the same pushback
        self.assertIsNone(lim.observe("gmail.com", refused, 11.0))
        self.assertEqual(lim.state("google").rate, 3000)
        # the next send waits for the end of the pause
        self.assertEqual(lim.reserve("gmail.com", 11.0), 1.0)
        # after the pause a new refusal cuts again
        self.assertIsNotNone(lim.observe("gmail.com", refused, 12.5))
        self.assertEqual(lim.state("google").rate, 1500)
        ok = result(State.delivered)
        actions = [lim.observe("gmail.com", ok, 20.0 + i) for i in range(6)]
        self.assertEqual([a.action if a else None for a in actions],
                         [None, None, "ramp", None, None, "restore"])
        self.assertEqual(lim.state("google").rate, 6000)
        # at its maximum a provider does not ramp
        self.assertEqual([lim.observe("gmail.com", ok, 30.0 + i) for i in range(5)],
                         [None] * 5)

    def test_rate_slots_are_shared_by_the_provider_and_split_between_nodes(self) -> None:
        lim = limiter()
        lim.state("google").rate = 60.0  # one a second
        self.assertEqual(lim.reserve("gmail.com", 0.0), 0.0)
        lim.providers.learn("hosted.example", "alt1.aspmx.l.google.com")
        self.assertEqual(lim.reserve("hosted.example", 0.0), 1.0)  # the same budget
        self.assertEqual(lim.reserve("elsewhere.example", 0.0), 0.0)  # its own
        lim.nodes = 2
        self.assertEqual(lim.rate_share("google"), 30.0)
        self.assertEqual(lim.reserve("gmail.com", 0.0), 2.0)
        self.assertEqual(lim.reserve("gmail.com", 0.0), 4.0)

    def test_block_suspends(self) -> None:
        lim = limiter(suspend_seconds=300.0)
        action = lim.observe("gmail.com", result(State.failed, Reason.badreputation, 554), 5.0)
        assert action is not None
        self.assertEqual((action.action, action.cause, action.until),
                         ("suspend", "badreputation", 305.0))
        self.assertTrue(lim.suspended("gmail.com", 100.0))
        self.assertFalse(lim.suspended("other.example", 100.0))
        self.assertIsNone(lim.observe("gmail.com", result(State.failed, Reason.blocked), 6.0))
        self.assertFalse(lim.suspended("gmail.com", 305.0))

    def test_unlimited_provider_cut_from_its_observed_rate(self) -> None:
        """A default (unlimited) budget is cut from what it was sending, and goes
        back to no limit once it reaches that again."""
        lim = limiter(throttle_factor=0.5, ramp_after=1, ramp_factor=2.0)
        for i in range(11):
            lim.reserve("x.example", i * 0.1)  # 10 a second = 600/min
        action = lim.observe("x.example", result(State.deferred, Reason.toomanyconn, 421), 1.0)
        assert action is not None
        self.assertEqual(action.subject, "default:x.example")
        self.assertAlmostEqual(lim.state("default:x.example").rate, 300.0, places=3)
        action = lim.observe("x.example", result(State.delivered), 5.0)
        assert action is not None
        self.assertEqual((action.action, lim.state("default:x.example").rate), ("restore", 0.0))

    def test_unlimited_budget_seldom_used_is_not_cut_to_a_crawl(self) -> None:
        lim = limiter(throttle_factor=0.5)
        lim.reserve("quiet.example", 0.0)
        lim.reserve("quiet.example", 60.0)  # one a minute
        lim.observe("quiet.example", result(State.deferred, Reason.speeding, 421), 61.0)
        self.assertEqual(lim.state("default:quiet.example").rate, 300.0)  # half of 600

    def test_late_windows(self) -> None:
        """Sender-side late bounces cut once per worsening; complaints suspend;
        a small window says nothing."""
        lim = limiter(window_min_deliveries=100, late_block_rate=0.02, complaint_rate=0.003)
        self.assertIsNone(lim.late("google", LateCounts(99, 50, 50), 0.0))
        self.assertIsNone(lim.late("google", LateCounts(1000, 20, 3), 0.0))
        cut = lim.late("google", LateCounts(1000, 21, 0), 1.0)
        assert cut is not None
        self.assertEqual((cut.action, cut.cause, dict(cut.evidence)),
                         ("throttle", "late_sender_bounces",
                          {"deliveries": 1000, "sender_bounces": 21, "complaints": 0}))
        self.assertIsNone(lim.late("google", LateCounts(1000, 21, 0), 2.0))
        self.assertIsNotNone(lim.late("google", LateCounts(1000, 25, 0), 3.0))
        suspend = lim.late("google", LateCounts(1000, 25, 4), 4.0)
        assert suspend is not None
        self.assertEqual((suspend.action, suspend.cause), ("suspend", "complaint_rate"))

    def test_adopt_newest(self) -> None:
        a, b = limiter(), limiter()
        a.observe("gmail.com", result(State.deferred, Reason.speeding), 10.0)
        self.assertTrue(b.adopt(a.state("google")))
        self.assertEqual(b.state("google").rate, a.state("google").rate)
        self.assertFalse(a.adopt(limiter().state("google")))  # older: ignored


class GateInPoolTests(SynchronousTestCase):
    """The destination pool drawing on provider budgets."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.dns = FakeResolver()
        for domain in ("gmail.com", "hosted.example"):
            self.dns.add_mx(domain, (10, "aspmx.l.google.com"))
        self.dns.add_host("aspmx.l.google.com", "192.0.2.1")
        self.connector = FakeConnector(self.clock)
        self.dispatch = FakeDispatch(self.clock)
        self.lim = limiter(throttle_pause=5.0)
        self.gate = ProviderGate(self.lim, self.clock)
        resolver = MXResolver(self.dns, self.clock, {}, 3600, rng=random.Random(0))
        self.pool = DestinationPool(Dialer(resolver, self.connector, "out.example"),
                                    self.dispatch, self.clock, PoolSettings(idle_grace=0),
                                    gate=self.gate)

    def tearDown(self) -> None:
        self.pool.stop()
        self.successResultOf(self.pool.close_all())

    def test_rollup_shares_connections_and_rate(self) -> None:
        """Two domains behind one provider MX: one rate, one connection budget."""
        self.lim.state("google").rate = 60.0
        self.pool.add([delivery(1, "gmail.com"), delivery(2, "hosted.example"),
                       delivery(3, "gmail.com")])
        self.assertEqual(self.lim.providers.budget("hosted.example"), "google")
        self.assertEqual(len(self.dispatch.sent), 1)  # one slot a second for both
        self.clock.advance(1.0)
        self.assertEqual(len(self.dispatch.sent), 2)
        self.clock.advance(1.0)
        self.assertEqual(sorted(i for _, ids in self.dispatch.sent for i in ids), [1, 2, 3])
        self.assertLessEqual(len(self.connector.connections), GOOGLE.max_connections)

    def test_throttle_pauses_and_suspension_stops(self) -> None:
        self.gate.observe("gmail.com", result(State.deferred, Reason.speeding, 421))
        self.pool.add([delivery(1, "gmail.com")])
        self.assertEqual(self.dispatch.sent, [])  # paused for 5 s
        self.clock.advance(5.0)
        self.assertEqual(len(self.dispatch.sent), 1)
        self.gate.observe("gmail.com", result(State.failed, Reason.blocked, 550))
        self.pool.add([delivery(2, "gmail.com")])
        self.clock.advance(10.0)
        self.assertEqual(len(self.dispatch.sent), 1)  # suspended: nothing goes
        self.assertEqual(self.pool.waiting(), 1)
        self.assertEqual(self.gate.suspended_domains(), ["gmail.com"])
        taken = self.pool.take_back_where(lambda d: True)
        self.assertEqual([d.delivery_id for d in taken], [2])

    def test_suspension_while_sending_stops_without_reconnecting(self) -> None:
        """A block in the middle of a queue: the worker stops, and no new
        connection is opened while the provider is suspended."""
        self.dispatch.delay = 1.0
        self.lim.state("google").rate = 0.0
        self.pool.add([delivery(i, "gmail.com") for i in range(1, 6)])
        sent = len(self.dispatch.sent)
        self.gate.observe("gmail.com", result(State.failed, Reason.blocked, 550))
        for _ in range(20):
            self.clock.advance(1.0)
        self.assertLessEqual(len(self.dispatch.sent), sent + GOOGLE.max_connections)
        self.assertEqual(len(self.connector.connections), GOOGLE.max_connections)
        self.assertGreater(self.pool.waiting(), 0)
        self.assertEqual(self.gate.connections(), {})  # all closed

    def test_long_waits_book_no_slot(self) -> None:
        """A wait longer than the gate sits out books nothing (the slot is not lost)."""
        self.lim.state("google").rate = 1.0  # one a minute
        self.assertEqual(self.gate.reserve("gmail.com"), 0.0)
        self.assertIsNone(self.gate.reserve("gmail.com"))  # 60 s away: not booked
        self.assertIsNone(self.gate.reserve("gmail.com"))
        self.clock.advance(60.0)
        self.assertEqual(self.gate.reserve("gmail.com"), 0.0)

    def test_throttled_retry_delay(self) -> None:
        self.assertEqual(self.gate.retry_delay(result(State.deferred, Reason.speeding)), 5.0)
        self.assertIsNone(self.gate.retry_delay(result(State.deferred, Reason.mailboxfull)))


class BreakerTests(SynchronousTestCase):
    """When a mailing's own outcomes hold it."""

    def test_judge(self) -> None:
        s = CircuitBreakerConfig(min_recipients=50, hard_bounce_rate=0.05, complaint_rate=0.003)
        self.assertIsNone(judge("m", Evidence(49, 49, 0), s, 0.0))  # too few yet
        self.assertIsNone(judge("m", Evidence(100, 5, 0), s, 0.0))  # 5 % is the limit
        hold = judge("m", Evidence(100, 6, 0), s, 1.0)
        assert hold is not None
        self.assertEqual((hold.scope, hold.subject, hold.action, hold.after),
                         ("mailing", "m", "hold", "held"))
        self.assertIn("hard_bounce_rate", hold.cause)
        complaint = judge("m", Evidence(1000, 0, 4), s, 1.0)
        assert complaint is not None
        self.assertIn("complaint_rate", complaint.cause)
        self.assertIsNone(judge("m", Evidence(100, 60, 0),
                                CircuitBreakerConfig(enabled=False), 0.0))

    def test_tally(self) -> None:
        t = Tally()
        self.assertIsNone(t.add("M", result(State.deferred, Reason.speeding)))
        t.add("M", result(State.delivered))
        e = t.add("m", result(State.failed, Reason.userunknown, hard=True))
        self.assertEqual(e, Evidence(2, 1, 0))
        self.assertEqual(Evidence(2, 1, 0).merge(Evidence(5, 0, 1)), Evidence(5, 1, 1))
