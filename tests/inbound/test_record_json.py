"""The stored analysis JSON is the same text whether the executor encoded the analysis
(off the reactor, in a worker process) or the recorder did."""

from __future__ import annotations

import json
import signal

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze
from hurricane.inbound import analysis_worker
from hurricane.inbound.analysis_worker import Analyzed, analyze_batch, encode_analysis, init_worker
from hurricane.inbound.correlate import correlate
from hurricane.inbound.recorder import _record

from .helpers import World, arf, autoreply, dsn, free_text, run


class RecordJsonTests(SynchronousTestCase):
    def test_spliced_equals_encoded_whole(self) -> None:
        """For a DSN, an ARF report, an auto-reply, a free-text NDR and a message that
        says nothing: the splice gives the text of encoding the whole record."""
        w = World()
        [d] = w.send(["alice@example.net"], header_message_id="m1@example.org")
        token = w.token(d)
        raws = [
            dsn("alice@example.net", token=token),
            arf("alice@example.net", token=token),
            autoreply("alice@example.net", to=token),
            free_text("alice@example.net", "550 5.1.1 no such user", to=token),
            b"Subject: hello\r\n\r\nnothing to see\r\n",
        ]
        for raw in raws:
            bounce_id = w.receive(raw, token)
            bounce = w.bounce(bounce_id)
            analysis = analyze(raw, token)
            corr = run(correlate(w.store, w.codec, bounce, analysis, w.clock.seconds()))
            whole = analysis.to_json()
            self.assertNotIn("correlation", whole)
            whole["correlation"] = corr.to_json()
            expected = json.dumps(whole, default=str)
            self.assertEqual(_record(analysis, encode_analysis(analysis), corr), expected)
            self.assertEqual(_record(analysis, None, corr), expected)
            self.assertEqual(json.loads(expected)["category"], analysis.category)

    def test_worker_batch_carries_the_encoding(self) -> None:
        """analyze_batch gives each analysis with its fingerprint and its JSON; an
        exception gets no JSON."""
        # as in a worker; undo what init_worker does to this process afterwards
        sigint = signal.getsignal(signal.SIGINT)
        self.addCleanup(signal.signal, signal.SIGINT, sigint)
        self.patch(analysis_worker, "_WORKER", None)
        init_worker(analyze, (), None)

        raws = [dsn("alice@example.net"), b"Subject: x\r\n\r\ny\r\n"]
        out = analyze_batch([(raw, None) for raw in raws])
        for got in out:
            self.assertIsInstance(got, Analyzed)
            assert not isinstance(got.result, BaseException)
            self.assertEqual(got.record, encode_analysis(got.result))
            self.assertIsNotNone(got.fingerprint)
