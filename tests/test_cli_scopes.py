"""`hurricane suppression add|list|remove --scope`: one validation, every scope."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.test_cli import make_config, run

STREAMS = '[[streams]]\nname = "news"\nkind = "bulk"\n'


class ScopedSuppressionCommandTests(SynchronousTestCase):
    """The command on a real SQLite file."""

    def test_scopes_round_trip(self) -> None:
        """add with each scope, list shows the scope, remove takes one scope."""
        config = make_config(STREAMS)
        self.assertEqual(run("migrate", "--config", config).returncode, 0)
        for args in (["Ann@X.test"], ["--scope", "stream:news", "ann@x.test"],
                     ["--scope", "mailing:spring-26", "bob@x.test"],
                     ["--scope", "domain", "gmail.test"]):
            r = run("suppression", "add", "--config", config, *args)
            self.assertEqual(r.returncode, 0, r.stderr)
        r = run("suppression", "add", "--config", config, "--scope", "stream:news", "ANN@x.test")
        self.assertEqual(r.stdout, "already suppressed ann@x.test (stream:news)\n")
        rows = [json.loads(x) for x in
                run("suppression", "list", "--config", config).stdout.splitlines()]
        self.assertEqual([(x["scope"], x["address"]) for x in rows], [
            ("global", "ann@x.test"), ("domain", "gmail.test"),
            ("mailing:spring-26", "bob@x.test"), ("stream:news", "ann@x.test")])
        only = run("suppression", "list", "--config", config, "--scope", "stream:news")
        self.assertEqual([json.loads(x)["address"] for x in only.stdout.splitlines()],
                         ["ann@x.test"])
        r = run("suppression", "remove", "--config", config, "--scope", "domain", "gmail.test")
        self.assertEqual((r.returncode, r.stdout), (0, "removed gmail.test (domain)\n"))
        r = run("suppression", "remove", "--config", config, "--scope", "stream:news",
                "ann@x.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [json.loads(x) for x in
                run("suppression", "list", "--config", config).stdout.splitlines()]
        self.assertEqual([(x["scope"], x["address"]) for x in rows], [
            ("global", "ann@x.test"), ("mailing:spring-26", "bob@x.test")])

    def test_bad_scopes_refused(self) -> None:
        """An unknown stream, a made-up scope, an address for a domain: exit 2, nothing kept."""
        config = make_config(STREAMS)
        self.assertEqual(run("migrate", "--config", config).returncode, 0)
        for args, message in (
                (["--scope", "stream:promo", "a@x.test"], "no stream 'promo' is configured"),
                (["--scope", "tenant:7", "a@x.test"], "expected a scope"),
                (["--scope", "domain", "not a domain"], "expected a domain"),
                (["--expires-days", "3", "a@x.test"], "only a stream, mailing or domain")):
            r = run("suppression", "add", "--config", config, *args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(message, r.stderr)
        self.assertEqual(run("suppression", "list", "--config", config).stdout, "")
