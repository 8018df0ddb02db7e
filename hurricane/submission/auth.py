"""Submission authentication: a twisted.cred checker over hashed passwords, and a throttle.

Users come from ``[submission] users`` (name -> hash) and ``users_file``
(``name:hash`` lines). Passwords are verified by a
:class:`~hurricane.credentials.PasswordBook`: pbkdf2 (about 40 ms of CPU) runs
in the verifier's thread pool, never on the reactor thread, and an unknown
user name costs a dummy hash of the same cost. The server passes the
process's one verifier; without one, verification runs inline (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from hurricane.config import SubmissionConfig
from hurricane.credentials import (
    FailureLimiter,
    PasswordBook,
    SecretVerifier,
    VerifierBusy,
    inline_runner,
)
from hurricane.passwords import is_password_hash

__all__ = ["AuthThrottle", "ISubmissionUser", "PasswordHashChecker", "SubmissionRealm",
           "SubmissionUser", "VerifierBusy", "build_portal", "load_users", "remembered_login"]

log = Logger()


class ISubmissionUser(Interface):
    """The avatar of an authenticated submission client."""

    name = Attribute("The user name (str).")


@implementer(ISubmissionUser)
@dataclass(frozen=True)
class SubmissionUser:
    """An authenticated submission user."""

    name: str


@implementer(IRealm)
class SubmissionRealm:
    """Hands out :class:`SubmissionUser` avatars."""

    def requestAvatar(self, avatarId: bytes | tuple[()], mind: object,
                      *interfaces: type[Interface]) -> tuple[type[Interface], object,
                                                             Callable[[], None]]:
        """Return ``(ISubmissionUser, user, logout)``."""
        if ISubmissionUser not in interfaces:
            raise NotImplementedError("only ISubmissionUser avatars")
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else str(avatarId)
        return ISubmissionUser, SubmissionUser(name), lambda: None


@implementer(ICredentialsChecker)
class PasswordHashChecker:
    """Checks user names and passwords against ``name -> hash``.

    Args:
        users: user name -> hash from :func:`hurricane.passwords.hash_password`.
        verifier: where the hashing runs (the server's thread pool).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Mapping[str, str], verifier: SecretVerifier) -> None:
        self.users = dict(users)
        self.book = PasswordBook(users, verifier)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """Fire with the user name (bytes), or fail with UnauthorizedLogin
        (or :class:`VerifierBusy` when the pool has too much waiting)."""
        try:
            name: str = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (AttributeError, UnicodeDecodeError):
            return defer.fail(UnauthorizedLogin())

        def decide(ok: bool) -> bytes:
            if ok:
                return name.encode("utf-8")
            raise UnauthorizedLogin()

        return self.book.check(name, password).addCallback(decide)

    def remembered(self, username: bytes, password: bytes) -> bool:
        """True when these credentials were verified already (no hashing)."""
        try:
            return self.book.remembered(username.decode("utf-8"), password.decode("utf-8"))
        except UnicodeDecodeError:
            return False


def remembered_login(portal: Portal | None, username: bytes, password: bytes) -> bool:
    """True when ``portal``'s password checker verified these credentials already.

    What an address blocked after failures may still do: log in with what
    costs no pbkdf2 (issue 23's second review, as the web does).
    """
    if portal is None:
        return False
    return any(isinstance(checker, PasswordHashChecker)
               and checker.remembered(username, password)
               for checker in portal.checkers.values())


def load_users(config: SubmissionConfig) -> dict[str, str]:
    """The users of ``[submission] users`` plus those of ``users_file``.

    Raises:
        ValueError: naming the file and line for a malformed users file.
    """
    users = dict(config.users)
    if config.users_file:
        try:
            with open(config.users_file, encoding="utf-8") as fp:
                lines = fp.read().splitlines()
        except OSError as e:
            raise ValueError(f"{config.users_file}: cannot read users: {e.strerror}") from None
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, encoded = line.partition(":")
            if not sep or not name or not encoded:
                raise ValueError(f"{config.users_file}:{number}: expected name:hash")
            if not is_password_hash(encoded.strip()):
                raise ValueError(f"{config.users_file}:{number}: expected a password hash "
                                 "from 'hurricane passwd' (pbkdf2_sha256$...)")
            users[name.strip()] = encoded.strip()
    return users


def build_portal(users: Mapping[str, str], verifier: SecretVerifier | None = None) -> Portal:
    """A portal with the password-hash checker over ``users``.

    Args:
        users: name -> hash.
        verifier: where the hashing runs; None verifies inline (tests only).
    """
    checker = PasswordHashChecker(users, verifier or SecretVerifier(inline_runner))
    return Portal(SubmissionRealm(), [checker])


class AuthThrottle(FailureLimiter):
    """Blocks AUTH from an address after repeated failures (kept per factory).

    An address (an IPv6 /64) that fails ``max_failures`` times within
    ``block_seconds`` (across connections) may not try AUTH again, and is
    not verified at all, until enough of those failures are older than
    ``block_seconds``.

    Args:
        clock: the injected reactor time.
        max_failures: failures that trigger the block.
        block_seconds: the window and the block length.
    """

    def __init__(self, clock: IReactorTime, max_failures: int, block_seconds: float) -> None:
        super().__init__(clock, max_failures, block_seconds)
        self.block_seconds = block_seconds
