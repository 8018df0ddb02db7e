"""hurricane/smtpd and hurricane/netio use public Twisted only (STYLE.md habit 23).

Underscore names of Twisted break on upgrade without notice. This reads the
source of the server and of the socket helper and fails on an import of a
private Twisted module (or of twisted.mail, whose server we replaced), and
on a private name of Twisted's transports, protocols and reactor used on
anything but ``self`` (an attribute, or a string for getattr/hasattr).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twisted

REPO = Path(__file__).resolve().parents[2]
FILES = sorted((REPO / "hurricane" / "smtpd").glob("*.py")) + [REPO / "hurricane" / "netio.py"]

#: Twisted modules whose classes our connections touch (transports, TLS,
#: protocols, timers, the reactor, Deferreds).
_TWISTED_MODULES = ["internet/abstract.py", "internet/tcp.py", "internet/_newtls.py",
                    "internet/protocol.py", "internet/base.py", "internet/posixbase.py",
                    "internet/defer.py", "protocols/policies.py", "protocols/tls.py"]


def twisted_private_names() -> set[str]:
    """The underscore attributes those Twisted modules set on their objects."""
    root = Path(twisted.__file__).parent
    names: set[str] = set()
    for module in _TWISTED_MODULES:
        names |= set(re.findall(r"self\.(_[A-Za-z]\w*)", (root / module).read_text()))
    return {n for n in names if not n.startswith("__")}


def private_uses(source: str, private: set[str]) -> list[str]:
    """Where ``source`` uses a private Twisted module or name (line: what)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
            if node.module.startswith("twisted"):
                modules += [f"{node.module}.{alias.name}" for alias in node.names]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "twisted" and (any(p.startswith("_") for p in parts)
                                          or parts[:2] == ["twisted", "mail"]):
                found.append(f"{node.lineno}: import {module}")
        if (isinstance(node, ast.Attribute) and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{node.lineno}: .{node.attr}")
        if isinstance(node, ast.Constant) and node.value in private:
            found.append(f"{node.lineno}: {node.value!r}")
    return found


class PublicTwistedTests(SynchronousTestCase):
    def test_no_private_twisted_names(self) -> None:
        """No file of the server or the socket helper reaches into Twisted's privates."""
        private = twisted_private_names()
        self.assertIn("_tempDataBuffer", private)  # the scan sees instance attributes
        found = {path.name: private_uses(path.read_text(), private) for path in FILES}
        self.assertEqual({name: uses for name, uses in found.items() if uses}, {})

    def test_the_scan_finds_what_the_old_helper_did(self) -> None:
        """The forms the old write_now used are all caught."""
        old = (
            "from twisted.internet import tcp\n"
            "from twisted.internet._sslverify import OpenSSLCertificateOptions\n"
            "from twisted.mail.smtp import ESMTP\n"
            "ok = not transport._aborting\n"
            "queued = getattr(transport, '_tempDataBuffer', None)\n"
            "mine = self._buffer\n"
        )
        uses = private_uses(old, twisted_private_names())
        self.assertEqual(uses, ["2: import twisted.internet._sslverify",
                                "2: import twisted.internet._sslverify.OpenSSLCertificateOptions",
                                "3: import twisted.mail.smtp",
                                "3: import twisted.mail.smtp.ESMTP",
                                "4: ._aborting", "5: '_tempDataBuffer'"])
