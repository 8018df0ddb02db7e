#!/usr/bin/env python3
"""Fuzz fluflgate.cannot_find's soundness: skipped means flufl.bounce answers nothing.

    python fuzz/fuzz_fluflgate.py --seconds 600

Property: whenever ``cannot_find(raw)`` is True, ``flufl.bounce.all_failures``
on the parsed message returns two empty sets (or raises). The messages are
tests/bounce/fluflmail.py's MIME trees (charsets, quoted-printable, folded
headers, triggers in any case or hidden), and the test suite's line soup.
"""

from __future__ import annotations

import email
import logging
import sys

from _runner import main

from hurricane.bounce import fluflgate
from tests.bounce.fluflmail import flufl_mail
from tests.bounce.test_fluflgate import _messages

logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


def check(raw: bytes) -> None:
    if not fluflgate.cannot_find(raw):
        return
    from flufl.bounce import all_failures
    try:
        got = all_failures(email.message_from_bytes(raw))
    except Exception:
        return
    assert got == (frozenset(), frozenset()), (raw, got)


PROPERTIES = [
    ("mime_trees", check, (flufl_mail(),)),
    ("line_soup", check, (_messages(),)),
]

if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], PROPERTIES))
