"""The analyzer's faster paths give the answers of the plain code they replaced.

Each fast path (merged rule alternatives, the one-scan stage phrases, the gated
family and stage regexes) is checked against the straightforward form, kept
here as the reference, on the rules' own examples and on generated texts.
"""

from __future__ import annotations

import re
import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import analyze, evidence
from hurricane.bounce.alternation import (
    MERGED,
    _cut,
    merge_alternatives,
    split_alternatives,
    top_level_bar,
)
from hurricane.bounce.classify import default_classifier, normalise_text
from hurricane.bounce.evidence import _PHRASES, _PREFIXED, STAGE_TEXT_LIMIT, Stage

SETTINGS = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _examples() -> list[str]:
    texts = []
    for rule in default_classifier().rules:
        for ex in rule.match + rule.nomatch:
            texts.append(ex if isinstance(ex, str) else str(ex.get("text", "")))
    return [normalise_text(t) for t in texts]


def _joined(parts: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join("(?:%s)" % p for p in parts))


#: Pieces of generated alternatives: literals, quantifiers, groups, classes, anchors.
_TOKENS = ["a", "b", "ab", "ba", " ", "c", "?", "*", "+", "{2}", "(?:a|b)", "(?:ab|b c)",
           "(?:a|b)?", "(", ")", "|", "[ab]", "[^a]", r"\b", r"\s", "(?<!a)", "(?=b)", "$",
           "^", ".", "(a)", ":", "(?:)", r"\1", "(?P<n>a)", "[", "]", "\\", "(?i:a)",
           "[]", "[^]", "[]a]",
           # what the merge writes out in front: groups of any alternatives, optional
           # groups, small classes, boundaries and look-behinds before a literal
           r"(?<!a )", r"(?<=b)", r"(?<![ab])", r"\[", "-", "@", "_", "'", r"(?:a|(?<!b)c)",
           r"\b(?:a|b)", "[a@]", "\u00e9", r"\b\u00e9", r"(?<!\w)", "(?:a)??", "(?:a)?+",
           "(?:b|)", "[ab]?", r"(?<=[ab]c)", r"\."]


class MergeTests(SynchronousTestCase):
    """merge_alternatives finds a match exactly where the joined alternatives do."""

    def test_packaged_rules(self) -> None:
        """Every packaged pattern, on every rule's examples and every word of the rules."""
        texts = _examples()
        pats = [p for r in default_classifier().rules for p in (r.text, r.also, r.unless)
                if p is not None]
        words = sorted({w for p in pats for part in p.parts  # type: ignore[union-attr]
                        for lit, _rest in _cut(part) for w in (lit,) if w})
        texts += words + [w + " x" for w in words] + ["x " + w[:-1] for w in words]
        for p in pats:
            parts = p.parts  # type: ignore[union-attr]
            self.assertTrue(parts)
            want = _joined(parts)
            got = re.compile(merge_alternatives(parts))
            for t in texts:
                self.assertEqual(got.search(t) is None, want.search(t) is None, (parts, t))

    def test_shapes(self) -> None:
        """Literal runs, optional characters, word groups, classes, escapes, look-arounds."""
        parts = ("user (?:is )?unknown", "unknown (?:user|recipient)", "no such (?:user|box)s?",
                 r"\bptr\b", "ab|cd", "address unknown", "address unknown user", "e-?mail",
                 "mail ?box", "x{2}y", "(?<!not )found", "over(?: |-)quota", "ä?öü",
                 "(?:a|b)+c", "(?:de|fg)?h", "zz(?:q|r)", r"\bspam\b", r"\b5\d\d x",
                 r"(?<!sender )address", r"(?<![\d.])[245]\d\d", r"\b(?:ip|(?<!no )host)",
                 "(?:has )?(?:chosen|decided) to", r"\[ts0\] from", "- banned:", "")
        texts = ["user unknown", "user is unknown", "unknown recipient", "no such boxs",
                 "ptr", "aptr", "ab", "cd", "address unknown", "email", "e-mail", "mailbox",
                 "mail box", "xxy", "xy", "not found", "is found", "over quota", "over-quota",
                 "äöü", "öü", "aac", "bc", "h", "deh", "zzq", "zzs", "", "nothing",
                 "spam", "xspam", "spams", "a spam.", "550 x", "1550 x", "sender address",
                 "a address", "address", "1.550", "x550", "550", "ip", "zip", "no host",
                 "a host", "has chosen to", "chosen to", "[ts0] from", "- banned:"]
        for k in range(len(parts)):
            sub = parts[:k] + parts[k + 1:]
            want, got = _joined(sub), re.compile(merge_alternatives(sub))
            for t in texts:
                self.assertEqual(got.search(t) is None, want.search(t) is None, (sub, t))

    @SETTINGS
    @given(st.lists(st.lists(st.sampled_from(_TOKENS), max_size=6).map("".join), min_size=1,
                    max_size=6),
           st.lists(st.text(alphabet="ab :c]_-@[.\u00e9'", max_size=12), max_size=8))
    def test_generated(self, parts: list[str], texts: list[str]) -> None:
        """Any valid list of alternatives (invalid ones are skipped) on any text."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)    # ("[[": possible nested set)
            try:
                want = _joined(tuple(parts))
            except (re.error, RecursionError):
                return
            got = re.compile(merge_alternatives(tuple(parts)))
        for t in texts + ["".join(texts)]:
            self.assertEqual(got.search(t) is None, want.search(t) is None, (parts, t))

    def test_module_patterns(self) -> None:
        """The analyzer's merged module patterns (any_of) against their sources."""
        self.assertGreaterEqual(len(MERGED), 8)
        texts = _examples()
        for merged, (source, flags) in MERGED.items():
            parts = split_alternatives(source.removeprefix("(?i)"))
            words = [lit for part in parts for lit, _rest in _cut(part) if lit]
            want, got = re.compile(source, flags), re.compile(merged, flags)
            for t in texts + words + [w.upper() + " x" for w in words] + \
                    ["x " + w[:-1] for w in words] + ["Warning: message delayed", "(DELAY)"]:
                self.assertEqual(got.search(t) is None, want.search(t) is None, (source, t))

    def test_split(self) -> None:
        self.assertEqual(split_alternatives(r"a|b(c|d)|[|]|\||e"),
                         ("a", "b(c|d)", "[|]", r"\|", "e"))
        self.assertEqual(split_alternatives("[]|]|x"), ("[]|]", "x"))
        self.assertEqual(split_alternatives("abc"), ("abc",))

    def test_top_level_bar(self) -> None:
        for source, bar in (("a|b", True), ("(a|b)", False), (r"a\|b", False), ("[|]", False),
                            (r"[\]|]x", False), ("(?:a)|b", True), ("((a)|b)c", False),
                            ("x(?:a|(b|c))", False), ("[]|]", False), ("abc", False)):
            self.assertEqual(top_level_bar(source), bar, source)


def _find_stage_plain(text: str) -> Stage | None:
    """find_stage as it was written before the one-scan phrases and the gated regexes."""
    if not text:
        return None
    tail = text[-STAGE_TEXT_LIMIT:]
    if ">>> " in tail or "In:" in tail:
        stage = evidence._transcript_stage(tail)
        if stage is not None:
            return stage
    low = " ".join(tail.split()).lower()
    best, stage = -1, None
    for rx in _PREFIXED:
        last = None
        for last in rx.finditer(low):  # noqa: B007
            pass
        if last is not None and last.start() > best and last.lastgroup is not None:
            best, stage = last.start(), Stage(last.lastgroup)
    weak = None
    for phrase, st_ in _PHRASES:
        i = low.rfind(phrase)
        if phrase in evidence._REPORTER_ONLY:
            # (a reporter's words when no server answered: only when nothing else names
            # a step)
            weak = st_ if i >= 0 else weak
        elif i > best:
            best, stage = i, st_
    return stage if best >= 0 else weak


#: Pieces that make up generated diagnostics: every phrase, the regexes' words, fillers.
_PIECES = sorted({p for p, _ in _PHRASES} | {
    "in reply to ", "in response to the ", "end of data", "data", "rcpt", "mail from", "helo",
    "after ", "pipelined ", ">>> ", "did not like our ", "didn't like our ", "for ", "command",
    "performing the ", "handshake", "smtp command: ", "during ", "initial connection",
    "while ", "sending ", "connect to mx.example[", "x", " ", "550 5.1.1 ", ".", "\n",
    "RCPT TO:<a@b>", "In: ", "<<< 550 no", "data command", "rcpt command"})


class StageTests(SynchronousTestCase):
    """find_stage gives the plain loop's answer."""

    def test_examples(self) -> None:
        for t in _examples():
            self.assertEqual(evidence.find_stage.__wrapped__(t), _find_stage_plain(t), t)

    @SETTINGS
    @given(st.lists(st.sampled_from(_PIECES), max_size=12))
    def test_generated(self, pieces: list[str]) -> None:
        t = "".join(pieces)
        self.assertEqual(evidence.find_stage.__wrapped__(t), _find_stage_plain(t), t)

    def test_leads(self) -> None:
        """Each gated regex's lead is the literal text its matches start with."""
        lead = evidence._lead
        self.assertEqual(lead(re.compile("abc|x")), "")
        self.assertEqual(lead(re.compile("ab?c")), "a")
        self.assertEqual(lead(re.compile("(?i)abc")), "")
        self.assertEqual(lead(re.compile("abc", re.I)), "")
        self.assertEqual(lead(re.compile(">>> (?:x|y)")), ">>> ")
        for rx, word in evidence._PREFIXED_LEADS:
            self.assertTrue(rx.pattern.startswith(word))


class FamilyTests(SynchronousTestCase):
    """The family gate gives the case-insensitive search's answer."""

    def test_messagelabs(self) -> None:
        for note in ("This is the mail delivery agent at messagelabs.com.",
                     "THIS IS THE MAIL DELIVERY AGENT AT SYMANTEC EMAIL SECURITY.",
                     "mail delivery agent at elsewhere", "Mail Delivery Agent At MessageLabs.com",
                     "ſome non-ASCII, then mail delivery agent at messagelabs.com",
                     "x" * 1990 + "mail delivery agent at messagelabs.com", ""):
            want = "messagelabs" if analyze._FAMILIES[0][2].search(note, 0, 2000) else None
            self.assertEqual(analyze._family(None, "", note), want, note)  # type: ignore[arg-type]


class ResultCodeTests(SynchronousTestCase):
    """A result's reply code, taken from the classifier's reading, is the text's first."""

    @SETTINGS
    @given(st.lists(st.sampled_from(["550", "250", "5.1.1", "4.2.2", "452-", "2.0.0", " ",
                                     "x", "user unknown", "#550", "550%", "1.550", "\n",
                                     "554 ", "5.7.1 "]), max_size=10))
    def test_same_code(self, pieces: list[str]) -> None:
        from hurricane.bounce import mime
        from hurricane.bounce.classify import extract_codes
        ctx = analyze._Ctx(mime.Part([], b"", 0), 1e9, analyze.AnalysisLimits(),
                           default_classifier(), None)
        t = "".join(pieces)
        for text in (t, "x" * 9000 + t):
            self.assertEqual(analyze._result(ctx, "a@b.example", text, source="heuristic").code,
                             extract_codes(text)[0], text)
