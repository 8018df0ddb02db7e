"""Tests for ``hurricane analyze`` (hurricane.bounce.cli)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import cli

BOUNCE = b"""From: MAILER-DAEMON@mx.example.net
Subject: failure notice

<erin@example.org>:
192.0.2.3 does not like recipient.
Remote host said: 550 5.1.1 <erin@example.org>... No such user
"""


class CLITests(SynchronousTestCase):
    """The analyze subcommand."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        for n in ("a.eml", "b.eml"):
            with open(os.path.join(self.dir, n), "wb") as fp:
                fp.write(BOUNCE)
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)

    def tearDown(self):
        for n in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, n))
        os.rmdir(self.dir)

    def test_json_directory(self):
        """A directory is expanded and each file gives one JSON line."""
        rc = cli.main(["--json", self.dir])
        self.assertEqual(rc, 0)
        lines = [json.loads(x) for x in self.out.getvalue().splitlines()]
        self.assertEqual([os.path.basename(x["file"]) for x in lines], ["a.eml", "b.eml"])
        for key in ("file", "category", "recipients", "status", "replycode", "reason", "hard",
                    "results"):
            self.assertIn(key, lines[0])
        self.assertEqual(lines[0]["recipients"], ["erin@example.org"])
        self.assertEqual(set(lines[0]["results"][0]),
                         {"recipient", "status", "replycode", "reason", "hard", "diagnostic",
                          "action", "source", "rule", "stage", "decided_by", "runner_up"})

    def test_human_and_missing_file(self):
        """Without --json a summary is printed; an unreadable file makes the exit status 1."""
        rc = cli.main(["analyze", os.path.join(self.dir, "a.eml"), os.path.join(self.dir, "nope")])
        self.assertEqual(rc, 1)
        self.assertIn("erin@example.org", self.out.getvalue())
        self.assertIn("nope", self.err.getvalue())

    def test_add_parser(self):
        """add_parser registers 'analyze' with run as its func."""
        parser = argparse.ArgumentParser()
        cli.add_parser(parser.add_subparsers())
        args = parser.parse_args(["analyze", "--rcpt", "h1k@bounce.example.com", "x"])
        self.assertIs(args.func, cli.run)
        self.assertEqual((args.rcpt, args.files, args.json),
                         ("h1k@bounce.example.com", ["x"], False))


class PlainArgsTests(SynchronousTestCase):
    """``analyze [--json|--explain]... FILE...`` is read without argparse, as argparse reads it."""

    def parsed(self, args: list[str]) -> dict[str, object]:
        parser = argparse.ArgumentParser(prog="hurricane")
        cli.add_parser(parser.add_subparsers(dest="command", required=True))
        return vars(parser.parse_args(args))

    def test_same_namespace_as_argparse(self) -> None:
        for args in (["analyze", "a.eml"], ["analyze", "--json", "a", "b"],
                     ["analyze", "--explain", "--json", "--json", "a"],
                     ["analyze", "analyze", "x y", ""]):
            plain = cli._plain_args(args)
            assert plain is not None
            self.assertEqual(vars(plain), self.parsed(args), args)

    def test_anything_else_left_to_argparse(self) -> None:
        for args in (["analyze"], ["analyze", "--json"], ["analyze", "a", "--json"],
                     ["analyze", "--rcpt", "x@y", "a"], ["analyze", "--js", "a"],
                     ["analyze", "--", "a"], ["analyze", "-"], ["analyze", "-h"],
                     ["analyze", "a", "-x"], ["other", "a"]):
            self.assertIsNone(cli._plain_args(args), args)

    def test_main_reads_options_after_files_with_argparse(self) -> None:
        """(argparse refuses a file after an option that follows files: so does main)"""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        with tempfile.NamedTemporaryFile(suffix=".eml", delete=False) as fp:
            fp.write(BOUNCE)
        self.addCleanup(os.unlink, fp.name)
        self.assertEqual(cli.main(["analyze", fp.name, "--json"]), 0)
        self.assertEqual(json.loads(out.getvalue())["recipients"], ["erin@example.org"])
        self.assertRaises(SystemExit, cli.main, ["analyze", fp.name, "--json", fp.name])
