"""hurricane.maildate: the RFC 5322 date-time of the headers we write."""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from hurricane.maildate import rfc5322_date


class Rfc5322DateTests(SynchronousTestCase):
    """One format: UTC, +0000, English names, whole seconds."""

    def test_format(self) -> None:
        """A Unix time becomes "Day, DD Mon YYYY HH:MM:SS +0000" (fraction dropped)."""
        self.assertEqual(rfc5322_date(1767225600.9), "Thu, 01 Jan 2026 00:00:00 +0000")
        self.assertEqual(rfc5322_date(1709251199), "Thu, 29 Feb 2024 23:59:59 +0000")

    def test_same_as_the_c_locale_strftime(self) -> None:
        """It says what strftime says in the C locale (what the headers always said)."""
        for t in (0, 86399, 951782400, 2**31 + 5):
            self.assertEqual(rfc5322_date(t),
                             time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t)))
