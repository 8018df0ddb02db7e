"""Forged reports against a running ``twistd -n hurricane``, over loopback, on both engines.

The probes of issue 23: a DSN sent by anyone to postmaster naming a
delivered, a deferred and a queued recipient, and an ARF report to the
feedback address without our token, must change no state, suppress no one
and send no final webhook; twenty RCPTs of postmaster with one message must
store one copy and run one analysis. A genuine DSN to the delivery's own VERP
address still bounces it (and is final), so the absences are not vacuous.
"""

from __future__ import annotations

import json
import os
import smtplib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import TestCase

from hurricane.accounting import CursorFile
from tests.hardening.harness import (
    BOUNCE_DOMAIN,
    Hurricane,
    PySink,
    SmtpSink,
    StoreReader,
    free_port,
    fresh_postgres_database,
    make_message,
    smtp_send,
    temp_dir,
    wait_until,
)
from tests.inbound.helpers import arf, dsn

POSTMASTER = f"postmaster@{BOUNCE_DOMAIN}"


class HookReceiver:
    """A webhook endpoint on loopback that answers 200 and keeps every item it got."""

    def __init__(self, test: Any) -> None:
        self.items: list[dict[str, Any]] = []
        lock = self.lock = threading.Lock()
        items = self.items

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    items.extend(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        test.addCleanup(self.server.server_close)
        test.addCleanup(self.server.shutdown)

    def got(self) -> list[dict[str, Any]]:
        """The items received so far."""
        with self.lock:
            return list(self.items)


class ForgedReportLiveTests(TestCase):
    """The forged-report and one-copy probes, end to end."""

    timeout = 180

    def run_probes(self, store: dict[str, Any]) -> None:
        """Start Hurricane on ``store`` with a webhook, send mail, then the probes."""
        sink = SmtpSink(self).start()
        stall = PySink(self, stall=120.0)  # answers the final dot after the test
        hook = HookReceiver(self)
        server = Hurricane(temp_dir(self), {
            "store": store,
            "routes": {"*": f"127.0.0.1:{sink.port}", "later.test": f"127.0.0.1:{free_port()}",
                       "slow.test": f"127.0.0.1:{stall.port}"},
            # the stalled transaction must stay in flight while the probes run
            "delivery": {"timeouts": {"data_end": 150.0},
                         # the deferred row must not be retried while the probes run:
                         # its attempts would change under the "nothing moved" check
                         "first_retry": 600.0, "max_retry_interval": 600.0},
        })
        with open(server.config_path, "a") as fp:
            fp.write(f'[[webhooks]]\nurl = "http://127.0.0.1:{hook.port}/hook"\n'
                     'secret = "probe-secret"\nmode = "final"\nname = "probe"\n'
                     "poll_interval = 0.1\nfirst_backoff = 0.2\n")
        server.start(self)
        reader = StoreReader(server.store_url)

        recipients = {"victim": "victim@sink.test", "waiting": "waiting@later.test",
                      "fresh": "fresh@slow.test"}
        for tag, rcpt in recipients.items():
            code, text = smtp_send(server.submission_port, "app@app.hx.test", [rcpt],
                                   make_message(tag, rcpt))
            self.assertEqual(code, 250, text)

        def rows() -> dict[str, dict[str, Any]]:
            return {d["recipient"]: d for d in reader.deliveries()}

        def settled() -> bool:
            r = rows()
            return (len(r) == 3 and r["victim@sink.test"]["state"] == "delivered"
                    and r["waiting@later.test"]["state"] == "deferred"
                    and len(stall.raw) == 0 and r["fresh@slow.test"]["state"] == "queued")

        wait_until(settled, 30, "delivered, deferred and queued recipients", 0.1)
        wait_until(lambda: any(i["type"] == "delivered" for i in hook.got()), 20,
                   "the delivered webhook")
        before = rows()

        # -- the probes: anyone may send these --------------------------------------
        forged_dsn = dsn("victim@sink.test", to=POSTMASTER, extra_recipients=[
            ("waiting@later.test", "failed", "5.1.1"), ("fresh@slow.test", "failed", "5.1.1")])
        code, text = smtp_send(server.bounce_port, "", [POSTMASTER], forged_dsn)
        self.assertEqual(code, 250, text)
        forged_arf = arf("victim@sink.test")
        code, text = smtp_send(server.bounce_port, "", [f"fbl@{BOUNCE_DOMAIN}"], forged_arf)
        self.assertEqual(code, 250, text)
        # twenty RCPTs of postmaster, one message of ~1 MB
        big = dsn("victim@sink.test", to=POSTMASTER) + (b"x" * 998 + b"\r\n") * 1000
        spellings = [POSTMASTER, POSTMASTER.upper(), "postmaster", "Postmaster"]
        with smtplib.SMTP("127.0.0.1", server.bounce_port, timeout=30) as s:
            s.ehlo("client.hx.test")
            s.mail("")
            for i in range(20):
                self.assertEqual(s.rcpt(spellings[i % 4])[0], 250)
            self.assertEqual(s.data(big)[0], 250)

        def analyzed() -> bool:
            return [b["status"] for b in reader.bounces()] == ["analyzed"] * 3

        wait_until(analyzed, 30, "the three returned messages analyzed", 0.1)
        bounces = sorted(reader.bounces(), key=lambda b: b["bounce_id"])
        # one stored copy for the twenty recipients, with one recipient row
        self.assertEqual(len(bounces), 3)
        # the message once, plus our Received header
        self.assertGreaterEqual(len(bounces[2]["raw"]), len(big))
        self.assertLess(len(bounces[2]["raw"]), len(big) + 1000)
        [(count,)] = reader.query("SELECT COUNT(*) FROM bounce_recipients WHERE bounce_id = ?",
                                  (bounces[2]["bounce_id"],))
        self.assertEqual(count, 1)

        # nothing moved, nobody suppressed, the events say so
        self.assertEqual(rows(), before)
        self.assertEqual(reader.query("SELECT address FROM suppressions"), [])
        events = reader.query(
            "SELECT kind, state, note, correlation FROM events WHERE kind IN "
            "('bounce', 'complaint') ORDER BY event_id")
        self.assertEqual(sorted({(k, s, n) for k, s, n, _ in events}),
                         [("bounce", None, "recorded, not applied: unverified correlation"),
                          ("complaint", None, "recorded, not applied: unverified correlation")])

        # the webhook endpoint read past every one of those events, sending none
        [(last,)] = reader.query("SELECT MAX(event_id) FROM events")
        cursor = CursorFile(os.path.join(server.data_dir, "cursors", "webhook-probe.json"))
        wait_until(lambda: cursor.load() >= last, 20, "the webhook cursor past the probes")
        self.assertEqual([i["type"] for i in hook.got()], ["delivered"])

        # control: the genuine return path still bounces, and that is final
        victim = before["victim@sink.test"]
        token = server.codec().encode(victim["delivery_id"], None, victim["message_id"])
        code, text = smtp_send(server.bounce_port, "", [token],
                               dsn("victim@sink.test", to=token))
        self.assertEqual(code, 250, text)
        wait_until(lambda: rows()["victim@sink.test"]["state"] == "bounced", 20,
                   "the verified bounce")
        wait_until(lambda: any(i["type"] == "bounced" for i in hook.got()), 20,
                   "the bounced webhook")
        bounced = [i for i in hook.got() if i["type"] == "bounced"]
        self.assertEqual([(i["final"], i["recipient"]) for i in bounced],
                         [(True, "victim@sink.test")])
        self.assertTrue(server.alive())

    def test_sqlite(self) -> None:
        """The probes on the default SQLite store."""
        self.run_probes({})

    def test_postgres(self) -> None:
        """The probes on PostgreSQL."""
        self.run_probes({"url": fresh_postgres_database(self)})
