#!/usr/bin/env python3
"""Fuzz the ESMTP command parsers, the DATA reader and whole server sessions.

    python fuzz/fuzz_smtp.py --seconds 600

The same properties as ``tests/hardening/test_fuzz.py``, for as long as you
like: parse_path/parse_params return a value or a 5xx ReplyError; only
CRLF.CRLF ends DATA however the bytes are split; the submission and bounce
protocols fed random bytes never raise, write only well-formed reply lines,
buffer at most the unterminated-line limit and answer a NOOP afterwards.
"""

from __future__ import annotations

import sys

from _runner import main
from hypothesis import strategies as st

from tests.hardening.test_fuzz import (
    DataReaderFuzzTests,
    ParserFuzzTests,
    SessionFuzzTests,
    _bounce,
    _submission,
    chunks,
    path_text,
)

_parser = ParserFuzzTests("test_parse_path")
_reader = DataReaderFuzzTests("test_only_crlf_dot_crlf_ends")
_session = SessionFuzzTests("test_bounce")


def parse_path(text: str, kind: str) -> None:
    ParserFuzzTests.test_parse_path.hypothesis.inner_test(_parser, text, kind)


def parse_params(text: str) -> None:
    ParserFuzzTests.test_parse_params.hypothesis.inner_test(_parser, text)


def data_reader(body: bytes, cuts: list[int], reject: bool) -> None:
    DataReaderFuzzTests.test_only_crlf_dot_crlf_ends.hypothesis.inner_test(
        _reader, body, cuts, reject)


def submission(pieces: list[bytes], ip: str) -> None:
    _session._session(_submission(), pieces, ip)


def bounce(pieces: list[bytes]) -> None:
    _session._session(_bounce(), pieces, "198.51.100.7")


PROPERTIES = [
    ("parse_path", parse_path, (path_text, st.sampled_from(["sender", "recipient"]))),
    ("parse_params", parse_params, (st.text(max_size=200),)),
    ("data_reader", data_reader, (st.binary(max_size=2000), st.lists(st.integers(0, 2000),
                                  max_size=16), st.booleans())),
    ("submission_session", submission, (chunks, st.sampled_from(["127.0.0.1", "203.0.113.9"]))),
    ("bounce_session", bounce, (chunks,)),
]

if __name__ == "__main__":
    sys.exit(main(__doc__.splitlines()[0], PROPERTIES))
