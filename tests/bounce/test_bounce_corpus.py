"""Regression guard: the analyzer over both public bounce corpora.

The corpus is not part of the repository.  It is read from
$HURRICANE_BOUNCE_CORPUS, else ../shared/bounce-corpus next to the checkout;
the test skips when neither exists, unless HURRICANE_REQUIRE_CORPUS=1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.bounce.analyze import analyze, to_prediction
from tests.peers import require_corpus, require_corpus2

# Figures reached by the analyzer (score.py, strict), minus about half a point.
# Raise them when the analyzer improves; never lower them to make a change pass.
THRESHOLDS = {
    "recipients_exact": 0.995,
    "status~real": 0.987,
    "reason": 0.964,
    "category": 0.995,
    "hard": 0.988,
}


def _score_module(corpus: str) -> Any:
    """The public corpus's score.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location("bounce_corpus_score",
                                                  os.path.join(corpus, "score.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class CorpusTests(SynchronousTestCase):
    """The whole public corpus, scored with the corpus's own score.py."""

    def setUp(self):
        self.dir = require_corpus()

    def _score_module(self):
        return _score_module(self.dir)

    def test_accuracy_and_no_crash(self):
        """No message raises or errors, and no score drops below the recorded figures."""
        emails = os.path.join(self.dir, "emails")
        preds = {}
        for name in sorted(os.listdir(emails)):
            with open(os.path.join(emails, name), "rb") as fp:
                raw = fp.read()
            a = analyze(raw)
            self.assertIsNone(a.error, "%s: %s" % (name, a.error))
            p = to_prediction(a, "emails/" + name)
            json.dumps(p)
            preds[name] = p
        score = self._score_module()
        exps = {k: e for k, e in score.load(os.path.join(self.dir, "expected.jsonl")).items()
                if e.get("source") != "none"}
        m, acc, _conf, _per, _has = score.score(preds, exps)
        got = {
            "recipients_exact": m["rcpt_exact"] / m["emails"],
            "status~real": acc["status~real"].strict / acc["status~real"].n,
            "reason": acc["reason"].strict / acc["reason"].n,
            "category": acc["category"].strict / acc["category"].n,
            "hard": acc["hard"].strict / acc["hard"].n,
        }
        low = {k: round(v, 4) for k, v in got.items() if v < THRESHOLDS[k]}
        self.assertEqual(low, {}, "below the recorded figures %s: %s" % (THRESHOLDS, got))


def sealed(name: str) -> bool:
    """The sealed third of corpus 2 (bench/_seal.py): scored only in aggregate, never read."""
    return int(hashlib.sha256(os.path.basename(name).encode()).hexdigest(), 16) % 3 == 0


#: Corpus 2's figures (score.py, strict) on its unsealed two thirds and on its
#: sealed third, each a little below what the analyzer reaches (one message of
#: the sealed third is ~2.5 points). Raise them when the analyzer improves.
#: The unsealed reason was lowered from 0.915 to 0.91 (issue 22 review, item 5):
#: flufl-simple_13.eml says "L'adresse de messagerie référencée ci-dessus n'existe
#: pas", the unknown-user cause in French, which the model's phrase families read
#: in the languages seen in returns (docs/bounce-reasons.md section 5); the expected
#: onhold is Sisimai not reading French, and contradicts the model (onhold only for
#: words that cannot be placed). With no stage it is filtered (section 2 step 5).
#: Raised to 0.92 when Google's step tags gave bemail-tt_bounce_19 its stage (92.4 %).
THRESHOLDS_2 = {
    "unsealed": {"recipients_exact": 0.99, "status~real": 0.99, "reason": 0.92,
                 "category": 0.99, "hard": 0.97},
    "sealed": {"recipients_exact": 0.92, "status~real": 0.96, "reason": 0.865,
               "category": 0.99, "hard": 0.94},
}


class Corpus2Tests(SynchronousTestCase):
    """Corpus 2 (other sources than the public corpus): the unsealed part and the sealed third.

    The sealed third is what tells whether a change generalizes, so this test
    scores it like the rest but reports only its aggregate figures, never a
    file or an answer of it.
    """

    def setUp(self) -> None:
        self.dir = require_corpus2()
        self.score = _score_module(require_corpus())

    def _figures(self, want_sealed: bool) -> tuple[dict[str, float], int]:
        emails = os.path.join(self.dir, "emails")
        preds, errors = {}, 0
        for name in sorted(os.listdir(emails)):
            if sealed(name) != want_sealed:
                continue
            with open(os.path.join(emails, name), "rb") as fp:
                a = analyze(fp.read())
            errors += a.error is not None
            preds[name] = to_prediction(a, "emails/" + name)
        exps = {k: e for k, e in self.score.load(os.path.join(self.dir, "expected.jsonl")).items()
                if e.get("source") != "none" and sealed(k) == want_sealed}
        m, acc, _conf, _per, _has = self.score.score(preds, exps)
        return {
            "recipients_exact": m["rcpt_exact"] / m["emails"],
            "status~real": acc["status~real"].strict / acc["status~real"].n,
            "reason": acc["reason"].strict / acc["reason"].n,
            "category": acc["category"].strict / acc["category"].n,
            "hard": acc["hard"].strict / acc["hard"].n,
        }, errors

    def test_unsealed(self) -> None:
        """No analysis error, and no figure of the unsealed part below the recorded ones."""
        got, errors = self._figures(False)
        self.assertEqual(errors, 0)
        low = {k: round(v, 4) for k, v in got.items() if v < THRESHOLDS_2["unsealed"][k]}
        self.assertEqual(low, {}, "below %s: %s" % (THRESHOLDS_2["unsealed"], got))

    def test_sealed_in_aggregate(self) -> None:
        """The sealed third, scored in aggregate only: no error, no figure below the recorded."""
        got, errors = self._figures(True)
        self.assertEqual(errors, 0, "analysis errors in the sealed third")
        low = {k: round(v, 4) for k, v in got.items() if v < THRESHOLDS_2["sealed"][k]}
        self.assertEqual(low, {}, "sealed third below %s: %s" % (THRESHOLDS_2["sealed"], got))
