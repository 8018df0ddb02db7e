"""The live loop: real Postfix and Exim write the bounces of Hurricane's real deliveries.

Each case is a cause (unknown user, full mailbox, a next hop refusing at
RCPT or after DATA, a sender refused at MAIL, a queue lifetime running
out...) produced by a throwaway instance of a real MTA on loopback; the
MTA's own bounce code writes the DSN and mails it to the delivery's VERP
return path. The reason, hard flag and state that Hurricane records must be
those docs/bounce-reasons.md gives for the cause (tests/integration/liveloop.py
lists them). bench/liveloop.py prints the same as a score table.
"""

from __future__ import annotations

import os
import shutil
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration import liveloop
from tests.peers import missing_peer


def _mta_log(root: str, recipients: list[str]) -> str:
    """The lines of the MTA logs under ``root`` that name one of ``recipients``'s
    queue ids or the recipients themselves (bounded: at most 200 lines)."""
    out: list[str] = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name not in ("maillog", "mainlog", "rejectlog", "paniclog"):
                continue
            try:
                with open(os.path.join(folder, name), errors="replace") as fp:
                    lines = fp.read().splitlines()
            except OSError:
                continue
            ids = {line.split(": ", 2)[1] for line in lines
                   if any(r in line for r in recipients) and line.count(": ") >= 2}
            out += [f"{name}: {line}" for line in lines
                    if any(r in line for r in recipients) or any(i in line for i in ids)]
    return "\n".join(["-- MTA log of the cases without a final state:", *out[:200], ""])


class LiveLoopMixin:
    """Run the cases of one MTA and compare each outcome with its cause's answer."""

    mta = ""

    def check_available(self) -> None:
        raise NotImplementedError

    async def run_cases(self) -> None:
        why = liveloop.why_not_root()
        if why is not None:
            raise SkipTest(why)
        self.check_available()
        root = liveloop.temp_root()
        self.addCleanup(liveloop.cleanup, root)  # type: ignore[attr-defined]
        cls = {"postfix": liveloop.PostfixMta, "exim": liveloop.EximMta}[self.mta]
        cases = [c for c in liveloop.CASES if c.mta == self.mta]
        outcomes = await liveloop.run_loop(reactor, root, cases, {self.mta: cls}, timeout=60)
        silent = [o.case for o in outcomes if o.state not in liveloop.FINAL_STATES]
        if silent:
            # In some full-suite runs (never alone) a next hop's DSN has not come back
            # within the minute: the delivery is still "delivered", nothing was
            # recorded wrongly. Those cases get one more loop of their own, and the
            # MTA's log of the first one goes to the test's output for diagnosis; a
            # case answered wrongly is never retried.
            sys.stderr.write(_mta_log(root, [c.recipient for c in silent]))
            again_root = liveloop.temp_root()
            self.addCleanup(liveloop.cleanup, again_root)  # type: ignore[attr-defined]
            again = {o.case.recipient: o for o in await liveloop.run_loop(
                reactor, again_root, silent, {self.mta: cls}, timeout=60)}
            outcomes = [again.get(o.case.recipient, o) for o in outcomes]
        wrong = [f"{o.case.cause}: expected {o.case.reason}/{'hard' if o.case.hard else 'soft'}/"
                 f"{o.case.state}, recorded {o.reason}/{'hard' if o.hard else 'soft'}/{o.state}"
                 f" (status {o.status}, {o.text[:120]!r})" for o in outcomes if not o.right]
        self.assertEqual(len(outcomes), len(cases))  # type: ignore[attr-defined]
        self.assertEqual(wrong, [])  # type: ignore[attr-defined]


class PostfixLiveLoopTests(LiveLoopMixin, TestCase):
    """Postfix 3's bounce(8), local(8), virtual(8), pipe and smtp(8) DSNs, recorded right."""

    mta = "postfix"
    timeout = 300  # two loops of at most a minute each, and the MTAs' start

    def check_available(self) -> None:
        if shutil.which("postfix") is None and shutil.which("/usr/sbin/postfix") is None:
            missing_peer("postfix is not installed (apt-get install postfix)")

    def test_causes(self) -> Deferred[None]:
        """Every Postfix cause is recorded with its reason, hard flag and state."""
        return Deferred.fromCoroutine(self.run_cases())


class EximLiveLoopTests(LiveLoopMixin, TestCase):
    """Exim 4's bounce messages (its DSN part and its own texts), recorded right."""

    mta = "exim"
    timeout = 300  # two loops of at most a minute each, and the MTAs' start

    def check_available(self) -> None:
        # Optional: Debian's exim4 package replaces Postfix, which the suite needs;
        # tests/integration/unpack-exim.sh unpacks it beside Postfix (HURRICANE_EXIM).
        if liveloop.find_exim() is None:
            raise SkipTest("exim is not installed: set HURRICANE_EXIM to an exim binary "
                           "(tests/integration/unpack-exim.sh DIR unpacks Debian's)")

    def test_causes(self) -> Deferred[None]:
        """Every Exim cause is recorded with its reason, hard flag and state."""
        return Deferred.fromCoroutine(self.run_cases())
