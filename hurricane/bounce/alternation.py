"""One regex for a rule's list of alternatives, merged on their literal prefixes.

A rule's text is a list of regexes; the classifier asks only whether any of
them occurs in a text. Joined as ``(?:a)|(?:b)|...``, the regex engine tries
every alternative at every position of the text: ~100 quick first-character
tests per character for the long lists (``@userunknown``). Merged into a trie
of their literal prefixes (``user (?:is )?unknown`` and ``unknown user`` under
``u``, then ``s`` and ``n``...), it tries one alternative per distinct first
character, and goes deeper only where the text follows a prefix.

The merged regex matches at a position exactly where one of the alternatives
does (a union of the same regexes, each cut at a literal prefix: ``ab(?:X)``
for ``abX``; no capture group is added), so *whether* it finds a match is
the same; *which* match it returns may differ (the callers never read it).
An alternative is cut only where that is plainly safe: its leading letters,
digits and blanks, stopping before a character a quantifier applies to, then
a leading group of plain words (``(?:user|mailbox) ...``) written out once
per word; anything else (a class, an escape, a look-around, a top-level "|")
stays whole. A list is left joined, unmerged, when the merge could change
what it means: a back reference, a named group or a conditional (the merge
reorders and copies groups), or a group or class that one alternative opens
and another closes.
"""

from __future__ import annotations

import binascii
import functools
import marshal
import os
import re
from collections.abc import Sequence

from hurricane.bounce import rxcache

__all__ = ["merge_alternatives", "top_level_bar", "split_alternatives", "any_of", "MERGE_TAG"]

_QUANTIFIERS = ("?", "*", "+", "{")
#: Escapes and character classes: what may hide "(", ")" or "|" that are not syntax.
#: (A "]" first in a class is one of its characters: "[]" does not close.)
_OPAQUE = rxcache.compile(r"\\.|\[\^?+\]?+(?:\\.|[^\]\\])*+\]", re.S)
#: A group with no group inside (removed innermost first).
_INNER_GROUP = rxcache.compile(r"\([^()]*\)")
#: Words of a group written out at most this many times per alternative.
_MAX_EXPANSION = 64


def top_level_bar(source: str) -> bool:
    """Whether a regex source has a "|" outside every group (escapes and classes skipped)."""
    if "|" not in source:
        return False
    s = _OPAQUE.sub("", source)
    while "(" in s:
        t = _INNER_GROUP.sub("", s)
        if t == s:
            return True     # (unbalanced: say yes, and leave the pattern whole)
        s = t
    return "|" in s


#: What makes a list of alternatives unsafe to merge: a back reference or a named
#: group (the merge reorders and copies groups, which renumbers them), a
#: conditional, or a trailing backslash.
_UNSAFE = rxcache.compile(r"\\[1-9]|\(\?P[<=]|\(\?\(|(?<!\\)(?:\\\\)*\\$")


def _self_contained(source: str) -> bool:
    """Whether a regex source is whole by itself: its groups and classes close inside it
    (the alternatives of a joined pattern could otherwise share one)."""
    if _UNSAFE.search(source) is not None:
        return False
    s = _OPAQUE.sub("", source)
    if "[" in s:
        return False
    while "(" in s:
        t = _INNER_GROUP.sub("", s)
        if t == s:
            return False
        s = t
    return ")" not in s


def _plain_words(body: str) -> list[str] | None:
    """The words of a group's body when each is only letters, digits and blanks."""
    words = body.split("|")
    for w in words:
        if not w or not all(ch.isalnum() or ch == " " for ch in w):
            return None
    return words


@functools.lru_cache(maxsize=4096)
def _cut(pattern: str, budget: int = _MAX_EXPANSION) -> tuple[tuple[str, str], ...]:
    """(literal prefix, rest) pairs whose union matches where ``pattern`` does."""
    n = 0
    while n < len(pattern) and (pattern[n].isalnum() or pattern[n] == " "):
        n += 1
    if n and pattern[n:n + 1] in _QUANTIFIERS:
        n -= 1      # (the quantifier makes the character before it optional)
    lit, rest = pattern[:n], pattern[n:]
    if rest.startswith("(?:"):
        # a group of plain words (no parenthesis inside: the first ")" closes it)
        close = rest.find(")")
        words = _plain_words(rest[3:close]) if close > 0 else None
        if words is not None and rest[close + 1:close + 2] not in _QUANTIFIERS:
            after = rest[close + 1:]
            out = [(lit + w + l2, r2) for w in words
                   for l2, r2 in (_cut(after, budget // len(words)) if after else (("", ""),))]
            if len(out) <= budget:
                return tuple(out)
    return ((lit, rest),)


def _trie(items: list[tuple[str, str]]) -> str:
    """The alternation of ``lit + (?:rest)`` for each item, merged on common prefixes."""
    groups: dict[str, list[tuple[str, str]]] = {}
    ends: list[str] = []
    for lit, rest in items:
        if lit:
            groups.setdefault(lit[0], []).append((lit, rest))
        elif not rest:
            return ""       # an alternative ends here: the match is found, whatever follows
        else:
            ends.append(rest)
    parts = []
    for group in groups.values():
        if len(group) == 1:
            lit, rest = group[0]
            parts.append(re.escape(lit) + ("(?:%s)" % rest if rest else ""))
            continue
        common = os.path.commonprefix([lit for lit, _ in group])
        n = len(common)
        parts.append(re.escape(common) + _trie([(lit[n:], rest) for lit, rest in group]))
    parts += ["(?:%s)" % r for r in ends]
    if len(parts) == 1:
        return parts[0]
    return "(?:" + "|".join(parts) + ")"


@functools.lru_cache(maxsize=1024)
def merge_alternatives(patterns: Sequence[str]) -> str:
    """A regex that matches where ``"|".join("(?:%s)" % p for p in patterns)`` matches.

    Args:
        patterns: regex sources compiled with no flags (a tuple: the result is cached).
    """
    if not all(_self_contained(p) for p in patterns):
        return "|".join("(?:%s)" % p for p in patterns)
    items: list[tuple[str, str]] = []
    for p in patterns:
        if top_level_bar(p):
            items.append(("", p))
        else:
            items.extend(_cut(p))
    return _trie(items)


#: A fingerprint of the merge (its code and constants): the compiled-regex cache
#: keeps merged sources under it, so that a changed merge is never read back.
MERGE_TAG = binascii.crc32(marshal.dumps((
    tuple(f.__code__ for f in (top_level_bar, _self_contained, _plain_words, _cut.__wrapped__,
                               _trie, merge_alternatives.__wrapped__)),
    _QUANTIFIERS, _MAX_EXPANSION, _OPAQUE.pattern, _INNER_GROUP.pattern, _UNSAFE.pattern)))


def split_alternatives(source: str) -> tuple[str, ...]:
    """A regex source cut at its top-level "|" (escapes, classes and groups kept whole)."""
    parts = []
    depth = 0
    start = i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 1
            if source[i:i + 1] == "^":
                i += 1
            if source[i:i + 1] == "]":
                i += 1      # (a "]" first in a class is one of its characters)
            while i < n and source[i] != "]":
                i += 2 if source[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
        i += 1
    parts.append(source[start:])
    return tuple(parts)


#: Flags written at the start of a pattern, "(?i)".
_GLOBAL_FLAGS = rxcache.compile(r"\(\?([aiLmsux]+)\)")


def _flags_of(letters: str) -> int:
    flags = 0
    for letter in letters:
        flags |= {"a": re.A, "i": re.I, "L": re.L, "m": re.M, "s": re.S, "u": re.U,
                  "x": re.X}[letter]
    return flags


#: Merged source -> (the source it was merged from, flags): what any_of() made.
MERGED: dict[str, tuple[str, int]] = {}


def any_of(source: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern that finds a match exactly where ``re.compile(source, flags)`` does, its
    top-level alternatives merged (for patterns whose callers read only whether there is
    a match). From the compiled-regex cache, merged source included, when it is there."""
    m = _GLOBAL_FLAGS.match(source)
    body, flags = (source[m.end():], flags | _flags_of(m.group(1))) if m else (source, flags)
    if flags & re.VERBOSE:
        return rxcache.compile(source, flags)   # (blanks are not literal: not merged)

    def derive() -> str:
        return merge_alternatives(split_alternatives(body))
    compiled = rxcache.compile(source, flags, derive=derive, tag=MERGE_TAG)
    MERGED[compiled.pattern] = (source, flags)
    return compiled
