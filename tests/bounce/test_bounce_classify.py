"""Tests for hurricane.bounce.classify: the rule table and the reply classifier."""

from __future__ import annotations

import json
import os
import re
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce import classify
from hurricane.bounce.classify import (
    ReplyClassifier,
    default_classifier,
    detect_command,
    extract_codes,
    normalise_text,
    regex_hazard,
)


def _example(ex):
    if isinstance(ex, str):
        return None, None, ex
    return ex.get("code"), ex.get("status"), ex.get("text", "")


def _family(ex):
    return ex.get("family") if isinstance(ex, dict) else None


class RuleTableTests(SynchronousTestCase):
    """Every packaged rule carries examples, and they hold."""

    def test_every_rule_has_examples(self):
        """Each rule has at least one match and one nomatch example."""
        for rule in default_classifier().rules:
            self.assertTrue(rule.match, rule.id)
            self.assertTrue(rule.nomatch, rule.id)

    def test_match_examples(self):
        """Each rule matches each of its own match examples."""
        for rule in default_classifier().rules:
            for ex in rule.match:
                code, status, text = _example(ex)
                low = normalise_text(text)
                if code is None or status is None:
                    ec, es = extract_codes(text)
                    code, status = code or ec, status or es
                self.assertTrue(rule.applies(code, status, low, detect_command(low), _family(ex)),
                                "%s should match %r" % (rule.id, ex))

    def test_nomatch_examples(self):
        """The classifier never answers with a rule for one of its nomatch examples."""
        clf = default_classifier()
        for rule in clf.rules:
            for ex in rule.nomatch:
                code, status, text = _example(ex)
                self.assertNotEqual(clf.classify(code, status, text, _family(ex)).rule, rule.id,
                                    "%s should not match %r" % (rule.id, ex))

    def test_rule_ids_unique(self):
        """Rule ids are unique."""
        ids = [r.id for r in default_classifier().rules]
        self.assertEqual(len(ids), len(set(ids)))


class ClassifyTests(SynchronousTestCase):
    """classify(code, status, text) -> ReplyClass."""

    def setUp(self):
        self.clf = default_classifier()

    def test_user_unknown_is_hard_and_suppressed(self):
        """A 550 5.1.1 user unknown at RCPT is a hard, suppressing userunknown."""
        r = self.clf.classify(550, "5.1.1", "5.1.1 <a@example.org>: Recipient address rejected: "
                                            "User unknown in virtual mailbox table")
        self.assertEqual((r.reason, r.hard, r.suppress, r.permanent),
                         ("userunknown", True, True, True))
        self.assertFalse(r.status_inferred)

    def test_spam_5xx_never_suppresses(self):
        """A 5xx for spam is the sender's problem: not hard, not suppressed."""
        r = self.clf.classify(554, "5.7.1", "Message rejected as spam by content filter")
        self.assertEqual(r.reason, "spamdetected")
        self.assertFalse(r.hard)
        self.assertFalse(r.suppress)
        self.assertTrue(r.permanent)

    def test_inferred_status(self):
        """A reply without an enhanced code gets one inferred from the reason, marked so."""
        r = self.clf.classify("552", None, "Requested mail action aborted: mailbox full")
        self.assertEqual((r.reason, r.status, r.status_inferred), ("mailboxfull", "5.2.2", True))
        r = self.clf.classify("452", None, "mailbox full")
        self.assertEqual(r.status, "4.2.2")

    def test_codes_read_from_text(self):
        """Codes missing from the arguments are read from the text itself."""
        r = self.clf.classify(None, None, "550 5.1.1 <a@b.example>... User unknown "
                                          "(in reply to RCPT TO command)")
        self.assertEqual((r.reason, r.status), ("userunknown", "5.1.1"))

    def test_same_text_same_reason(self):
        """The same reply text gets the same reason from a DSN or an SMTP conversation."""
        text = ("421 4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred "
                "due to user complaints")
        a = self.clf.classify(421, "4.7.0", text)
        b = self.clf.classify(None, None, text)
        self.assertEqual((a.reason, a.rule), (b.reason, b.rule))

    def test_disposition_temporary(self):
        """A rate-limit 5xx carries a temporary disposition for outbound retries."""
        r = self.clf.classify(550, "5.4.5", "Daily sending quota exceeded; "
                                            "temporarily rate limited due to volume")
        self.assertEqual(r.reason, "toomanyconn")
        self.assertIs(r.permanent, False)

    def test_fallback_by_code(self):
        """Text no rule knows falls back to the status table, then to onhold."""
        r = self.clf.classify(550, "5.2.2", "zzz")
        self.assertEqual((r.reason, r.rule), ("mailboxfull", "mailboxfull.status"))
        r = self.clf.classify(550, None, "zzz qqq")
        self.assertEqual((r.reason, r.rule, r.permanent), ("onhold", None, True))
        r = self.clf.classify(None, None, "")
        self.assertEqual(r.reason, "undefined")

    def test_command_detection(self):
        """The SMTP command a reply answered is read from the usual phrasings."""
        self.assertEqual(detect_command("550 x (in reply to end of data command)"), "DATA")
        self.assertEqual(detect_command(">>> rcpt to:<a@b> <<< 550 no"), "RCPT")
        self.assertEqual(detect_command("nothing"), "NONE")


def _write(text):
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as fp:
        fp.write(text)
    return path


class OperatorRulesTests(SynchronousTestCase):
    """Operators extend and override the rules from their own TOML files."""

    def test_operator_rule_checked_first(self):
        """An operator rule wins over the packaged rules."""
        path = _write('[[rule]]\nid = "acme.quota"\nreason = "mailboxfull"\n'
                      'text = ["acme user unknown"]\nmatch = ["acme user unknown"]\n'
                      'nomatch = ["x"]\n')
        self.addCleanup(os.unlink, path)
        clf = ReplyClassifier.load([path])
        r = clf.classify(550, None, "550 acme user unknown")
        self.assertEqual((r.reason, r.rule), ("mailboxfull", "acme.quota"))

    def test_same_id_replaces(self):
        """A rule with a packaged rule's id replaces it."""
        path = _write('[[rule]]\nid = "mailboxfull.text"\nreason = "mailboxfull"\n'
                      'text = ["zzz-never"]\ndisposition = "permanent"\n')
        self.addCleanup(os.unlink, path)
        clf = ReplyClassifier.load([path])
        self.assertEqual(sum(1 for r in clf.rules if r.id == "mailboxfull.text"), 1)
        r = clf.classify(452, None, "452 zzz-never")
        self.assertEqual((r.rule, r.permanent), ("mailboxfull.text", True))

    def test_bad_file_names_file_and_rule(self):
        """A bad rule raises ValueError naming the file and the rule id."""
        path = _write('[[rule]]\nid = "broken.one"\nreason = "nonsense"\ntext = ["x"]\n')
        self.addCleanup(os.unlink, path)
        e = self.assertRaises(ValueError, ReplyClassifier.load, [path])
        self.assertIn(path, str(e))
        self.assertIn("broken.one", str(e))

    def test_bad_regex(self):
        """A rule with an invalid regex raises ValueError naming the rule."""
        path = _write('[[rule]]\nid = "broken.re"\nreason = "blocked"\ntext = ["(unclosed"]\n')
        self.addCleanup(os.unlink, path)
        e = self.assertRaises(ValueError, ReplyClassifier.load, [path])
        self.assertIn("broken.re", str(e))


class PrefilterTests(SynchronousTestCase):
    """The literal prefilter skips rules, never changes which rule matches first."""

    def _plain(self, clf, code, status, text, family=None):
        low = normalise_text(text)
        if code is None or status is None:
            ec, es = extract_codes(text)
            code, status = code or ec, status or es
        cmd = detect_command(low)
        return next((r.id for r in clf.rules if r.applies(code, status, low, cmd, family)), None)

    def test_literals_derived_for_packaged_rules(self):
        """Nearly every packaged text pattern gets a prefilter (a broken derivation would not)."""
        from hurricane.bounce.classify import _required_literals
        rules = [r for r in default_classifier().rules if r.text is not None]
        derived = [r for r in rules if _required_literals(r.text)]
        self.assertGreater(len(derived), len(rules) * 0.9)

    def test_derivation(self):
        """Literals come only from case-sensitive literal runs; otherwise None (always run)."""
        import re

        from hurricane.bounce.classify import _required_literals
        self.assertEqual(_required_literals(re.compile("user (?:is )?unknown")),
                         {"user unknown", "user is unknown"})
        for p in ("(?i)abc", "a(?i:bcd)e", "x.*yz|abc", "(?:a|b)c", "ab?", "[a-z]+", "(a)\\1"):
            self.assertIsNone(_required_literals(re.compile(p)), p)

    def test_same_first_rule_as_plain_loop(self):
        """With operator rules of all shapes, the answer equals trying every rule in order."""
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fp:
            fp.write(r'''
[[rule]]
id = "op.ci"
reason = "blocked"
text = ['(?i:USER\s+Unknown)', 'x(?=yz)', '(a)bc\1', '(?<!no )such user']
unless = ['(?i:DATA)', 'rcpt$']
[[rule]]
id = "op.any"
reason = "suspend"
text = ['.*']
code = ["55"]
also = ['disabled|quota\b']
''')
        self.addCleanup(os.unlink, fp.name)
        clf = ReplyClassifier.load([fp.name])
        texts = ["550 user unknown", "550 USER unknown", "xyz", "abca", "abc", "no such user",
                 "a such user",
                 "550 account disabled", "552 over quota", "554 data rcpt", "5.1.1 Mailbox full",
                 "550 5.7.1 relaying denied", "421 try again later", ""]
        for rule in default_classifier().rules:
            texts += [_example(ex)[2] for ex in rule.match + rule.nomatch]
        for t in texts:
            for code, status in ((None, None), ("550", None), (None, "5.1.1"), ("452", "4.2.2")):
                clf._cache.clear()
                self.assertEqual(clf.classify(code, status, t).rule,
                                 self._plain(clf, code, status, t), t)


class RegexHazardTests(SynchronousTestCase):
    """Rules must be linear: the check of regex shapes, at load and on the packaged rules."""

    def test_packaged_rules(self):
        """Every regex of rules.toml passes (checked here: the packaged rules are not re-checked
        at each start, an operator's rules are)."""
        clf = ReplyClassifier.load()
        for rule in clf.rules:
            for p in (rule.text, rule.also, rule.unless):
                if p is not None:
                    self.assertIsNone(regex_hazard(p.pattern), rule.id)

    def test_operator_rule_refused(self):
        """An operator rule that would be quadratic is refused at load, naming it."""
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fp:
            fp.write("[[rule]]\nid = \"op.slow\"\nreason = \"blocked\"\n"
                     "text = ['blocked', 'x\\S+@\\S+ denied']\n")
        self.addCleanup(os.unlink, fp.name)
        with self.assertRaises(ValueError) as e:
            ReplyClassifier.load([fp.name])
        self.assertIn("op.slow", str(e.exception))
        self.assertIn("linear", str(e.exception))

    def test_shapes(self):
        """What the check refuses, and what it lets through."""
        refused = [r"\w+ is", r"\w+$", r"x\S+@\S+ y", r"a\w+b", r"x(a+)+", r"x(?:ab)*c",
                   r"(?m)^\s+x", r"\b\S+x", r"x(?=\S*y)", r"x.*;.*y", r"(?:|x)\w+ y",
                   # a window of variable length next to a run it overlaps (issue 23)
                   r"help[^<\n]{0,40}[ \t:]*<", r"help[ \t:]*[^<\n]{0,40}<",
                   r"help[^<\n]{0,40}[ \t:]*+<"]
        allowed = [r".*", r"\w+", r"a \w+b", r"(?m)^[ \t]+x", r"^\s+x", r"\b\w+x",
                   r"550 unknown user \S*docomo", r"internal (?:\w+ )?error",
                   r"\b5\d\d \S[^\s@]*+@\S++ y", r"a.{0,400}b", r"0[a-z]+[0-9]*[A-Z]+y",
                   r"unknown (?:user|recipient)", r"(?i)x\s*/\s*y",
                   r"help[^<\n]{0,40}+[ \t:]*<", r"help[ \t:]*+[^<\n]{0,40}<",
                   r"help[^<\n]{40}[ \t:]*<", r"x\s?\s*y",
                   r"error: .{0,80}lookup of \S+ (?:with|had)"]
        self.assertEqual([p for p in refused if regex_hazard(p) is None], [])
        self.assertEqual({p: regex_hazard(p) for p in allowed if regex_hazard(p)}, {})

    def test_reply_text_cut(self):
        """The rules read MAX_TEXT characters of a reply at most."""
        seen = []
        clf = ReplyClassifier.load()
        real = clf._decide

        def spy(c, s, low, *rest):
            seen.append(len(low))
            return real(c, s, low, *rest)

        self.patch(clf, "_decide", spy)
        text = "user unknown " * 100_000
        clf.classify("550", None, text)
        self.assertEqual(seen, [len(classify.normalise_text(text[:classify.MAX_TEXT]))])
        self.assertLessEqual(seen[0], classify.MAX_TEXT)


class LiteralTableTests(SynchronousTestCase):
    """The literal table packaged beside rules.toml (a start-up cost saved, never an answer)."""

    def test_packaged_table_is_current(self) -> None:
        """rules_literals.json is what the packaged rules derive to (else regenerate it)."""
        from hurricane.bounce import classify
        path = os.path.join(os.path.dirname(classify.__file__), "rules_literals.json")
        with open(path) as fp:
            packaged = json.load(fp)
        self.assertEqual(packaged, classify.literal_table(ReplyClassifier.load().rules),
                         "run: python -m hurricane.bounce.classify")

    def test_parsed_rules_are_current(self) -> None:
        """rules_parsed.json is rules.toml parsed (else regenerate it); a stale one is not used."""
        from hurricane.bounce import classify
        here = os.path.dirname(classify.__file__)
        with open(os.path.join(here, "rules.toml"), "rb") as fp:
            data = fp.read()
        with open(os.path.join(here, "rules_parsed.json")) as fp:
            packaged = json.load(fp)
        self.assertEqual(packaged, classify.parsed_table(data),
                         "run: python -m hurricane.bounce.classify")
        self.assertIsNotNone(classify._packaged_doc(data))
        self.assertIsNone(classify._packaged_doc(data + b"\n# edited\n"))

    def test_packaged_patterns_compile_lazily(self) -> None:
        """The packaged rules load uncompiled; each compiles (and is valid) when searched."""
        from hurricane.bounce.classify import LazyPattern
        clf = ReplyClassifier.load()
        pats = [p for r in clf.rules for p in (r.text, r.also, r.unless) if p is not None]
        self.assertTrue(pats and all(isinstance(p, LazyPattern) for p in pats))
        self.assertTrue(all(p._compiled is None for p in pats))  # type: ignore[union-attr]
        for p in pats:
            self.assertIsInstance(p.search("x"), (type(None), re.Match))

    def test_stale_table_gives_the_same_answers(self) -> None:
        """Without the table (or with a wrong one) every answer stays the same."""
        from hurricane.bounce import classify
        texts = [_example(ex)[2] for rule in default_classifier().rules
                 for ex in rule.match + rule.nomatch]
        with_table = ReplyClassifier.load()
        want = [with_table.classify(None, None, t).rule for t in texts]
        self.patch(classify, "_packaged_literals", lambda: ({}, (["zzz"], "zzz")))
        without = ReplyClassifier.load()
        self.assertEqual([without.classify(None, None, t).rule for t in texts], want)
