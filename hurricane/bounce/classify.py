"""One reply classifier shared by the bounce analyzer and outbound delivery.

``ReplyClassifier.classify(code, status, text)`` maps an SMTP reply code, an
enhanced status code (RFC 3463) and the reply text to a reason word of
Sisimai's vocabulary, using ordered rules kept as data in ``rules.toml`` next
to this module.  Operators extend or override them with their own TOML files
(same shape), which are checked first; a rule with a packaged rule's id
replaces it.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hurricane.bounce import rxcache
from hurricane.bounce.alternation import MERGE_TAG, merge_alternatives
from hurricane.bounce.evidence import Evidence, Stage, find_stage, is_catch_all
from hurricane.bounce.evidence import trie_regex as _trie_regex
from hurricane.bounce.model import Record, ReplyClass, is_hard

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    from typing import Any, TypedDict

__all__ = ["Rule", "ReplyClassifier", "default_classifier", "extract_codes", "normalise_text",
           "detect_command", "regex_hazard", "REASONS", "MAX_TEXT"]

REASONS = frozenset("""
userunknown hostunknown hasmoved mailboxfull suspend filtered rejected blocked spamdetected
virusdetected policyviolation authfailure requireptr badreputation securityerror norelaying
notaccept notcompliantrfc mesgtoobig exceedlimit toomanyconn speeding expired networkerror
systemerror systemfull mailererror contenterror syntaxerror onhold failedstarttls suppressed
undefined delivered vacation feedback""".split())

#: Characters of a reply text that the rules read.
MAX_TEXT = 8 * 1024

# (?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d) and
# (?<![\d.#-])([245][0-5]\d)(?:[ -]|$)(?![\d.]*%),
# each written to start with the [245] class (the look-behind just after it) so
# that searches skip ahead to the digits fast; the same matches.
_STATUS_RE = rxcache.compile(r"([245])(?<![\d.].)\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
#: (a reply code is not the start of an address's local part: "<550-555-1234@sms.example>")
_CODE_RE = rxcache.compile(r"([245](?<![\d.#-].)[0-5]\d)(?!-[\w.+-]{0,64}@)(?:[ -]|$)(?![\d.]*%)")
_STATUS_OK = rxcache.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@functools.lru_cache(maxsize=128)
def _code_repeat(code: str) -> re.Pattern[str]:
    """A reply code repeated at the start of a reply's next line (with its status)."""
    return rxcache.compile(r"(?<=\S) %s[- ](?:[245]\.\d{1,3}\.\d{1,3} )?" % code)


def unquote(text: str) -> str:
    """A text a person quoted ("> " before every line, a level or a few) read as the text.

    A report forwarded inline under quote marks says what the report said: the marks
    would otherwise break its phrases at every line end ("Host not > found"). Only
    when every non-blank line starts with the mark and a blank (or is the mark
    alone): a session transcript's ">>> DATA" is not a quote (docs section 1).
    """
    if text[:1] != ">" and "\n>" not in text and not text.lstrip()[:1] == ">":
        return text
    lines = text.split("\n")
    for _ in range(4):          # (nested quotes: a few levels, bounded)
        if not all(_QUOTED.match(line) for line in lines if line.strip()):
            break
        lines = [_QUOTED.sub("", line, count=1) if line.strip() else line for line in lines]
    return "\n".join(lines)


#: A quoted line: its mark, then a blank or the end of the line.
_QUOTED = rxcache.compile(r"^[ \t]*>(?:[ \t]|$)")


def normalise_text(text: str) -> str:
    """Lower-case and collapse white space, as the rules expect."""
    # str.split() splits on the same white space as \s (Py_UNICODE_ISSPACE)
    return " ".join(text.split()).lower()


def extract_codes(text: str) -> tuple[str | None, str | None]:
    """Find the first SMTP reply code and enhanced status code in a text."""
    code = status = None
    m = _CODE_RE.search(text)
    if m is not None and m.group(1)[0] == "2":
        # a session transcript: the failure follows the successes
        m = next((x for x in _CODE_RE.finditer(text) if x.group(1)[0] != "2"), m)
    if m is not None:
        code = m.group(1)
    m = _STATUS_RE.search(text)
    if m is not None and m.group(1) == "2":
        m = next((x for x in _STATUS_RE.finditer(text) if x.group(1) != "2"), m)
    if m is not None and int(m.group(2)) == 0:
        # a reporter's summary in the "other or undefined" area x.0.y ("#< #5.0.0
        # smtp;550 #5.1.0 Address rejected.>", Exchange 2007; "550 5.0.350 Remote server
        # returned an error -> 550 5.7.1 ...", Exchange Online) and the remote's own code
        # after it: the more precise one, of the same class (as in a DSN, docs section 1)
        m = next((x for x in _STATUS_RE.finditer(text, m.end())
                  if x.group(1) == m.group(1) and int(x.group(2))), m)
    if m is not None:
        status = "%s.%s.%s" % (m.group(1), int(m.group(2)), int(m.group(3)))
    if code and status and code[0] != status[0]:
        # a code that disagrees with the status is usually a number in the text
        if text.find(code) > text.find(status[:1] + "."):
            code = None
    return code, status


class LazyPattern:
    """A packaged rule's regex, compiled the first time it is searched.

    Compiling the ~100 packaged regexes costs ~25 ms, which every start of
    ``hurricane analyze`` paid before reading a file, although the literal
    prefilter lets only the rules whose words occur run at all: a run over a
    few files compiles a few of them. The packaged patterns are checked
    (syntax, linear shape, examples) by the test suite; an operator's rules
    are compiled at load, so that a bad regex is refused there.

    A rule's list of alternatives (``parts``, which ``pattern`` joins) is
    searched as one trie of their literal prefixes (alternation.py): it
    finds a match exactly where ``pattern`` does, in a fraction of the time
    for the long lists, though not always the same match (a rule reads only
    whether there is one).
    """

    __slots__ = ("pattern", "flags", "parts", "_compiled")

    def __init__(self, pattern: str, flags: int = 0, parts: tuple[str, ...] = ()) -> None:
        self.pattern = pattern
        self.flags = flags
        self.parts = parts
        self._compiled: re.Pattern[str] | None = None

    def compiled(self) -> re.Pattern[str]:
        """The compiled regex (compiled once): ``pattern``'s, or its alternatives merged."""
        c = self._compiled
        if c is None:
            parts = self.parts
            if parts and not self.flags:
                c = rxcache.compile(self.pattern, derive=lambda: merge_alternatives(parts),
                                    tag=MERGE_TAG)
            else:
                c = rxcache.compile(self.pattern, self.flags)
            self._compiled = c
        return c

    def search(self, string: str, pos: int = 0,
               endpos: int = sys.maxsize) -> re.Match[str] | None:
        """A match of ``pattern`` in ``string`` when there is one, else None (``re.Pattern.search``
        when ``parts`` is empty)."""
        return self.compiled().search(string, pos, endpos)


#: A rule's regex: compiled (an operator's rules) or compiled on first use (packaged).
Pattern = re.Pattern[str] | LazyPattern


_set = object.__setattr__   # (the frozen record's __init__)


@dataclass(init=False, repr=False, eq=False)
class Rule(Record):
    """One classification rule (see rules.toml for the fields)."""

    id: str
    reason: str
    text: Pattern | None
    status: tuple[str, ...]
    code: tuple[str, ...]
    unless: Pattern | None
    also: Pattern | None
    command: tuple[str, ...]
    disposition: str | None
    match: tuple[str | dict[str, object], ...]
    nomatch: tuple[str | dict[str, object], ...]
    origin: str
    family: tuple[str, ...] = ()

    def __init__(self, id: str,
                 reason: str,
                 text: Pattern | None,
                 status: tuple[str, ...],
                 code: tuple[str, ...],
                 unless: Pattern | None,
                 also: Pattern | None,
                 command: tuple[str, ...],
                 disposition: str | None,
                 match: tuple[str | dict[str, object], ...],
                 nomatch: tuple[str | dict[str, object], ...],
                 origin: str,
                 family: tuple[str, ...] = ()) -> None:
        _set(self, "id", id)
        _set(self, "reason", reason)
        _set(self, "text", text)
        _set(self, "status", status)
        _set(self, "code", code)
        _set(self, "unless", unless)
        _set(self, "also", also)
        _set(self, "command", command)
        _set(self, "disposition", disposition)
        _set(self, "match", match)
        _set(self, "nomatch", nomatch)
        _set(self, "origin", origin)
        _set(self, "family", family)

    def applies(self, code: str | None, status: str | None, low: str, cmd: str,
                family: str | None = None) -> bool:
        if not self.conditions_hold(code, status, cmd, family):
            return False
        if self.text is not None and self.text.search(low) is None:
            return False
        if self.also is not None and self.also.search(low) is None:
            return False
        if self.unless is not None and self.unless.search(low) is not None:
            return False
        return True

    def conditions_hold(self, code: str | None, status: str | None, cmd: str,
                        family: str | None = None) -> bool:
        """The family, command, status and code conditions (all but the text ones)."""
        if self.family and family not in self.family:
            return False
        if self.command and cmd not in self.command:
            return False
        if self.status:
            if not status or not any(status == s or (s.endswith(".") and status.startswith(s))
                                     for s in self.status):
                return False
        if self.code:
            if not code or not any(code == c or (len(c) < 3 and code.startswith(c))
                                   for c in self.code):
                return False
        return True


def _compile(patterns: object, path: str, rid: str, key: str,
             named: dict[str, list[str]] | None = None,
             check_linear: bool = True) -> Pattern | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError("%s: rule %r: %r must be a list of regex strings" % (path, rid, key))
    expanded: list[str] = []
    for p in patterns:
        if p.startswith("@"):
            if named is None or p[1:] not in named:
                raise ValueError("%s: rule %r: unknown pattern set %r in %r" % (path, rid, p, key))
            expanded.extend(named[p[1:]])
        else:
            expanded.append(p)
    patterns = expanded
    if not patterns:
        return None
    source = "|".join("(?:%s)" % p for p in patterns)
    if not check_linear:
        # the packaged rules (checked by the test suite): compiled when first needed
        return LazyPattern(source, parts=tuple(patterns))
    try:
        compiled = re.compile(source)
    except re.error as e:
        raise ValueError("%s: rule %r: bad regex in %r: %s" % (path, rid, key, e)) from None
    for p in patterns if check_linear else ():
        hazard = regex_hazard(p)
        if hazard is not None:
            raise ValueError("%s: rule %r: regex %r in %r can take more than linear time: %s"
                             % (path, rid, p, key, hazard))
    return compiled


def _str_list(value: object, path: str, rid: str, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError("%s: rule %r: %r must be a list" % (path, rid, key))
    return tuple(str(v) for v in value)


# ---------------------------------------------------------------------------
# Linear patterns only.  A rule's regexes run with re.search on text that came
# from anyone (returned mail), up to MAX_TEXT characters.  A pattern that can
# read the same run of characters again from many starting points, or split
# one run between two repeats in many ways, takes quadratic (or exponential)
# time there.  regex_hazard() finds those shapes in the pattern's parse tree;
# the packaged rules pass it, and a rule file whose pattern does not is
# refused at load, with the reason (rules.toml's header says what is refused).

try:
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11 has no tomllib anyway
    _sre_c = _sre_parse = None

@functools.lru_cache(maxsize=1)
def _alphabet() -> str:
    """The characters tested when comparing two character sets (Latin, Greek,
    Cyrillic, the punctuation blocks, kana, the first CJK ideographs, the
    full-width forms: what a reply text holds). Built on first use: ~1 ms that
    ``hurricane analyze``, which never checks a packaged pattern's shape, need
    not pay at start-up."""
    return "".join(map(chr, [*range(0x3100), *range(0x4E00, 0x4F00), *range(0xFF00, 0xFFF0)]))


#: A repeat bounded above this many is treated as unbounded. Below it, a
#: repeat costs at most that many steps per start: on MAX_TEXT characters,
#: a few million steps in the very worst case.
_LARGE_REPEAT = 1000
#: A bounded repeat whose length may vary by this much or more is a *window*
#: (``[^<\n]{0,40}``): next to an unbounded run of the same characters it
#: gives the run's characters back one length at a time, so the run is read
#: again for each length the window can take (~41 times a character for
#: ``{0,40}``: issue 23's review, _NOT_RCPT_CONTEXT). Linear, but by a factor
#: no rule needs; ``x?`` (two lengths) is let through.
_WINDOW = 2
_CATEGORIES = {
    "CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
    "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W",
}


@functools.lru_cache(maxsize=1)
def _word_sets() -> tuple[frozenset[str], frozenset[str]]:
    """The word and non-word characters of _alphabet() (computed on first use: ~10 ms,
    which ``hurricane analyze`` need not pay, since the packaged rules are checked by
    the test suite rather than at each start)."""
    word = frozenset(re.findall(r"\w", _alphabet()))
    return word, frozenset(_alphabet()) - word

#: One way the text before a point can look, as the character sets of the
#: characters consumed since a match started (the last 64).
_Prefix = tuple[frozenset[str], ...]
#: A one-character repeat seen so far in a sequence: its characters, whether a
#: mandatory character it cannot match has come since, and whether it is a
#: window (bounded, see _WINDOW) rather than an unbounded run.
_Run = tuple[frozenset[str], bool, bool]


def _char_class(op: Any, av: Any, flags: int) -> frozenset[str] | None:
    """The characters one single-character item matches (None: not such an item)."""
    c = _sre_c
    if op is c.LITERAL:
        ch = chr(av)
        return frozenset({ch, ch.lower(), ch.upper()} if flags & re.IGNORECASE else ch)
    if op is c.IN:
        return _class_of(tuple((str(iop), iav) for iop, iav in av), flags)
    if op is c.NOT_LITERAL:
        return _class_of((("=NOT_LITERAL", av),), flags)
    if op is c.ANY:
        return _class_of((("=ANY", None),), flags)
    return None


@functools.lru_cache(maxsize=512)
def _class_of(items: tuple[tuple[str, Any], ...], flags: int) -> frozenset[str]:
    """The characters of a class (an IN item's contents, or ANY, or NOT_LITERAL)."""
    c = _sre_c
    if items[0][0] == "=NOT_LITERAL":
        source = "[^" + re.escape(chr(items[0][1])) + "]"
    elif items[0][0] == "=ANY":
        source = "."
    else:
        inner: list[str] = []
        for iop, iav in items:
            if iop == str(c.NEGATE):
                inner.insert(0, "^")
            elif iop == str(c.LITERAL):
                inner.append(re.escape(chr(iav)))
            elif iop == str(c.RANGE):
                inner.append(re.escape(chr(iav[0])) + "-" + re.escape(chr(iav[1])))
            elif iop == str(c.CATEGORY):
                inner.append(_CATEGORIES.get(str(iav), r"\s\S"))
            else:
                return frozenset(_alphabet())   # unknown: assume anything
        source = "[" + "".join(inner) + "]"
    rx = re.compile(source, flags & (re.IGNORECASE | re.DOTALL | re.ASCII))
    return frozenset(rx.findall(_alphabet()))


def _repeat(op: Any, av: Any) -> tuple[int, int, Any] | None:
    c = _sre_c
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
        lo, hi, sub = av
        return lo, hi, sub
    return None


def _has_unbounded(items: Any) -> bool:
    """Whether a parse (sub)tree holds an unbounded (or large) repeat."""
    c = _sre_c
    for op, av in items:
        r = _repeat(op, av)
        if r is not None:
            if r[1] > _LARGE_REPEAT or _has_unbounded(r[2]):
                return True
        elif op is c.SUBPATTERN:
            if _has_unbounded(av[3]):
                return True
        elif op is c.BRANCH:
            if any(_has_unbounded(a) for a in av[1]):
                return True
        elif op in (c.ASSERT, c.ASSERT_NOT):
            if _has_unbounded(av[1]):
                return True
        elif op is c.ATOMIC_GROUP:
            if _has_unbounded(av):
                return True
    return False


def _single(items: Any, flags: int) -> frozenset[str] | None:
    """The character set of a one-item sequence of one character, else None."""
    items = list(items)
    if len(items) != 1:
        return None
    op, av = items[0]
    if op is _sre_c.SUBPATTERN:
        return _single(av[3], (flags | av[1]) & ~av[2])
    return _char_class(op, av, flags)


def _separate(runs: list[_Run], chars: frozenset[str]) -> list[_Run]:
    """The runs after a mandatory character of ``chars``."""
    return [(p, s or not (p & chars), w) for p, s, w in runs]


def _merge(base: int, paths: list[list[_Run]]) -> list[_Run]:
    """The runs after one of several paths taken from the same ``base`` runs.

    A run is separated only if every path separated it; runs opened on any
    path stay open.
    """
    merged = [(paths[0][i][0], all(p[i][1] for p in paths), paths[0][i][2])
              for i in range(base)]
    for p in paths:
        merged.extend(p[base:])
    return merged


def _extend(prefixes: list[_Prefix] | None, chars: frozenset[str]) -> list[_Prefix] | None:
    """The prefixes after one more mandatory character of ``chars``."""
    if prefixes is None:
        return None
    return [(p + (chars,))[-64:] for p in prefixes]


def _union(groups: list[list[_Prefix] | None]) -> list[_Prefix] | None:
    """The prefixes of one of several paths (None: no path can restart in a run)."""
    out: list[_Prefix] = []
    for g in groups:
        if g is not None:
            out.extend(x for x in g if x not in out)
    if len(out) > 32:
        return [()]     # too many to follow: assume the worst, a fresh start
    return out if out or all(g is not None for g in groups) else None


def _restarts_in(prefixes: list[_Prefix] | None, chars: frozenset[str]) -> bool:
    """Whether a match could start inside a run of ``chars`` and reach this point:
    then each character of a long run is a new start that reads the run again."""
    return prefixes is not None and any(all(s & chars for s in p) for p in prefixes)


def _can_fail(op: Any, av: Any) -> bool:
    """Whether an item can fail to match (one that may match nothing cannot)."""
    r = _repeat(op, av)
    return r is None or r[0] > 0


def _scan(items: Any, flags: int, prefixes: list[_Prefix] | None, runs: list[_Run],
          followed: bool) -> tuple[str | None, list[_Prefix] | None, list[_Run]]:
    """Check one sequence of a parse tree and what it holds.

    Args:
        items: the sequence.
        flags: the flags in force.
        prefixes: what may have been consumed since a match started (None:
            the match can only start at one place, the start of the text).
        runs: the unbounded repeats and windows open before the sequence.
        followed: whether something that can fail comes after the sequence
            (a run that nothing after it can fail never reads back).

    Returns:
        (the hazard or None, the prefixes after it, the runs open after it).
    """
    c = _sre_c
    items = list(items)
    # then[i]: whether something after item i can fail
    then = [followed] * len(items)
    for i in range(len(items) - 2, -1, -1):
        then[i] = then[i + 1] or _can_fail(*items[i + 1])
    # the characters of the item just read, when it was one mandatory character
    last: frozenset[str] | None = None
    for i, (op, av) in enumerate(items):
        preceding, last = last, None
        r = _repeat(op, av)
        if r is not None:
            lo, hi, sub = r
            if hi > _LARGE_REPEAT:
                hazard, prefixes, runs = _scan_unbounded(op is c.POSSESSIVE_REPEAT, lo, sub,
                                                         flags, prefixes, runs, then[i],
                                                         preceding)
            else:
                hazard, prefixes, runs = _scan_bounded(op is c.POSSESSIVE_REPEAT, lo, hi, sub,
                                                       flags, prefixes, runs, then[i])
            if hazard is not None:
                return hazard, prefixes, runs
        elif op is c.SUBPATTERN:
            hazard, prefixes, runs = _scan(av[3], (flags | av[1]) & ~av[2], prefixes, runs,
                                           then[i])
            if hazard is not None:
                return hazard, prefixes, runs
        elif op is c.ATOMIC_GROUP:
            hazard, prefixes, inner = _scan(av, flags, prefixes, runs, then[i])
            if hazard is not None:
                return hazard, prefixes, runs
            # nothing inside gives characters back once the group has matched
            runs = inner[:len(runs)]
        elif op is c.BRANCH:
            paths: list[list[_Run]] = []
            ends: list[list[_Prefix] | None] = []
            for alt in av[1]:
                hazard, alt_prefixes, path = _scan(alt, flags, prefixes, runs, then[i])
                if hazard is not None:
                    return hazard, prefixes, runs
                paths.append(path)
                ends.append(alt_prefixes)
            runs = _merge(len(runs), paths)
            prefixes = _union(ends)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            hazard, _, _ = _scan(av[1], flags, prefixes, runs, True)
            if hazard is not None:
                return hazard, prefixes, runs
        elif op is c.AT:
            if av in (c.AT_BEGINNING, c.AT_BEGINNING_STRING) and not flags & re.MULTILINE \
                    or av is c.AT_BEGINNING_STRING:
                prefixes = None          # one start only
            elif av in (c.AT_BEGINNING, c.AT_BEGINNING_LINE):
                prefixes = [(frozenset("\n"),)]     # starts after a line break
            elif av is c.AT_BOUNDARY:
                prefixes = [_word_sets()]     # a run must mix both to hold one
        else:
            chars = _char_class(op, av, flags)
            if chars is not None:
                runs = _separate(runs, chars)
                prefixes = _extend(prefixes, chars)
                last = chars
            else:
                prefixes = [()] if prefixes is not None else None   # unknown: assume the worst
    return None, prefixes, runs


def _scan_unbounded(possessive: bool, lo: int, sub: Any, flags: int,
                    prefixes: list[_Prefix] | None, runs: list[_Run], followed: bool,
                    preceding: frozenset[str] | None
                    ) -> tuple[str | None, list[_Prefix] | None, list[_Run]]:
    """_scan for an unbounded repeat (``*``, ``+``, ``{n,}``) of ``sub``.

    ``preceding``: the characters of the item just before, when it was one
    mandatory character."""
    chars = _single(sub, flags)
    if chars is None:
        return "an unbounded repeat of more than one character", prefixes, runs
    if followed and _restarts_in(prefixes, chars):
        return ("a match can start at any character of a run that an unbounded "
                "repeat reads to its end"), prefixes, runs
    if followed and any(not sep and prev & chars for prev, sep, w in runs if not w):
        return ("two unbounded repeats that can match the same characters, with "
                "nothing between them that tells where the first ends"), prefixes, runs
    # After a character it cannot match, the run starts where a run of
    # its characters starts: each length of a window before reaches
    # another run, never the same one twice.
    starts_run = preceding is not None and not preceding & chars
    if followed and not starts_run and any(
            not sep and prev & chars for prev, sep, w in runs if w):
        return _WINDOW_HAZARD, prefixes, runs
    if lo > 0:
        runs = _separate(runs, chars)
        prefixes = _extend(prefixes, chars)
    if not possessive:
        # (a possessive run never gives characters back to a later one)
        runs = runs + [(chars, False, False)]
    return None, prefixes, runs


def _scan_bounded(possessive: bool, lo: int, hi: int, sub: Any, flags: int,
                  prefixes: list[_Prefix] | None, runs: list[_Run], followed: bool
                  ) -> tuple[str | None, list[_Prefix] | None, list[_Run]]:
    """_scan for a bounded repeat (``?``, ``{m,n}``) of ``sub``."""
    if hi > 1 and _has_unbounded(sub):
        return "a repeat around an unbounded repeat", prefixes, runs
    window = _single(sub, flags) if hi - lo >= _WINDOW else None
    if window is not None and followed and any(
            not sep and prev & window for prev, sep, w in runs if not w):
        return _WINDOW_HAZARD, prefixes, runs
    hazard, inner_prefixes, inner = _scan(sub, flags, prefixes, runs, followed or hi > 1)
    if hazard is not None:
        return hazard, prefixes, runs
    if lo > 0:
        prefixes, runs = inner_prefixes, inner
    else:   # may be skipped
        prefixes = _union([prefixes, inner_prefixes])
        runs = _merge(len(runs), [runs, inner])
    if window is not None and not possessive:
        runs = runs + [(window, False, True)]
    return None, prefixes, runs


_WINDOW_HAZARD = ("a window of variable length next to an unbounded repeat that can match "
                  "the same characters: the run is read again for each length of the window")


@functools.lru_cache(maxsize=4096)
def regex_hazard(pattern: str, flags: int = 0) -> str | None:
    """Why ``pattern`` can take more than linear time under ``re.search``, or None.

    Refused shapes, for a repeat of more than ``_LARGE_REPEAT`` (``*``, ``+``):

    - a repeat of anything but one character (``(ab)*``), or a repeat around
      one (``(a+)+``);
    - a repeat that can read a run to its end from any character of it and
      then fail (``\\w+ is``, ``a\\w+:``): a match may start at each
      character of the run, and each reads it again;
    - two repeats that can match the same characters with no character
      between them that the first cannot match (``x\\S+@\\S+ y`` tries every
      "@" with every end);
    - such a repeat next to a *window*, a bounded repeat of variable length
      (``for help[^<\\n]{0,40}[ :]*<``): the run is read once per length
      of the window, unless a character the run cannot match comes right
      before it (then each length reaches a different run).

    A repeat that nothing after it can fail (the end of the pattern) never
    reads back; a possessive one (``*+``, ``++``) never gives characters to
    a later repeat (but a match starting inside its run still reads it
    again). This is a check of shapes, not a proof: it errs towards refusing.

    Args:
        pattern: a regex source.
        flags: ``re`` flags it is compiled with.
    """
    if _sre_parse is None:  # pragma: no cover
        return None
    tree = _sre_parse.parse(pattern, flags)
    if not _has_unbounded(tree):
        return None     # every repeat is bounded: at most _LARGE_REPEAT steps a start
    return _scan(list(tree), tree.state.flags | flags, [()], [], False)[0]


_RULE_KEYS = {"id", "reason", "text", "status", "code", "unless", "also", "command", "disposition",
              "match", "nomatch", "description", "family"}
COMMANDS = ("CONN", "HELO", "MAIL", "RCPT", "DATA", "NONE")
_STAGE_COMMAND = {Stage.conn: "CONN", Stage.helo: "HELO", Stage.mail: "MAIL",
                  Stage.rcpt: "RCPT", Stage.data: "DATA"}
_COMMAND_STAGE = {v: k for k, v in _STAGE_COMMAND.items()}


def detect_command(low: str) -> str:
    """The SMTP command a reply text says it answered (rules' ``command``); NONE if unknown."""
    stage = find_stage(low)
    return _STAGE_COMMAND[stage] if stage is not None else "NONE"


def _load_file(path: str, data: bytes | None = None, packaged: bool = False) -> dict[str, Any]:
    """Read and check one rules file (``packaged``: the rules shipped beside this module).

    An operator's file has every regex checked for linear time at load. The
    packaged rules are checked by the test suite instead
    (tests/bounce/test_bounce_classify.py, RegexHazardTests): the check parses
    each of their ~700 regexes again, ~60 ms at every start of
    ``hurricane analyze`` for an answer that cannot change between releases.
    """
    try:
        if data is None:
            with open(path, "rb") as fp:
                data = fp.read()
    except OSError as e:
        raise ValueError("%s: cannot read rules: %s" % (path, e)) from None
    doc = _packaged_doc(data) if packaged else None
    if doc is None:
        # (imported here: the packaged rules come parsed from rules_parsed.json)
        import tomllib
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError("%s: cannot read rules: %s" % (path, e)) from None
    rules = []
    named = doc.get("patterns", {})
    if not isinstance(named, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in named.values()):
        raise ValueError("%s: [patterns] must map names to lists of regex strings" % (path,))
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ValueError("%s: [[rule]] must be an array of tables" % (path,))
    seen = set()
    for n, r in enumerate(raw_rules, 1):
        if not isinstance(r, dict):
            raise ValueError("%s: rule #%d is not a table" % (path, n))
        rid = r.get("id")
        if not isinstance(rid, str) or not rid:
            raise ValueError("%s: rule #%d has no id" % (path, n))
        if rid in seen:
            raise ValueError("%s: rule %r: duplicate id" % (path, rid))
        seen.add(rid)
        unknown = set(r) - _RULE_KEYS
        if unknown:
            raise ValueError("%s: rule %r: unknown keys %s" % (path, rid, sorted(unknown)))
        reason = r.get("reason")
        if reason not in REASONS:
            raise ValueError("%s: rule %r: unknown reason %r" % (path, rid, reason))
        disp = r.get("disposition")
        if disp not in (None, "temporary", "permanent"):
            raise ValueError("%s: rule %r: disposition must be 'temporary' or 'permanent'"
                             % (path, rid))
        text = _compile(r.get("text"), path, rid, "text", named, not packaged)
        cmds = tuple(c.upper() for c in _str_list(r.get("command"), path, rid, "command"))
        if any(c not in COMMANDS for c in cmds):
            raise ValueError("%s: rule %r: command must be among %s" % (path, rid, COMMANDS))
        status = _str_list(r.get("status"), path, rid, "status")
        code = _str_list(r.get("code"), path, rid, "code")
        if text is None and not status and not code:
            raise ValueError("%s: rule %r: needs at least one of text, status, code" % (path, rid))
        ex = []
        for key in ("match", "nomatch"):
            v = r.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, (str, dict)) for x in v):
                raise ValueError("%s: rule %r: %r must be a list of strings or tables"
                                 % (path, rid, key))
            ex.append(tuple(v))
        rules.append(Rule(rid, reason, text, status, code,
                          _compile(r.get("unless"), path, rid, "unless", named, not packaged),
                          _compile(r.get("also"), path, rid, "also", named, not packaged), cmds,
                          disp, ex[0], ex[1], path,
                          tuple(f.lower()
                                for f in _str_list(r.get("family"), path, rid, "family"))))
    status_map = doc.get("status", {})
    infer = doc.get("infer", {})
    for name, table in (("status", status_map), ("infer", infer)):
        if not isinstance(table, dict):
            raise ValueError("%s: [%s] must be a table" % (path, name))
        for k, v in table.items():
            if v not in REASONS and name == "status":
                raise ValueError("%s: [status] %r: unknown reason %r" % (path, k, v))
            if name == "infer" and (k not in REASONS or not _STATUS_OK.match(str(v))):
                raise ValueError("%s: [infer] %r = %r is not a reason and a status" % (path, k, v))
    return {"rules": rules, "status": dict(status_map), "infer": dict(infer)}


# ---------------------------------------------------------------------------
# Literal prefilter.  For every regex of a rule we derive, from its parse tree,
# a set of literal strings at least one of which must occur in any text the
# regex can match (None when no such set can be derived: the regex then always
# runs).  One scan of the text finds every occurrence of every such literal
# (a trie-shaped regex, restarted one character after each hit), and a rule
# whose literals are all absent is skipped without running its regexes.  This
# is only ever a necessary condition, so the first matching rule, and thus
# every result, stays exactly the same.

_MIN_LITERAL = 3        # shorter literals are too common to be worth a check
_MAX_EXACT = 32         # cap on the strings of a fully literal sub-pattern


def _required_literals(pattern: Pattern | None) -> frozenset[str] | None:
    """Literals one of which every match of ``pattern`` contains; None if unknown."""
    if pattern is None or _sre_parse is None:
        return None
    return _required_for(pattern.pattern, pattern.flags)


@functools.lru_cache(maxsize=1024)
def _required_for(source: str, flags: int) -> frozenset[str] | None:
    try:
        tree = _sre_parse.parse(source, flags)
        req, _exact = _analyse(tree, tree.state.flags | flags)
    except Exception:       # an unknown parser shape: no prefilter, always run
        return None
    if not req:
        return None
    return frozenset(req)


def _better(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    """The more selective of two required-literal sets (longer shortest literal, then fewer)."""
    if b is None or not b or min(map(len, b)) < _MIN_LITERAL:
        return a
    if a is None:
        return b
    ka, kb = (min(map(len, a)), -len(a)), (min(map(len, b)), -len(b))
    return b if kb > ka else a


def _product(a: set[str] | None, b: set[str]) -> set[str] | None:
    if a is None or len(a) * len(b) > _MAX_EXACT:
        return None
    return {x + y for x in a for y in b}


def _analyse(items: Any, flags: int) -> tuple[set[str] | None, set[str] | None]:
    """(required, exact) for a sequence of parse-tree items.

    ``required``: literals one of which any match contains (None: unknown);
    ``exact``: a small finite set of strings that includes every string the
    sequence can match (None: not known to be small and finite).
    """
    c = _sre_c
    best: set[str] | None = None
    run: set[str] = {""}            # the exact strings of the items since the last break
    whole: set[str] | None = {""}   # the exact strings of the whole sequence so far
    for op, av in items:
        req: set[str] | None = None
        exact: set[str] | None = None
        if op is c.LITERAL:
            if not flags & re.IGNORECASE:
                exact = {chr(av)}
        elif op is c.SUBPATTERN:
            _group, add, dele, sub = av
            req, exact = _analyse(sub, (flags | add) & ~dele)
        elif op is c.ATOMIC_GROUP:
            req, exact = _analyse(av, flags)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            sreq, sexact = _analyse(sub, flags)
            if lo >= 1:
                req = sreq
            if sexact is not None and lo == hi == 1:
                exact = sexact
            elif sexact is not None and lo == 0 and hi == 1:
                exact = sexact | {""}
        elif op is c.BRANCH:
            req, exact = set(), set()
            for alt in av[1]:
                areq, aexact = _analyse(alt, flags)
                req = None if req is None or areq is None else req | areq
                exact = None if exact is None or aexact is None else exact | aexact
                if exact is not None and len(exact) > _MAX_EXACT:
                    exact = None
        elif op is c.AT or op is c.ASSERT or op is c.ASSERT_NOT:
            # zero-width: consumes nothing, so the characters around it are contiguous
            exact = {""}
        # anything else (classes, any character, back references...): no literal,
        # and it ends the run of literal characters
        best = _better(best, req)
        if exact is None:
            best = _better(best, run)
            run = {""}
            whole = None
        else:
            grown = _product(run, exact)
            if grown is None:      # too many strings: keep the run so far, start a new one
                best = _better(best, run)
                grown = set(exact)
            run = grown
            whole = _product(whole, exact)
    best = _better(best, run)
    return best, whole


#: A rule and the literals its text, also and unless patterns need (None: no check).
_Entry = tuple["Rule", "frozenset[str] | None", "frozenset[str] | None", "frozenset[str] | None"]


class _PrefixSets(dict[str, frozenset[str]]):
    """Each literal -> the literals that are prefixes of it (itself included), made on
    first use: a run over a few messages meets a few of the ~1,000."""

    __slots__ = ("words",)

    def __init__(self, words: set[str]) -> None:
        super().__init__()
        self.words = words

    def __missing__(self, w: str) -> frozenset[str]:
        words = self.words
        found = self[w] = frozenset(w[:i] for i in range(1, len(w) + 1) if w[:i] in words)
        return found


class _Prefilter:
    """The literal prefilter for one tuple of rules (see above)."""

    __slots__ = ("rules", "scan", "found", "entries")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        table, trie = _packaged_literals()
        entries: list[_Entry] = []
        words: set[str] = set()
        for r in rules:
            lits = tuple(_cut(_literals_of(p, table)) for p in (r.text, r.also, r.unless))
            for x in lits:
                if x is not None:
                    words |= x
            entries.append((r, lits[0], lits[1], lits[2]))
        self.entries = tuple(entries)
        ordered = sorted(words)
        if trie is None or trie[0] != ordered:
            trie = (ordered, _trie_regex(ordered))
        self.scan = rxcache.compile(trie[1]) if ordered else None
        # the scan reports the longest literal at a position: the shorter ones
        # that are prefixes of it occur there too
        # (made for each literal the first time the scan reports it)
        self.found = _PrefixSets(words)

    def present(self, low: str) -> set[str]:
        """Every literal of the rules that occurs in ``low``."""
        out: set[str] = set()
        if self.scan is None:
            return out
        search = self.scan.search
        found = self.found
        m = search(low)
        while m is not None:
            out |= found[m.group()]
            m = search(low, m.start() + 1)
        return out


#: The prefilter looks for the first characters of each literal only: if a
#: literal occurs, so does its prefix, so the check stays a necessary condition
#: (every answer the same). The scan regex over ~1,000 12-character prefixes
#: compiles in ~10 ms where the one over ~1,400 whole literals took ~20 ms at
#: every start; shorter prefixes compile faster still but let through so many
#: rules per message (more regexes run) that a run of a few hundred messages
#: loses more than the start-up gains.
_SCAN_PREFIX = 12


def _cut(lits: frozenset[str] | None) -> frozenset[str] | None:
    return None if lits is None else frozenset(w[:_SCAN_PREFIX] for w in lits)


def _literals_of(pattern: Pattern | None,
                 table: dict[str, frozenset[str] | None]) -> frozenset[str] | None:
    if pattern is None:
        return None
    if pattern.pattern in table:
        return table[pattern.pattern]
    return _required_literals(pattern)


_PARSED_FILE = "rules_parsed.json"


if TYPE_CHECKING:
    class ParsedTable(TypedDict):
        """rules_parsed.json: rules.toml's text and its parsed form."""
        source: str
        doc: dict[str, object]


def parsed_table(data: bytes) -> ParsedTable:
    """The packaged rules_parsed.json for rules.toml's bytes: their text and parsed form.

    Parsing the TOML (~6 ms, and ~3 ms to import tomllib) was the largest part
    of loading the packaged rules after their compilation; JSON loads in C. The
    file holds the very text it was made from, compared whole at load: a hash
    would need hashlib, whose import (OpenSSL) was ~11 M instructions of every
    start-up.
    """
    import tomllib

    text = data.decode("utf-8")
    return {"source": text, "doc": tomllib.loads(text)}


def _packaged_doc(data: bytes) -> dict[str, Any] | None:
    """rules.toml parsed, from rules_parsed.json when that was made from these very bytes
    (a stale or missing file costs the TOML parse, never a different rule)."""
    import json
    try:
        with open(os.path.join(os.path.dirname(__file__), _PARSED_FILE), "rb") as fp:
            raw = json.loads(fp.read())
        source = raw.get("source")
        if not isinstance(source, str) or source.encode("utf-8") != data:
            return None
        doc = raw["doc"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return doc if isinstance(doc, dict) else None


_LITERALS_FILE = "rules_literals.json"


if TYPE_CHECKING:
    class LiteralTable(TypedDict):
        """rules_literals.json: each regex's literals, every literal, the trie scan regex."""
        literals: dict[str, list[str] | None]
        words: list[str]
        scan: str


def literal_table(rules: Sequence[Rule]) -> LiteralTable:
    """The packaged literal table for ``rules``: each regex's literals, and the scan regex.

    Returns:
        {"literals": {regex source: sorted literals or None}, "words": every
        literal, sorted, "scan": the trie regex over them}.
    """
    lits: dict[str, list[str] | None] = {}
    words: set[str] = set()
    for r in rules:
        for p in (r.text, r.also, r.unless):
            if p is not None and p.pattern not in lits:
                req = _required_literals(p)
                lits[p.pattern] = sorted(req) if req is not None else None
                words |= _cut(req) or set()
    ordered = sorted(words)
    return {"literals": lits, "words": ordered, "scan": _trie_regex(ordered)}


@functools.lru_cache(maxsize=1)
def _packaged_literals() -> tuple[dict[str, frozenset[str] | None],
                                  tuple[list[str], str] | None]:
    """The literal table shipped beside rules.toml: (literals per regex, (words, scan regex)).

    Deriving the literals parses every rule regex a second time (~50 ms) and
    building the scan regex takes ~15 ms, which a short ``hurricane analyze``
    run would pay at every start. The table is derived from the packaged rules
    by ``python -m hurricane.bounce.classify`` and a test keeps it current;
    a regex missing from it (an operator's rule) is derived at load time, and
    the scan is rebuilt when the set of words differs, so a stale table only
    costs time, never a different answer.
    """
    import json
    try:
        with open(os.path.join(os.path.dirname(__file__), _LITERALS_FILE), "rb") as fp:
            raw = json.loads(fp.read())
        table = {k: (frozenset(v) if isinstance(v, list) else None)
                 for k, v in raw["literals"].items()}
        words, scan = raw["words"], raw["scan"]
        if not (isinstance(words, list) and isinstance(scan, str)):
            raise ValueError(_LITERALS_FILE)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}, None
    return table, (words, scan)


class ReplyClassifier:
    """Ordered rules plus a status table: (code, status, text) -> ReplyClass."""

    def __init__(self, rules: Sequence[Rule], status_map: dict[str, str],
                 infer: dict[str, str]) -> None:
        self.rules = tuple(rules)
        self.status_map = dict(status_map)
        self.infer = dict(infer)
        self._cache: dict[tuple[str | None, str | None, str, str | None, Stage | bool,
                                str | None], ReplyClass] = {}
        self._prefilter: _Prefilter | None = None
        # the rules whose code/status/command/family conditions hold, per (c, s, cmd, family)
        self._candidates: dict[tuple[str | None, str | None, str, str | None],
                               tuple[_Entry, ...]] = {}

    @classmethod
    def load(cls, extra_paths: Sequence[str | os.PathLike[str]] = ()) -> ReplyClassifier:
        """The packaged rules, with operator files (checked first) layered on top."""
        # beside this module (a plain path: importlib.resources costs ~8 ms to import)
        pkg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules.toml")
        base = _load_file(pkg, packaged=True)
        rules: list[Rule] = list(base["rules"])
        status_map, infer = base["status"], base["infer"]
        operator: list[Rule] = []
        for p in extra_paths:
            d = _load_file(os.fspath(p))
            ids = {r.id for r in d["rules"]}
            rules = [r for r in rules if r.id not in ids]
            operator = [r for r in operator if r.id not in ids] + d["rules"]
            status_map.update(d["status"])
            infer.update(d["infer"])
        return cls(operator + rules, status_map, infer)

    def classify(self, code: int | str | None, status: str | None, text: str,
                 family: str | None = None, *, stage: Stage | None = None,
                 diagnostic_type: str | None = None,
                 stage_searched: bool = False) -> ReplyClass:
        """Classify one reply; codes missing from the arguments are read from the text.

        A shorthand for :meth:`decide` on an :class:`Evidence` built from the
        arguments (the outbound client and the bounce analyzer both use it).

        Args:
            code: the SMTP reply code, if known.
            status: the enhanced status code (a DSN's Status field), if known.
            text: the reply or diagnostic text.
            family: the MTA or provider that wrote the report, when the bounce
                analyzer recognised it (rules with a ``family`` key need it).
            stage: the SMTP stage of the refusal when known from outside the
                text (our own session, or the notification around a DSN);
                otherwise it is read from the text.
            diagnostic_type: the Diagnostic-Code's type ("smtp", "x-unix").
            stage_searched: the caller already read ``text`` for a stage and
                found none (do not read it again).

        Returns:
            The decision.
        """
        # Bounded work: the rules read the first MAX_TEXT characters only (a
        # reply or a diagnostic is a few hundred; a returned message can hold
        # megabytes where one is expected).
        text = (text or "")[:MAX_TEXT]
        c = str(code).strip() if code is not None and str(code).strip() else None
        s = status.strip() if status else None
        if s and not _STATUS_OK.match(s):
            s = None
        dtype = diagnostic_type.lower() if diagnostic_type else None
        key = (c, s, text, family, stage if stage is not None else stage_searched, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self.decide(Evidence(text=text, code=c, status=s, stage=stage,
                                      stage_source="none" if stage_searched else None,
                                      family=family, diagnostic_type=dtype))
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = result
        return result

    def _rules_in_order(self, c: str | None, s: str | None, low: str, cmd: str,
                        family: str | None) -> Iterator[Rule]:
        """The rules that apply, in order (the same as trying ``Rule.applies`` on each)."""
        pf = self._prefilter
        if pf is None or pf.rules is not self.rules:
            pf = self._prefilter = _Prefilter(self.rules)
            self._candidates = {}
        key = (c, s, cmd, family)
        cands = self._candidates.get(key)
        if cands is None:
            # the conditions of Rule.applies that do not look at the text
            cands = tuple(e for e in pf.entries if e[0].conditions_hold(c, s, cmd, family))
            if len(self._candidates) > 1024:
                self._candidates.clear()
            self._candidates[key] = cands
        present = None
        for r, tlit, alit, ulit in cands:
            if tlit is not None or alit is not None or ulit is not None:
                if present is None:
                    present = pf.present(low)
                if tlit is not None and tlit.isdisjoint(present):
                    continue
                if alit is not None and alit.isdisjoint(present):
                    continue
            if r.text is not None and r.text.search(low) is None:
                continue
            if r.also is not None and r.also.search(low) is None:
                continue
            if r.unless is not None and (ulit is None or not ulit.isdisjoint(present or ())) \
                    and r.unless.search(low) is not None:
                continue
            yield r

    def _first_rule(self, c: str | None, s: str | None, low: str, cmd: str,
                    family: str | None) -> Rule | None:
        """The first rule that applies."""
        return next(self._rules_in_order(c, s, low, cmd, family), None)

    def decide(self, ev: Evidence) -> ReplyClass:
        """The reason for one recipient, from its evidence alone (docs/bounce-reasons.md).

        Args:
            ev: the evidence; a missing code or status is read from its text,
                a missing stage too.

        Returns:
            The reason, hard, the status (inferred when the evidence had
            none), the deciding rule and the runner-up it beat.
        """
        text = unquote((ev.text or "")[:MAX_TEXT])     # bounded work, as in classify()
        c, s = ev.code, ev.status
        if c is None or s is None:
            ec, es = extract_codes(text)
            c = c or ec
            s = s or es
        if c is not None and not (len(c) == 3 and c.isdigit()):
            c = None
        low = normalise_text(text)
        if c is not None and low.count(c) > 1:
            # a multi-line reply repeats "550-5.7.1" on every line: drop the repeats
            # so that phrases broken across lines read whole
            i = low.find(c) + 3
            low = low[:i] + _code_repeat(c).sub(" ", low[i:])
        stage = ev.stage
        if stage is None and ev.stage_source != "none":
            # ("none": the caller already looked in this text and found no stage)
            stage = find_stage(low)
        cmd = _STAGE_COMMAND[stage] if stage is not None else "NONE"
        return self._decide(c, s, low, cmd, ev.family, ev.diagnostic_type, stage)

    def _decide(self, c: str | None, s: str | None, low: str, cmd: str,
                family: str | None, dtype: str | None, stage: Stage | None) -> ReplyClass:
        reason = None
        rule: Rule | None = None
        decided_by: str | None = None
        runner: tuple[str, str] | None = None     # (reason, rule or "status")
        rules: Iterator[Rule] = iter(())
        if s and s.startswith("2."):
            reason = "delivered"
            decided_by = "status.success"
        else:
            rules = self._rules_in_order(c, s, low, cmd, family)
            rule = next(rules, None)
            if rule is not None:
                reason = rule.reason
                decided_by = rule.id
            if dtype == "x-unix" and is_catch_all(s) and (
                    rule is None or rule.text is None or rule.reason == "systemerror"):
                # (a system error said by an x-unix diagnostic is the local program's
                # own failure: Postfix words its exit status from sysexits.h,
                # "internal software error" for EX_SOFTWARE, "local configuration
                # error" for EX_CONFIG; the program is the mailer that failed)
                # docs step 4: a local delivery program answered, and neither its words
                # nor a specific status name a cause: the mailer failed
                if rule is not None:
                    runner = (rule.reason, rule.id)
                reason, rule, decided_by = "mailererror", None, "mailererror.x-unix"
            elif (dtype == "x-unix" and stage is None and rule is not None
                    and rule.id == "filtered.userunknown-text"):
                # docs step 4: the local delivery program looked the mailbox up and found
                # none; no SMTP step was left to refuse it after ("filtered" is a refusal
                # after the recipient was accepted, for its content or settings)
                runner = (rule.reason, rule.id)
                reason, rule, decided_by = "userunknown", None, "userunknown.x-unix"
        if reason is None and s:
            reason = self.status_map.get(s)
            if reason is not None:
                decided_by = "status." + s
        if reason is None:
            if s and s[2:4] in ("6.",):
                reason, decided_by = "contenterror", "status.x.6"
            elif s and s[2:4] == "7.":
                reason, decided_by = "securityerror", "status.x.7"
            elif low:
                reason, decided_by = "onhold", "onhold.no-cause"
            else:
                reason, decided_by = "undefined", "undefined.no-evidence"
        if runner is None and reason != "delivered":
            # the runner-up: the next rule that applies with another answer, else
            # what the status code alone would have said
            for r in rules:
                if r.reason != reason:
                    runner = (r.reason, r.id)
                    break
            if runner is None and s and self.status_map.get(s) not in (None, reason):
                runner = (self.status_map[s], "status." + s)
        inferred = False
        if s is None:
            guess = self.infer.get(reason)
            if guess:
                inferred = True
                cls = c[0] if c and c[0] in "45" else guess[0]
                if reason == "expired" and not c:
                    cls = "4" if guess[0] == "4" else "5"
                s = cls + guess[1:]
        klass = s[0] if s else (c[0] if c else None)
        permanent = True if klass == "5" else False if klass == "4" else None
        if rule is not None and rule.disposition is not None:
            permanent = rule.disposition == "permanent"
        hard = is_hard(reason, s)
        return ReplyClass(reason=reason, hard=hard, status=s, status_inferred=inferred,
                          rule=rule.id if rule else None, permanent=permanent, suppress=hard,
                          code=c, stage=stage.value if stage is not None else None,
                          decided_by=decided_by,
                          runner_up=runner[0] if runner else None,
                          runner_up_rule=runner[1] if runner else None)


@functools.lru_cache(maxsize=1)
def default_classifier() -> ReplyClassifier:
    """The packaged rules only (cached)."""
    return ReplyClassifier.load()


if __name__ == "__main__":   # python -m hurricane.bounce.classify: regenerate the tables
    import json as _json
    _here = os.path.dirname(__file__)
    with open(os.path.join(_here, "rules.toml"), "rb") as _raw:
        _parsed = parsed_table(_raw.read())
    with open(os.path.join(_here, _PARSED_FILE), "w") as _fp:
        _json.dump(_parsed, _fp, indent=0, sort_keys=True, ensure_ascii=False)
        _fp.write("\n")
    _table = literal_table(ReplyClassifier.load().rules)
    with open(os.path.join(_here, _LITERALS_FILE), "w") as _fp:
        _json.dump(_table, _fp, indent=0, sort_keys=True)
        _fp.write("\n")
    print("wrote %d regexes, %d literals to %s" % (len(_table["literals"]), len(_table["words"]),
                                                   _LITERALS_FILE))
