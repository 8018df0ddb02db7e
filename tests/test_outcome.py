"""hurricane.outcome: the vocabulary, its helpers, and that nothing else spells it."""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hurricane.outcome import (
    ATTEMPT_STATES,
    FINAL_STATES,
    HARD_REASONS,
    PENDING_STATES,
    STATES,
    Action,
    Category,
    Phase,
    Reason,
    SqliteSync,
    Stage,
    State,
    TlsPolicy,
    is_hard,
    sql_list,
)

#: DESIGN.md, "The outcome model": the reason vocabulary (Sisimai's), as written there.
DESIGN_REASONS = """
userunknown, hostunknown, hasmoved, mailboxfull, suspend, filtered, rejected, blocked,
spamdetected, virusdetected, policyviolation, authfailure, requireptr, badreputation,
securityerror, norelaying, notaccept, notcompliantrfc, mesgtoobig, exceedlimit, toomanyconn,
speeding, expired, networkerror, systemerror, systemfull, mailererror, contenterror,
syntaxerror, onhold, failedstarttls, suppressed, undefined, delivered, vacation, feedback
"""

REPO = Path(__file__).resolve().parents[1]


class VocabularyTests(SynchronousTestCase):
    """The enums hold exactly the words the design names."""

    def test_reasons_are_designs(self) -> None:
        """Reason is DESIGN.md's vocabulary, word for word."""
        words = {w.strip() for w in DESIGN_REASONS.replace("\n", " ").split(",")}
        self.assertEqual({r.value for r in Reason}, words)

    def test_states(self) -> None:
        """The eight states; pending, final and attempt-ending sets partition them as designed."""
        self.assertEqual([s.value for s in STATES],
                         ["queued", "deferred", "delivered", "failed", "expired", "suppressed",
                          "bounced", "complained"])
        self.assertEqual(PENDING_STATES, (State.queued, State.deferred))
        self.assertEqual(FINAL_STATES | set(PENDING_STATES), set(STATES))
        self.assertFalse(FINAL_STATES & set(PENDING_STATES))
        self.assertEqual(ATTEMPT_STATES,
                         {State.delivered, State.deferred, State.failed, State.expired})
        self.assertEqual([s for s in State if s.pending], [State.queued, State.deferred])

    def test_members_compare_as_their_text(self) -> None:
        """A member equals and hashes as its text, so rows read back compare as before."""
        self.assertEqual(State.bounced, "bounced")
        self.assertEqual({"userunknown": 1}[Reason.userunknown], 1)
        self.assertEqual(Category("feedback"), Category.feedback)


class ReasonTests(SynchronousTestCase):
    """Reason.of, Reason.label and is_hard."""

    def test_of(self) -> None:
        """A known word is its member; an unknown one is undefined; nothing is None."""
        self.assertIs(Reason.of("mailboxfull"), Reason.mailboxfull)
        self.assertIs(Reason.of("nosuchword"), Reason.undefined)
        self.assertIsNone(Reason.of(None))
        self.assertIsNone(Reason.of(""))

    def test_label(self) -> None:
        """Metrics labels: the word, "undefined" for none, "other" outside the vocabulary."""
        self.assertEqual(Reason.label("blocked"), "blocked")
        self.assertEqual(Reason.label(None), "undefined")
        self.assertEqual(Reason.label("made-up"), "other")
        self.assertEqual(Reason.label(""), "other")

    def test_is_hard(self) -> None:
        """Hard: a bad address (any status), or notaccept with a 5.x.x status only."""
        rows = [
            ("userunknown", None, True), ("hostunknown", "4.4.0", True),
            ("hasmoved", "5.1.6", True), (Reason.userunknown, "5.1.1", True),
            ("notaccept", "5.1.10", True), ("notaccept", "4.7.1", False),
            ("notaccept", None, False), ("mailboxfull", "5.2.2", False),
            ("blocked", "5.7.1", False), (None, "5.1.1", False),
        ]
        for reason, status, hard in rows:
            self.assertEqual(is_hard(reason, status), hard, (reason, status))
        self.assertEqual(HARD_REASONS,
                         {Reason.userunknown, Reason.hostunknown, Reason.hasmoved})


class SmallVocabularyTests(SynchronousTestCase):
    """Action, Phase, TlsPolicy, SqliteSync and sql_list."""

    def test_action(self) -> None:
        """A DSN's action in any case and spacing; passed_on for delivered/relayed/expanded."""
        self.assertIs(Action.of(" Failed "), Action.failed)
        self.assertIsNone(Action.of("exploded"))
        self.assertIsNone(Action.of(None))
        self.assertEqual([a for a in Action if a.passed_on],
                         [Action.delivered, Action.relayed, Action.expanded])

    def test_phase(self) -> None:
        """Each phase's coarse stage and the DSN wording of the command it answers."""
        self.assertEqual(
            [(p.value, p.stage, p.command) for p in Phase],
            [("connect", Stage.conn, None), ("greeting", Stage.conn, None),
             ("ehlo", Stage.helo, None), ("starttls", Stage.helo, None),
             ("mail", Stage.mail, "MAIL FROM"), ("rcpt", Stage.rcpt, "RCPT TO"),
             ("data", Stage.data, "DATA"), ("dot", Stage.data, "end of DATA"),
             ("timeout", None, None), ("quit", None, None)])

    def test_tls_policy(self) -> None:
        """require and verify refuse clear text; none and opportunistic do not."""
        self.assertEqual([p.value for p in TlsPolicy if p.required], ["require", "verify"])

    def test_sqlite_sync(self) -> None:
        """A level in any case; anything else is a ValueError naming the levels."""
        self.assertIs(SqliteSync.of("normal"), SqliteSync.normal)
        self.assertEqual(SqliteSync.full.value, "FULL")
        with self.assertRaises(ValueError) as e:
            SqliteSync.of("sometimes")
        self.assertIn("OFF, NORMAL, FULL, EXTRA", str(e.exception))

    def test_sql_list(self) -> None:
        """Members as SQL literals in the order given."""
        self.assertEqual(sql_list(PENDING_STATES), "'queued', 'deferred'")
        self.assertEqual(sql_list([Reason.undefined]), "'undefined'")


#: Words of other vocabularies that happen to be spelled like ours, by module.
#: "bounce" (a config section, the bounce rate) and "other" (plain English)
#: are not checked at all.
ELSEWHERE = {
    # a token the VERP codec rejected, in the correlation evidence
    "hurricane/inbound/correlate.py": {"rejected"},
    # RecipientKind.feedback: mail to a feedback address
    "hurricane/inbound/policy.py": {"feedback"},
    # ProcessResult.status (what became of a returned message) and counters
    "hurricane/inbound/processor.py": {"failed", "queued"},
    # the per-destination count of deliveries waiting in memory
    "hurricane/outbound/pool.py": {"queued"},
    # VerpRejection: a token too old
    "hurricane/verp.py": {"expired"},
    # the smart sink plays remote MTAs: its scenario words are its own
    "hurricane/sink/returns.py": {"delayed", "autoreply", "vacation"},
    "hurricane/sink/scenario.py": {"delayed", "autoreply", "vacation"},
    "hurricane/sink/server.py": {"rejected", "deferred"},
    # the operations layer (issue 17's operations work) still spells some
    "hurricane/report/pages.py": {"delivered", "deferred", "queued", "failed", "bounced"},
    "hurricane/demo.py": {"delivered", "deferred", "queued", "failed", "bounced", "complained",
                          "expired", "suppressed", "delayed", "vacation", "rejected"},
}


def _spelled(path: Path, words: set[str]) -> set[tuple[int, str]]:
    """String constants of a module that are one of ``words``, docstrings and
    ``__all__`` aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    return {(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip and n.value in words}


class NoCopiesTests(SynchronousTestCase):
    """The vocabulary is imported, never retyped (STYLE.md habit 18)."""

    def test_no_module_spells_the_words(self) -> None:
        """No state, reason, category or action word is a string literal outside
        hurricane/outcome.py (the bounce analyzer's package aside: its copies are
        listed in issue 17's report)."""
        words = {m.value for e in (State, Reason, Category, Action) for m in e}
        words -= {"bounce", "other"}
        found = []
        for path in sorted((REPO / "hurricane").rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name == "hurricane/outcome.py" or name.startswith("hurricane/bounce/"):
                continue
            allowed = ELSEWHERE.get(name, set())
            found += [f"{name}:{line}: {word!r}" for line, word in sorted(_spelled(path, words))
                      if word not in allowed]
        self.assertEqual(found, [])

    def test_the_check_finds_a_copy(self) -> None:
        """The scan sees a retyped word (and skips docstrings and __all__)."""
        with tempfile.TemporaryDirectory() as where:
            path = Path(where) / "module.py"
            path.write_text('"""delivered."""\n__all__ = ["failed"]\nSTATES = ("queued",)\n',
                            encoding="utf-8")
            self.assertEqual(_spelled(path, {"delivered", "failed", "queued"}),
                             {(3, "queued")})
