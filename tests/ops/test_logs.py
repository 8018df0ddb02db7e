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
