"""The smart sink on StringTransport and Clock: each behaviour, the mix, returns."""

from __future__ import annotations

import dataclasses
import email
import os
import shutil
import tempfile
from collections import Counter
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from hurricane.bounce.analyze import analyze
from hurricane.sink.returns import Accepted, build_return
from hurricane.sink.scenario import (
    BUILTIN_BEHAVIOURS,
    ScenarioError,
    default_scenario,
    mix_rule,
    scenario_from_dict,
)
from hurricane.sink.server import SinkFactory, SinkStats
from tests.smtpd.helpers import codes, connect, replies

SENDER = "h1verp.m1@bounces.demo.test"
BODY = (b"From: a@shop.test\r\nTo: x@y.test\r\nSubject: Sale\r\nMessage-ID: <m1@shop.test>\r\n"
        b"X-Hurricane-Token: " + SENDER.encode() + b"\r\n\r\nHello\r\n")


class _Returns:
    """Records what the factory schedules instead of sending it."""

    def __init__(self) -> None:
        self.stats = SinkStats()
        self.scheduled: list[tuple[Any, float]] = []

    def schedule(self, message: Any, delay: float) -> None:
        self.scheduled.append((message, delay))

    def cancel(self) -> None:
        pass


def session(factory: SinkFactory, rcpts: list[str], body: bytes = BODY,
            tls: bool = False) -> tuple[list[bytes], StringTransport]:
    """One transaction; the final reply codes (greeting and EHLO dropped)."""
    proto, t = connect(factory, "127.0.0.1", tls=tls)
    proto.dataReceived(b"EHLO hurricane.test\r\n")
    replies(t)
    proto.dataReceived(f"MAIL FROM:<{SENDER}>\r\n".encode())
    for r in rcpts:
        proto.dataReceived(f"RCPT TO:<{r}>\r\n".encode())
    if not t.disconnecting:
        proto.dataReceived(b"DATA\r\n")
    if not t.disconnecting:
        proto.dataReceived(body + b".\r\n")
    return codes(replies(t)), t


class SinkBehaviourTests(TestCase):
    """Each built-in behaviour of the default scenario, one transaction at a time."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.returns = _Returns()
        self.factory = SinkFactory(default_scenario(), self.clock,
                                   returns=self.returns)  # type: ignore[arg-type]
        self.stats = self.factory.stats

    def test_accept(self) -> None:
        """Plain addresses are accepted with a queue id and counted."""
        got, _ = session(self.factory, ["anyone@x.test"])
        self.assertEqual(got, [b"250 2.1.0", b"250 2.1.5", b"354 End", b"250 2.0.0"])
        self.assertEqual(self.stats.counts["accepted"], Counter(accept=1))
        self.assertEqual(self.returns.scheduled, [])

    def test_unknown_at_rcpt(self) -> None:
        """unknown-* gets 550 5.1.1 at RCPT, so DATA has no recipients."""
        got, _ = session(self.factory, ["unknown-1@x.test"])
        self.assertEqual(got[:2], [b"250 2.1.0", b"550 5.1.1"])
        self.assertEqual(got[2], b"554 5.5.1")
        self.assertEqual(self.stats.counts["rejected"], Counter(unknown=1))

    def test_full_at_rcpt(self) -> None:
        """full-* gets 552 5.2.2 at RCPT."""
        got, _ = session(self.factory, ["full-1@x.test"])
        self.assertEqual(got[1], b"552 5.2.2")

    def test_spam_after_data(self) -> None:
        """spam-* is accepted at RCPT and refused with 554 5.7.1 after the dot."""
        got, _ = session(self.factory, ["spam-1@x.test"])
        self.assertEqual(got, [b"250 2.1.0", b"250 2.1.5", b"354 End", b"554 5.7.1"])
        self.assertEqual(self.stats.counts["rejected"], Counter(spam=1))
        self.assertEqual(self.stats.total("accepted"), 0)

    def test_greylisting(self) -> None:
        """grey-* is deferred twice with 451 4.7.1, then accepted on the third attempt."""
        results = [session(self.factory, ["grey-1@x.test"])[0][1] for _ in range(3)]
        self.assertEqual(results, [b"451 4.7.1", b"451 4.7.1", b"250 2.1.5"])
        self.assertEqual(self.stats.counts["deferred"], Counter(grey=2))
        self.assertEqual(self.stats.counts["accepted"], Counter(grey=1))

    def test_unanswered_recipients(self) -> None:
        """Recipients with only temporary answers so far are 'unanswered' (per behaviour,
        once each); a final answer, even after deferrals, takes them off."""
        for _ in range(2):
            session(self.factory, ["grey-1@x.test", "grey-2@x.test"])
        session(self.factory, ["drop-1@x.test"])
        session(self.factory, ["drop-1@x.test"])
        session(self.factory, ["unknown-1@x.test"])
        self.assertEqual(self.stats.as_dict()["unanswered"], {"drop": 1, "grey": 2})
        session(self.factory, ["grey-1@x.test"])  # third attempt: accepted
        session(self.factory, ["GREY-2@x.test"])  # addresses compare case-insensitively
        self.assertEqual(self.stats.as_dict()["unanswered"], {"drop": 1})
        self.assertEqual(self.stats.counts["dropped"], Counter(drop=2))

    def test_ratelimit_closes(self) -> None:
        """ratelimit-* gets 421 4.7.0 and the connection closes; the next try passes."""
        got, t = session(self.factory, ["ratelimit-1@x.test"])
        self.assertEqual(got[-1], b"421 4.7.0")
        self.assertTrue(t.disconnecting)
        got, _ = session(self.factory, ["ratelimit-1@x.test"])
        self.assertEqual(got[-1], b"250 2.0.0")

    def test_drop_mid_data(self) -> None:
        """drop-* gets 354, then the connection is aborted when the body arrives."""
        proto, t = connect(self.factory, "127.0.0.1")
        for line in (b"EHLO h.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<drop-1@x.test>",
                     b"DATA"):
            proto.dataReceived(line + b"\r\n")
        self.assertIn(b"354 End", codes(replies(t)))
        proto.dataReceived(b"Subject: x\r\n\r\npartial")
        self.assertTrue(t.disconnected)
        self.assertEqual(self.stats.counts["dropped"], Counter(drop=1))
        self.assertEqual(self.stats.total("accepted"), 0)

    def test_stall(self) -> None:
        """stall-* gets no answer to the dot until the stall time has passed, then 451."""
        got, t = session(self.factory, ["stall-1@x.test"])
        self.assertEqual(got, [b"250 2.1.0", b"250 2.1.5", b"354 End"])
        self.clock.advance(599)
        self.assertEqual(replies(t), [])
        self.clock.advance(2)
        self.assertEqual(codes(replies(t)), [b"451 4.4.2"])
        self.assertEqual(self.stats.counts["stalled"], Counter(stall=1))

    def test_mixed_transaction_is_split(self) -> None:
        """A recipient whose after-dot fate differs from the first one gets 452 4.5.3."""
        got, _ = session(self.factory, ["a@x.test", "spam-1@x.test", "b@x.test"])
        self.assertEqual(got[1:4], [b"250 2.1.5", b"452 4.5.3", b"250 2.1.5"])
        self.assertEqual(self.stats.counts["accepted"], Counter(accept=2))
        self.assertEqual(self.stats.counts["split"], Counter(spam=1))

    def test_late_dsn_is_scheduled(self) -> None:
        """late-* is accepted and a DSN to the envelope sender is scheduled after delay."""
        session(self.factory, ["late-1@x.test"])
        ((message, delay),) = self.returns.scheduled
        self.assertEqual((message.kind, message.rcpt, message.mail_from, delay),
                         ("dsn", SENDER, "", 1.0))

    def test_returns_of_each_kind(self) -> None:
        """complain/vacation/delayed/ndr behaviours schedule arf, autoreply, delayed, ndr."""
        for rcpt in ("complain-1@x.test", "vacation-1@x.test", "delayed-1@x.test",
                     "ndrqmail-1@x.test"):
            session(self.factory, [rcpt])
        kinds = [m.kind for m, _ in self.returns.scheduled]
        self.assertEqual(kinds, ["arf", "autoreply", "delayed", "ndr"])

    def test_starttls_offered_and_failed(self) -> None:
        """tls = "fail" offers STARTTLS, answers 220, then writes a non-TLS record and closes."""
        sc = dataclasses.replace(default_scenario(), tls="fail")
        factory = SinkFactory(sc, self.clock, tls_context=object())
        proto, t = connect(factory, "127.0.0.1", tls=True)
        proto.dataReceived(b"EHLO h.test\r\n")
        self.assertIn(b"STARTTLS", replies(t)[-1])
        proto.dataReceived(b"STARTTLS\r\n")
        out = t.value()
        self.assertTrue(out.startswith(b"220 2.0.0"))
        self.assertTrue(out.endswith(b"\x15\x03\x03\x00\x02\x02\x28"))
        self.assertTrue(t.disconnecting)
        self.assertIsNone(getattr(t, "tls_context", None))

    def test_starttls_on(self) -> None:
        """tls = "on" hands the context to the transport at STARTTLS."""
        ctx = object()
        factory = SinkFactory(dataclasses.replace(default_scenario(), tls="on"), self.clock,
                              tls_context=ctx)
        proto, t = connect(factory, "127.0.0.1", tls=True)
        proto.dataReceived(b"EHLO h.test\r\nSTARTTLS\r\n")
        self.assertIs(t.tls_context, ctx)  # type: ignore[attr-defined]

    def test_dump_dir(self) -> None:
        """Accepted messages are written to the dump directory with envelope headers."""
        tmp = tempfile.mkdtemp(prefix="sink-test-")
        self.addCleanup(shutil.rmtree, tmp, True)
        factory = SinkFactory(default_scenario(), self.clock, dump_dir=tmp)
        session(factory, ["a@x.test"])
        (name,) = os.listdir(tmp)
        with open(os.path.join(tmp, name), "rb") as fp:
            data = fp.read()
        self.assertIn(b"X-Sink-Rcpt-To: <a@x.test>\r\nX-Sink-Behaviour: accept\r\n", data)
        self.assertIn(b"Subject: Sale", data)


class SinkMixTests(TestCase):
    """Seeded mixes: deterministic per address, close to the weights, different per seed."""

    def scenario(self, seed: int) -> Any:
        sc = default_scenario(seed)
        return dataclasses.replace(sc, rules=(mix_rule({"accept": 90, "unknown": 3,
                                                        "late": 2, "complain": 5}),))

    def test_deterministic_and_proportional(self) -> None:
        """The same seed gives the same choice per address; shares follow the weights."""
        a, b = self.scenario(7), self.scenario(7)
        addrs = [f"u{i}@d{i % 7}.test" for i in range(20000)]
        first = [a.decide(x).name for x in addrs]
        self.assertEqual(first, [b.decide(x.upper()).name for x in addrs])
        shares = Counter(first)
        self.assertLess(abs(shares["accept"] / 20000 - 0.90), 0.01)
        self.assertLess(abs(shares["unknown"] / 20000 - 0.03), 0.005)
        self.assertLess(abs(shares["complain"] / 20000 - 0.05), 0.006)
        other = [self.scenario(8).decide(x).name for x in addrs]
        self.assertNotEqual(first, other)

    def test_retries_behave_the_same(self) -> None:
        """A mixed-in recipient refused once is refused the same way on every retry."""
        sc = self.scenario(7)
        victim = next(f"u{i}@x.test" for i in range(1000)
                      if sc.decide(f"u{i}@x.test").name == "unknown")
        factory = SinkFactory(sc, Clock())
        for _ in range(3):
            got, _ = session(factory, [victim])
            self.assertEqual(got[1], b"550 5.1.1")


class ScenarioFileTests(TestCase):
    """Scenario tables: custom behaviours, rules, errors naming the key."""

    def test_custom_behaviour_and_rule(self) -> None:
        """A file defines a behaviour from a built-in and routes a domain to it."""
        sc = scenario_from_dict({
            "seed": 3,
            "behaviours": {"soft-full": {"like": "full", "code": 452, "status": "4.2.2",
                                         "action": "defer"}},
            "rules": [{"match": "*@full.test", "behaviour": "soft-full"},
                      {"match": "*@mix.test", "mix": {"accept": 1, "spam": 1}}],
        })
        self.assertEqual(sc.decide("a@FULL.test").code, 452)
        self.assertEqual(sc.decide("unknown-1@other.test").name, "accept")
        self.assertIn(sc.decide("z@mix.test").name, ("accept", "spam"))

    def test_errors(self) -> None:
        """Unknown keys, behaviours and bad codes raise ScenarioError naming them."""
        for data, word in (({"nope": 1}, "nope"),
                           ({"rules": [{"match": "*", "behaviour": "ghost"}]}, "ghost"),
                           ({"behaviours": {"x": {"action": "defer", "code": 550}}}, "4xx"),
                           ({"behaviours": {"x": {"colour": "red"}}}, "colour")):
            with self.assertRaises(ScenarioError) as cm:
                scenario_from_dict(data)
            self.assertIn(word, str(cm.exception))


class ReturnTemplateTests(TestCase):
    """Every return template is well-formed and the analyzer reads it as intended."""

    def test_analyzer_agrees(self) -> None:
        """DSN, each NDR style, ARF and auto-reply are classified with the expected reason."""
        acc = Accepted(SENDER, "user-1@d.test", b"Received: from x\r\n" + BODY, 1e9, "S1")
        expected = {"late": ("bounce", "userunknown"), "delayed": ("bounce", None),
                    "complain": ("feedback", "feedback"),
                    "vacation": ("autoreply", "vacation"),
                    "ndr-full": ("bounce", "mailboxfull")}
        for style in ("postfix", "exim", "sendmail", "qmail", "exchange", "gmail"):
            expected[f"ndr-{style}"] = ("bounce", "userunknown")
        for name, (category, reason) in expected.items():
            ret = build_return(acc, BUILTIN_BEHAVIOURS[name], "mx.sink.test", 1e9 + 5)
            assert ret is not None
            msg = email.message_from_bytes(ret.data)
            self.assertEqual(msg["To"], SENDER, name)
            a = analyze(ret.data, ret.rcpt)
            self.assertEqual(a.category, category, name)
            self.assertEqual(a.results[0].recipient, "user-1@d.test", name)
            if reason:
                self.assertEqual(a.results[0].reason, reason, name)
        self.assertEqual(analyze(build_return(acc, BUILTIN_BEHAVIOURS["delayed"], "h",
                                              1e9).data).results[0].action, "delayed")

    def test_null_sender_gets_no_return(self) -> None:
        """A message with the null reverse-path never triggers a return (no loops)."""
        acc = Accepted("", "late-1@d.test", BODY, 1e9, "S1")
        self.assertIsNone(build_return(acc, BUILTIN_BEHAVIOURS["late"], "h", 1e9))


class SinkProviderPlayTests(TestCase):
    """The sink playing a provider (issue 19): a rate limit and a complaint block."""

    def test_rate_limit_421_in_a_sliding_second(self) -> None:
        clock = Clock()
        clock.advance(100.0)
        factory = SinkFactory(scenario_from_dict({"provider": {"rate_limit": 2}}), clock)
        self.assertEqual(session(factory, ["a@x.test"])[0][-1], b"250 2.0.0")
        self.assertEqual(session(factory, ["b@x.test"])[0][-1], b"250 2.0.0")
        got, t = session(factory, ["c@x.test"])
        self.assertEqual(got[-1], b"421 4.7.28")
        self.assertTrue(t.disconnecting)
        clock.advance(1.01)  # the window slid past both
        self.assertEqual(session(factory, ["c@x.test"])[0][-1], b"250 2.0.0")
        self.assertEqual(factory.stats.counts["deferred"], Counter({"provider-rate": 1}))

    def test_complaint_rate_blocks(self) -> None:
        clock = Clock()
        factory = SinkFactory(scenario_from_dict(
            {"provider": {"complaint_rate": 0.3, "complaint_min": 4}}), clock)
        for rcpt in ("a@x.test", "b@x.test", "complain-1@x.test", "d@x.test"):
            self.assertEqual(session(factory, [rcpt])[0][-1], b"250 2.0.0")
        self.assertEqual(session(factory, ["e@x.test"])[0][-1], b"250 2.0.0")  # 1/4: not above
        self.assertEqual(session(factory, ["complain-2@x.test"])[0][-1], b"250 2.0.0")
        got, _ = session(factory, ["f@x.test"])  # 2/6 > 0.3
        self.assertIn(b"554 5.7.1", got)
        self.assertNotIn(b"250 2.0.0", got)

    def test_provider_keys_checked(self) -> None:
        with self.assertRaises(ScenarioError):
            scenario_from_dict({"provider": {"rate": 2}})
        with self.assertRaises(ScenarioError):
            scenario_from_dict({"provider": {"rate_limit": -1}})
