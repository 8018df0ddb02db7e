"""hurricane/tlsrpt.py: RFC 8460 reports, the _smtp._tls record, the message, the command.

The counts against a real store are in tests/store/test_transport.py (both
engines); here, what a report and its message look like, and the command.
"""

from __future__ import annotations

import json
import os
import random
from email import message_from_bytes

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from hurricane.store.sqlite import SqliteStore
from hurricane.store.transport import StoredStsPolicy, TlsAttemptCount
from hurricane.tlsrpt import build_report, report_message, rua_of
from tests.store.test_transport import DAY, record_attempts


class RuaTests(TestCase):
    """The _smtp._tls record and the report message."""

    def test_policy_string_of_the_kept_policy(self) -> None:
        """An sts policy carries its text and MX patterns when it is the kept one."""
        kept = StoredStsPolicy("a.test", "7", "enforce", ("mx.a.test",), 86400.0,
                               "version: STSv1\nmode: enforce\nmx: mx.a.test\n", 0.0, 1.0)
        counts = [TlsAttemptCount("a.test", "sts", "enforce 7", "success", "mx.a.test",
                                  "192.0.2.1", "192.0.2.10", 4),
                  TlsAttemptCount("a.test", "sts", "enforce 6", "success", "mx.a.test",
                                  "192.0.2.1", "192.0.2.10", 1)]
        report = build_report("a.test", DAY, counts, organization="o", contact="c",
                              policies={"a.test": kept})
        current, older = report["policies"]
        self.assertEqual(current["policy"]["policy-string"],
                         ["version: STSv1", "mode: enforce", "mx: mx.a.test"])
        self.assertEqual(current["policy"]["mx-host"], ["mx.a.test"])
        self.assertEqual(current["summary"]["total-successful-session-count"], 4)
        self.assertNotIn("policy-string", older["policy"])  # an id we no longer have

    def test_rua(self) -> None:
        self.assertEqual(rua_of(["v=TLSRPTv1; rua=mailto:a@x.test, https://r.test/"]),
                         ["mailto:a@x.test", "https://r.test/"])
        self.assertEqual(rua_of(["v=TLSRPTv1; rua=mailto:a@x", "v=TLSRPTv1; rua=mailto:b@x"]),
                         [])
        self.assertEqual(rua_of(["v=spf1 -all"]), [])

    def test_message_headers(self) -> None:
        m = report_message({"report-id": "r1"}, "a.test", "t@shop.test", "mailto:tls@a.test",
                           "shop.test")
        mail = message_from_bytes(m.body)
        self.assertEqual(mail["Subject"],
                         "Report Domain: a.test Submitter: shop.test Report-ID: <r1>")
        self.assertIn('report-type="tlsrpt"', mail["Content-Type"])
        self.assertEqual([r.address for r in m.recipients], ["tls@a.test"])


class TlsRptCommandTests(TestCase):
    """``hurricane tlsrpt --config FILE --day D [--domain D]`` prints what was recorded."""

    async def test_prints_the_days_reports(self) -> None:
        from hurricane.config import load_config
        from tests.test_cli import make_config, run

        config = make_config('[delivery.tlsrpt]\norganization = "Shop"\n'
                             'contact = "tlsrpt@shop.test"\n')
        path = load_config(config).store_url.removeprefix("sqlite://")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        store = SqliteStore(path, reactor)
        await store.open()
        try:
            expected = await record_attempts(store, random.Random(11))
        finally:
            await store.close()
        r = run("tlsrpt", "--config", config, "--day", "2026-12-05")
        self.assertEqual(r.returncode, 0, r.stderr)
        reports = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual([x["report-id"] for x in reports],
                         ["2026-12-05T00:00:00Z_a.test", "2026-12-05T00:00:00Z_b.test"])
        total = sum(p["summary"]["total-successful-session-count"]
                    + p["summary"]["total-failure-session-count"]
                    for x in reports for p in x["policies"])
        self.assertEqual(total, sum(expected.values()))
        self.assertEqual(reports[0]["organization-name"], "Shop")
        r = run("tlsrpt", "--config", config, "--day", "2026-12-05", "--domain", "b.test")
        self.assertEqual([json.loads(line)["report-id"] for line in r.stdout.splitlines()],
                         ["2026-12-05T00:00:00Z_b.test"])
        r = run("tlsrpt", "--config", config, "--day", "5 Dec")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("YYYY-MM-DD", r.stderr)
