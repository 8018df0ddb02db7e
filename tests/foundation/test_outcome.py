"""hurricane.outcome: the vocabulary and its helpers."""

from __future__ import annotations

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
