"""Properties of the evidence reader and the decision on any input.

Random, truncated and hostile texts never make the stage reader or the
decision raise; the decision always answers a word of the vocabulary; and
the stage reader's work is bounded by its input limit whatever the text
(checked by what it reads, not by timing: no clock in unit tests).
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import evidence
from hurricane.bounce.classify import REASONS, default_classifier
from hurricane.bounce.evidence import STAGE_TEXT_LIMIT, Evidence, Stage, find_stage

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=list(HealthCheck))

# Pieces of the wordings the reader looks for, to build texts that almost match.
PIECES = ["in reply to ", "after ", ">>> ", "<<< ", "RCPT TO:", "MAIL FROM:", "DATA", ".",
          "end of data", "503 need RCPT", "554 no valid recipients", "550 5.1.1 user unknown",
          "\n", " ", "connect to mx[", "while sending ", "did not like our ", "for TEXT command",
          "x" * 50, "<", "@", "5.7.1", "550-", "\u5b58\u5728\u3057\u307e\u305b\u3093"]

texts = st.one_of(
    st.text(max_size=3000),
    st.lists(st.sampled_from(PIECES), max_size=300).map("".join),
)


class StageReaderPropertyTests(SynchronousTestCase):
    """find_stage on any text."""

    @SETTINGS
    @given(texts)
    def test_never_raises(self, text: str) -> None:
        """Any text gives a Stage or None."""
        got = find_stage(text)
        self.assertTrue(got is None or isinstance(got, Stage))

    @SETTINGS
    @given(texts, st.integers(min_value=0, max_value=200))
    def test_truncated(self, text: str, cut: int) -> None:
        """A text cut anywhere is read without error."""
        find_stage(text[:cut])

    def test_reads_a_bounded_tail(self) -> None:
        """Only the last STAGE_TEXT_LIMIT characters are read, however long the text."""
        seen: list[int] = []
        real = evidence._transcript_stage

        def spy(text: str) -> Stage | None:
            seen.append(len(text))
            return real(text)

        self.patch(evidence, "_transcript_stage", spy)
        hostile = ">>> RCPT TO:<a@b>\n<<< 550 no\n" * 200_000
        self.assertEqual(find_stage(hostile), Stage.rcpt)
        self.assertEqual(seen, [STAGE_TEXT_LIMIT])


class DecisionPropertyTests(SynchronousTestCase):
    """decide() on any evidence."""

    @SETTINGS
    @given(texts,
           st.one_of(st.none(), st.sampled_from(["250", "421", "450", "550", "554", "999"])),
           st.one_of(st.none(), st.sampled_from(["2.0.0", "4.2.2", "5.0.0", "5.1.1", "5.7.1",
                                                 "5.9.999", "4.7.26"])),
           st.one_of(st.none(), st.sampled_from(list(Stage))),
           st.one_of(st.none(), st.sampled_from(["smtp", "x-unix", "x-postfix"])))
    def test_always_a_reason(self, text: str, code: str | None, status: str | None,
                             stage: Stage | None, dtype: str | None) -> None:
        """Every decision is a word of the vocabulary, with the rule that made it."""
        rc = default_classifier().decide(Evidence(text=text, code=code, status=status,
                                                  stage=stage, diagnostic_type=dtype))
        self.assertIn(rc.reason, REASONS)
        self.assertTrue(rc.decided_by)
        self.assertTrue(rc.runner_up is None or rc.runner_up in REASONS)
        self.assertNotEqual(rc.runner_up, rc.reason)


class LinearPatternTests(SynchronousTestCase):
    """The stage reader's and the auto-reply and delay patterns pass the linear-shape check."""

    def test_patterns_linear(self) -> None:
        """Each regex these steps run on returned text has no superlinear shape."""
        from hurricane.bounce import analyze
        from hurricane.bounce.classify import regex_hazard
        patterns = [p.pattern for p in evidence._PREFIXED] + [evidence._NO_RECIPIENTS.pattern]
        patterns += [getattr(analyze, n).pattern for n in (
            "_UNDELIVERED", "_STILL_RETRYING", "_DELAY_SUBJECT", "_GAVE_UP", "_AUTO_BODY")]
        self.assertEqual({p: regex_hazard(p) for p in patterns if regex_hazard(p)}, {})


_MTA_PIECES = ["host ", "server ", "host: ", "(0) ", "connect to ", "while talking to ",
               "for the recipient domain ", " by ", "mx.example.jp", "a", "xhost ", "_host ",
               "\u00e9host ", "1host ", "-host ", ".", " ", "[192.0.2.1]", "[ipv6:::1]", ":",
               " (", "a-b", "\n", "\u01c5"]


class RemoteMtaPatternTests(SynchronousTestCase):
    """_REMOTE_MTA, written with its literals first for speed, finds what the plain
    "\\bhost|..." form finds, at the same place, with the same host."""

    @settings(max_examples=3000, deadline=None)
    @given(st.lists(st.sampled_from(_MTA_PIECES), max_size=14).map("".join))
    def test_same_as_word_boundary_form(self, text: str) -> None:
        h, ip = evidence._HOST, evidence._IP
        plain = re.compile(
            r"\b(?:host|server) " + h + r" ?" + ip + r"|\bhost: " + h + r" \(|"
            r"\(0\) " + h + r" ?" + ip + r"|\bconnect to " + h + ip + r"|"
            r"\bwhile talking to " + h + r":|\bfor the recipient domain \S{1,253} by "
            + h + r" " + ip)

        def found(m: re.Match[str] | None) -> object:
            return None if m is None else (m.span(), next(g for g in m.groups() if g))
        self.assertEqual(found(evidence._REMOTE_MTA.search(text)), found(plain.search(text)))
