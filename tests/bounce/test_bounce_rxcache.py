"""The compiled-regex cache (hurricane.bounce.rxcache): the same patterns as re.compile."""

from __future__ import annotations

import marshal
import os
import re
import sys
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import analyze, classify, evidence, mime, rxcache
from hurricane.bounce.alternation import merge_alternatives

SAMPLES: list[tuple[Any, int]] = [
    (r"(?i)mail delivery agent at (?:messagelabs\.com|symantec)", 0),
    (r"in (?:reply|response) to (?P<data>data)\b|(?P<rcpt>rcpt)", 0),
    (r"[245](?<![\d.].)\.(\d{1,3})", re.I),
    (rb"[ \t>]*+X-Hurricane-Token:[ \t]*+<?([^\s<>]++)>?[ \t]*+$", re.I | re.M),
    ("自動応答|不在|r[ée]ponse", 0),
]


class CacheTests(SynchronousTestCase):
    """A pattern from the cache is the pattern re.compile makes."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "__pycache__", "regex.test.marshal")
        self.fresh()
        self.patch(rxcache, "cache_path", lambda: self.path)
        self.patch(sys, "dont_write_bytecode", False)

    def tearDown(self) -> None:
        for root, dirs, files in os.walk(self.dir, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(self.dir)

    def fresh(self) -> None:
        """A new process, as far as the cache can tell."""
        self.patch(rxcache, "_table", None)
        self.patch(rxcache, "_new", {})
        self.patch(rxcache, "_used", set())

    def test_compiled_equals_re(self) -> None:
        """Compiled, then read back from the file: equal to re.compile's (same program)."""
        for pattern, flags in SAMPLES:
            self.assertEqual(rxcache.compile(pattern, flags), re.compile(pattern, flags))
        self.assertTrue(rxcache.save())
        self.fresh()
        for pattern, flags in SAMPLES:
            got = rxcache.compile(pattern, flags)
            want = re.compile(pattern, flags)
            self.assertEqual(got, want)
            self.assertEqual((got.groups, got.groupindex, got.flags),
                             (want.groups, want.groupindex, want.flags))
        self.assertEqual(rxcache._new, {})     # every one came from the file
        m = rxcache.compile(SAMPLES[1][0]).search("x in reply to data")
        assert m is not None
        self.assertEqual(m.lastgroup, "data")

    def test_derived(self) -> None:
        """A derived source is cached under its tag: not derived again; another tag derives."""
        calls: list[int] = []

        def derive(n: int) -> str:
            calls.append(n)
            return "ab+c"

        got = rxcache.compile("(?:ab+c)", derive=lambda: derive(1), tag=7)
        self.assertEqual(got, re.compile("ab+c"))
        self.assertTrue(rxcache.save())
        self.fresh()
        self.assertEqual(rxcache.compile("(?:ab+c)", derive=lambda: derive(2), tag=7),
                         re.compile("ab+c"))
        self.assertEqual(calls, [1])
        self.assertEqual(rxcache.compile("(?:ab+c)", derive=lambda: derive(3), tag=8),
                         re.compile("ab+c"))
        self.assertEqual(calls, [1, 3])
        # the plain pattern is another entry
        self.assertEqual(rxcache.compile("(?:ab+c)"), re.compile("(?:ab+c)"))

    def test_bad_pattern(self) -> None:
        """A bad regex raises re.error, as re.compile does."""
        self.assertRaises(re.error, rxcache.compile, "(unclosed")

    def test_damaged_or_foreign_file(self) -> None:
        """A damaged file, or one another Python build wrote, is ignored."""
        os.makedirs(os.path.dirname(self.path))
        for data in (b"\x00garbage", marshal.dumps((("another", "build"), {})),
                     marshal.dumps((rxcache._KEY, {(SAMPLES[0][0], 0): b"\x00not a program"}))):
            with open(self.path, "wb") as fp:
                fp.write(data)
            self.fresh()
            self.assertEqual(rxcache.compile(*SAMPLES[0]), re.compile(*SAMPLES[0]))

    def test_no_bytecode_no_file(self) -> None:
        """PYTHONDONTWRITEBYTECODE: nothing is written."""
        self.patch(sys, "dont_write_bytecode", True)
        rxcache.compile(*SAMPLES[0])
        self.assertFalse(rxcache.save())
        self.assertFalse(os.path.exists(self.path))

    def test_bounded(self) -> None:
        """Past MAX_ENTRIES the file starts again from what this run used."""
        self.patch(rxcache, "MAX_ENTRIES", 3)
        for i in range(3):
            rxcache.compile("old%d" % i)
        self.assertTrue(rxcache.save())
        self.fresh()
        rxcache.compile("old0")
        rxcache.compile("new")
        self.assertTrue(rxcache.save())
        self.assertEqual(sorted(p for p, _f in rxcache._read(self.path)), ["new", "old0"])


class ModulePatternTests(SynchronousTestCase):
    """The analyzer's patterns, wherever their programs came from, are re.compile's."""

    def test_module_patterns(self) -> None:
        n = 0
        for mod in (analyze, classify, evidence, mime):
            for value in vars(mod).values():
                items = value if isinstance(value, tuple) else (value,)
                for v in items:
                    if isinstance(v, re.Pattern):
                        self.assertEqual(v, re.compile(v.pattern, v.flags), v.pattern)
                        n += 1
        self.assertGreater(n, 50)

    def test_rule_patterns(self) -> None:
        """(each rule's alternatives merged: test_bounce_fastpaths checks the merge)"""
        clf = classify.ReplyClassifier.load()
        for r in clf.rules:
            for p in (r.text, r.also, r.unless):
                if isinstance(p, classify.LazyPattern):
                    source = merge_alternatives(p.parts) if p.parts else p.pattern
                    self.assertEqual(p.compiled(), re.compile(source, p.flags), r.id)
