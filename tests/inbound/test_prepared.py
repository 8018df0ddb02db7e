"""An analysis correlated and made ready to record next to it (in the analysis
worker) is what the server would have made of it; what needs the store or the
codec is left to the server."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.bounce.model import Analysis
from hurricane.inbound.analysis_worker import Analyzed, Work, analyze_one
from hurricane.inbound.prepared import Correlating, NeedsServer, correlate_offline
from hurricane.inbound.recorder import Prepared, Recorder
from hurricane.inbound.results import ProcessorStats
from hurricane.model import StoredBounce

from .helpers import World, arf, autoreply, dsn, free_text, result, run


class PreparedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.w = World()
        [self.d] = self.w.send(["alice@example.net"], header_message_id="m1@example.org")
        self.token = self.w.token(self.d)
        self.recorder = Recorder(self.w.store, self.w.codec, self.w.clock, 30 * 86400.0,
                                 ProcessorStats())

    def bounce(self, raw: bytes, rcpt_to: str, verified: bool = True) -> StoredBounce:
        bounce = self.w.bounce(self.w.receive(raw, rcpt_to, verified=verified))
        assert isinstance(bounce, StoredBounce)
        return bounce

    def both(self, bounce: StoredBounce, analyze_: Any = analyze
             ) -> tuple[Analyzed, Prepared]:
        """(the worker's answer with a context, the server's own preparation)."""
        known = run(self.recorder.known_deliveries([bounce]))
        context = Correlating(bounce, known, self.w.clock.seconds(), 30 * 86400.0)
        worker = analyze_one(analyze_, {}, Work(bounce.raw, bounce.rcpt_to or None, context))
        server = run(self.recorder.prepare(bounce, worker._replace(prepared=None), known))
        assert isinstance(server, Prepared)
        return worker, server

    def test_verp_envelope_prepared_as_the_server_would(self) -> None:
        """A DSN, a complaint, an auto-reply and a free-text NDR to a verified VERP
        address: correlated in the worker, the same events and record as the server's."""
        for raw in (dsn("alice@example.net"), arf("alice@example.net"),
                    autoreply("alice@example.net", to=self.token),
                    free_text("alice@example.net", "550 5.1.1 no such user", to=self.token)):
            worker, server = self.both(self.bounce(raw, self.token))
            self.assertIsNotNone(worker.prepared, raw[:60])
            self.assertEqual(worker.prepared, server.parts)
            assert worker.prepared is not None
            self.assertEqual(worker.prepared.key, "verp")
            self.assertTrue(worker.prepared.events)

    def test_a_result_naming_another_recipient_is_left_to_the_server(self) -> None:
        """A result the envelope's delivery does not pair (a sibling to look up in
        the queue entry) needs the store: the server correlates it."""
        raw = dsn("bob@example.net")
        worker, server = self.both(self.bounce(raw, self.token))
        self.assertIsNone(worker.prepared)
        self.assertEqual(server.parts.category, "bounce")

    def test_no_verified_envelope_is_left_to_the_server(self) -> None:
        """Header tokens (the codec), Message-IDs and bare addresses (the store): the
        worker prepares nothing, the server correlates as before."""
        raw = dsn("alice@example.net", token=self.token, message_id="m1@example.org")
        worker, server = self.both(self.bounce(raw, "postmaster@bounces.example",
                                               verified=False))
        self.assertIsNone(worker.prepared)
        self.assertEqual(server.parts.key, "header-token")

    def test_a_failed_analysis_is_left_to_the_server(self) -> None:
        """An analysis that gave up, or raised, is the server's to mark failed."""
        bounce = self.bounce(b"Subject: x\r\n\r\ny\r\n", self.token)

        def gave_up(raw: bytes, rcpt: str | None = None, **kw: Any) -> Analysis:
            return Analysis("bounce", error="too deep")

        def raises(raw: bytes, rcpt: str | None = None, **kw: Any) -> Analysis:
            raise ValueError("bug")

        for analyze_ in (gave_up, raises):
            known = run(self.recorder.known_deliveries([bounce]))
            context = Correlating(bounce, known, 0.0, 1.0)
            got = analyze_one(analyze_, {}, Work(bounce.raw, None, context))
            self.assertIsNone(got.prepared)

    def test_offline_correlation_asks_nothing(self) -> None:
        """Without the envelope's delivery in hand, correlation would ask the store."""
        bounce = self.bounce(dsn("alice@example.net"), self.token)
        analysis = Analysis("bounce", results=(result("alice@example.net"),))
        with self.assertRaises(NeedsServer):
            correlate_offline(bounce, analysis, Correlating(bounce, {}, 0.0, 1.0))
        known = {self.d.delivery_id: self.d}
        corr = correlate_offline(bounce, analysis, Correlating(bounce, known, 0.0, 1.0))
        self.assertEqual([m.delivery.delivery_id for m in corr.matches], [self.d.delivery_id])
