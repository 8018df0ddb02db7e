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
per word. One that starts with no literal is written so that it does, when it
can be: a leading group (``(?:A|B)X`` as AX and BX, ``(?:A)?X`` as AX and X)
or small class (``[45]X``) written out, and word boundaries and look-behinds
moved after the literal character that follows them (``\\bspam`` as
``s(?<!\\ws)pam``, ``(?<!not )found`` as ``f(?<!(?:not )f)ound``: at the
position after the character, the look-behind with the character appended
says what the original said before it). When every alternative starts with a
literal, the regex engine skips to the characters they start with instead of
trying the alternation at every position (``@userunknown``: 5.0 -> 1.9 ms over
the corpora). Anything else (an anchor, a top-level "|"...) stays whole.
A list is left joined, unmerged, when the merge could change what it means:
a back reference, a named group or a conditional (the merge reorders and
copies groups), or a group or class that one alternative opens and another
closes.
"""

from __future__ import annotations

import binascii
import functools
import marshal
import os
import re
from collections.abc import Iterator, Sequence

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


#: A look-behind with no group inside: its kind ("!" or "=") and its body.
_LOOKBEHIND = rxcache.compile(r"\(\?<([!=])((?:[^()\\\[]|\\.|\[\^?\]?(?:[^\]\\]|\\.)*\])*)\)",
                              re.S)
#: Punctuation that stands for itself outside a class (an escape, "\\-", for any of it).
_PLAIN_PUNCT = frozenset("-:@'\",;<>=!%&/~`#_ ")
_ESCAPED_PUNCT = frozenset(".^$*+?{}[]\\|()-/:@'\",;<>=!%&~`# ")


def _first_char(source: str) -> tuple[str, int] | None:
    """The character a regex source starts with when that is a literal no quantifier
    follows, and its length in the source ("x" or an escape "\\."); else None."""
    if source[:1] == "\\":
        if source[1:2] == "" or source[1] not in _ESCAPED_PUNCT:
            return None
        c, w = source[1], 2
    elif source and (source[0].isalnum() or source[0] in _PLAIN_PUNCT):
        c, w = source[0], 1
    else:
        return None
    if source[w:w + 1] in _QUANTIFIERS:
        return None
    return c, w


def _assertions(source: str) -> list[tuple[str, int]]:
    """The word boundaries ("b") and look-behinds ("!body", "=body") ``source`` starts
    with, each with its length in the source."""
    i, out = 0, []
    while True:
        if source.startswith("\\b", i):
            out.append(("b", 2))
            i += 2
            continue
        m = _LOOKBEHIND.match(source, i)
        if m is None:
            return out
        out.append((m.group(1) + m.group(2), m.end() - i))
        i = m.end()


def _assertion_head(source: str) -> tuple[str, str] | None:
    """A source that starts with word boundaries and look-behinds, then a literal
    character, written with the character first: ``\\bspam`` gives ("s",
    ``(?<!\\ws)pam``), ``(?<!no )such`` gives ("s", ``(?<!(?:no )s)uch``). At the
    position after the character, the look-behind with the character appended
    says what the original said at the position before it (a boundary before a
    word character: no word character before; before another, one)."""
    asserts = _assertions(source)
    i = sum(n for _a, n in asserts)
    first = _first_char(source[i:]) if asserts else None
    if first is None or not first[0].isascii():
        return None     # (a non-ASCII letter is a word character or not, by the flags)
    c, w = first
    esc = re.escape(c)
    out = []
    for a, _n in asserts:
        if a == "b":
            word = c.isalnum() or c == "_"
            out.append(("(?<!\\w%s)" if word else "(?<=\\w%s)") % esc)
        else:
            out.append("(?<%s(?:%s)%s)" % (a[0], a[1:], esc))
    return c, "".join(out) + source[i + w:]


def _class_end(source: str, i: int) -> int:
    """The index of the "]" closing the character class that opens at ``source[i]``
    (len(source) or past it when unclosed): a "^" and a "]" first in a class are its own."""
    n = len(source)
    i += 1
    if source[i:i + 1] == "^":
        i += 1
    if source[i:i + 1] == "]":
        i += 1      # (a "]" first in a class is one of its characters)
    while i < n and source[i] != "]":
        i += 2 if source[i] == "\\" else 1
    return i


def _structure(source: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, group depth after it) of each "(", ")" and "|" of a regex
    source that is not escaped or inside a character class, left to right."""
    depth, i, n = 0, 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(source, i)
        elif ch in "()|":
            depth += 1 if ch == "(" else -1 if ch == ")" else 0
            yield i, ch, depth
        i += 1


def _group_end(source: str) -> int:
    """Where the group that opens ``source`` closes (the index after its ")"), or -1."""
    for i, ch, depth in _structure(source):
        if ch == ")" and depth == 0:
            return i + 1
    return -1


def _heads(rest: str) -> list[str] | None:
    """``rest`` written as alternatives that may start with a literal: a leading group
    ``(?:A|B)X`` as AX and BX, an optional one ``(?:A)?X`` as AX and X, a leading
    class of a few characters ``[ab]X`` as aX and bX (word boundaries and look-behinds
    before any of them kept in front of each); None when it starts otherwise."""
    i = sum(n for _a, n in _assertions(rest))
    if i:
        heads = _heads(rest[i:])
        return None if heads is None else [rest[:i] + h for h in heads]
    if rest.startswith("(?:"):
        end = _group_end(rest)
        if end < 0:
            return None
        body, after = rest[3:end - 1], rest[end:]
        if after[:1] == "?" and after[1:2] not in _QUANTIFIERS:
            return [alt + after[1:] for alt in split_alternatives(body)] + [after[1:]]
        if after[:1] in _QUANTIFIERS:
            return None
        return [alt + after for alt in split_alternatives(body)]
    if rest.startswith("[") and not rest.startswith(("[^", "[]")):
        end = rest.find("]")
        members = rest[1:end]
        if (end < 0 or len(members) > 8 or rest[end + 1:end + 2] in _QUANTIFIERS
                or any(not (c.isalnum() or c in " @:") for c in members)):
            return None
        return [re.escape(c) + rest[end + 1:] for c in dict.fromkeys(members)]
    return None


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
    if lit or not rest:
        return ((lit, rest),)
    # no literal first: a leading group or class written out, or the character after
    # the leading assertions put first, so that every alternative starts with one
    # (the regex engine then skips to the characters they start with)
    heads = _heads(rest) if budget > 1 else None
    if heads is not None:
        out = [pair for h in heads for pair in _cut(h, budget // len(heads))]
        if len(out) <= budget:
            return tuple(out)
    head = _assertion_head(rest)
    if head is not None:
        return ((head[0], head[1]),)
    first = _first_char(rest)
    if first is not None:
        return ((first[0], rest[first[1]:]),)
    return (("", rest),)


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


def split_alternatives(source: str) -> tuple[str, ...]:
    """A regex source cut at its top-level "|" (escapes, classes and groups kept whole)."""
    parts = []
    start = 0
    for i, ch, depth in _structure(source):
        if ch == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
    parts.append(source[start:])
    return tuple(parts)


#: A fingerprint of the merge (its code and constants): the compiled-regex cache
#: keeps merged sources under it, so that a changed merge is never read back.
MERGE_TAG = binascii.crc32(marshal.dumps((
    tuple(f.__code__ for f in (top_level_bar, _self_contained, _plain_words, _cut.__wrapped__,
                               _trie, merge_alternatives.__wrapped__, _first_char,
                               _assertions, _assertion_head, _class_end, _structure, _group_end,
                               _heads, split_alternatives)),
    _QUANTIFIERS, _MAX_EXPANSION, _OPAQUE.pattern, _INNER_GROUP.pattern, _UNSAFE.pattern,
    _LOOKBEHIND.pattern, sorted(_PLAIN_PUNCT), sorted(_ESCAPED_PUNCT))))


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
