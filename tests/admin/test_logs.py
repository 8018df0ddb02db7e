"""Tests of hurricane.admin.logs: the ``twistd --logger`` observers."""

from __future__ import annotations

import io
import json
import sys

from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from hurricane.admin import logs


class LogObserverTests(SynchronousTestCase):
    """The JSON observer writes one parseable line per event, info and above."""

    def test_json_lines(self) -> None:
        """Each info event is one JSON line keeping its format fields; debug is dropped."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        publisher = LogPublisher(logs.json_stdout())
        log = Logger(namespace="hurricane.test", observer=publisher)
        log.info("delivered to {recipient} ({code})", recipient="a@example.org", code=250)
        log.debug("noise {n}", n=1)
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        event = json.loads(lines[0])
        self.assertEqual((event["recipient"], event["code"]), ("a@example.org", 250))
        self.assertEqual(event["log_namespace"], "hurricane.test")


class RenderedTextTests(SynchronousTestCase):
    """JSON lines carry the rendered message; text lines carry an ISO 8601 UTC stamp."""

    def events(self, observer_name: str) -> str:
        """Log a formatted event, a failure and a legacy event through one observer."""
        from twisted.logger import LogLevel
        from twisted.python.failure import Failure

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = getattr(logs, observer_name)()
        publisher = LogPublisher(observer)
        log = Logger(namespace="hurricane.outbound.queue", observer=publisher)
        log.info("delivered {queue_id} to {recipient}", queue_id="Q1", recipient="a@b.test")
        try:
            1 / 0  # noqa: B018 - a real traceback
        except ZeroDivisionError:
            log.failure("cannot record {queue_id}", Failure(), queue_id="Q2")
        # what twisted.python.log.msg("...") becomes on the way to new observers
        legacy_event = {"log_format": "{log_text}", "log_text": "Starting factory <X>",
                        "log_level": LogLevel.info, "log_namespace": "log_legacy",
                        "log_time": 1e9, "message": ("Starting factory <X>",)}
        publisher(legacy_event)
        return out.getvalue()

    def test_json_has_the_rendered_text(self) -> None:
        """log_text is the message with its fields filled in (and a failure's traceback),
        the template and the fields stay; a legacy event keeps its own text."""
        lines = [json.loads(line) for line in self.events("json_stdout").splitlines()]
        self.assertEqual(len(lines), 3)
        first, failure, legacy = lines
        self.assertEqual(first["log_text"], "delivered Q1 to a@b.test")
        self.assertEqual(first["log_format"], "delivered {queue_id} to {recipient}")
        self.assertEqual(first["queue_id"], "Q1")
        self.assertTrue(failure["log_text"].startswith("cannot record Q2\n"), failure)
        self.assertIn("ZeroDivisionError", failure["log_text"])
        self.assertEqual(legacy["log_text"], "Starting factory <X>")

    def test_text_has_utc_stamps(self) -> None:
        """Every text line starts with an ISO 8601 UTC time stamp to the millisecond."""
        text = self.events("text_stdout")
        starts = [line for line in text.splitlines() if not line.startswith("\t")]
        self.assertEqual(len(starts), 3, text)
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        self.assertRegex(starts[0], rf"^{stamp} \[hurricane\.outbound\.queue#info\] "
                                    r"delivered Q1 to a@b\.test$")
        self.assertRegex(starts[1], rf"^{stamp} \[hurricane\.outbound\.queue#critical\] "
                                    r"cannot record Q2$")
        self.assertEqual(starts[2], "2001-09-09T01:46:40.000Z [log_legacy#info] "
                                    "Starting factory <X>")

    def test_production_recipes_print_text(self) -> None:
        """Every ``... | jq`` recipe in docs/production.md runs on the JSON log and
        prints no unfilled template ("{queue_id}")."""
        import re
        import shlex
        import shutil
        import subprocess
        from pathlib import Path

        from tests.peers import missing_peer

        if shutil.which("jq") is None:
            missing_peer("jq is not installed (apt-get install jq)")
        doc = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text()
        blocks = re.findall(r"^ *```sh\n(.*?)^ *```", doc, re.M | re.S)
        recipes = [line.split("| jq ", 1)[1] for block in blocks
                   for line in block.splitlines() if "| jq " in line]
        self.assertGreaterEqual(len(recipes), 2, "the recipes moved: update this test")
        log_lines = self.events("json_stdout")
        for recipe in recipes:
            proc = subprocess.run(["jq", *shlex.split(recipe)], input=log_lines,
                                  capture_output=True, text=True, timeout=30)
            self.assertEqual(proc.returncode, 0, (recipe, proc.stderr))
            self.assertNotRegex(proc.stdout, r"\{[a-z_]+\}", recipe)
            self.assertIn("Q1", proc.stdout, recipe)
