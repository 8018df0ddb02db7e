"""Submission authentication: a twisted.cred checker over hashed passwords, and a throttle.

Users come from ``[submission] users`` (name -> hash) and ``users_file``
(``name:hash`` lines). Passwords are verified with
:func:`hurricane.passwords.verify_password`; PBKDF2 costs about 0.1 s of CPU,
so the checker takes a ``run_hash`` callable to move it off the reactor thread
(``tap.py`` passes ``deferToThreadPool``); by default it runs inline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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
from hurricane.passwords import ITERATIONS, verify_password

log = Logger()

#: Verified when the user name is unknown, so that the answer takes as long
#: as for a known user (no user-name oracle through timing).
_DUMMY_HASH = (f"pbkdf2_sha256${ITERATIONS}$AAAAAAAAAAAAAAAAAAAAAA==$"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")

RunHash = Callable[[Callable[[], bool]], "Deferred[bool]"]


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

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
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
        run_hash: runs the verification (a thread pool in production);
            None runs it inline.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Mapping[str, str], run_hash: RunHash | None = None) -> None:
        self.users = dict(users)
        self.run_hash = run_hash

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes | tuple[()]]:
        """Fire with the user name (bytes) or fail with UnauthorizedLogin."""
        try:
            name: str = credentials.username.decode("utf-8")
            password = credentials.password.decode("utf-8")
        except (AttributeError, UnicodeDecodeError):
            return defer.fail(UnauthorizedLogin())
        known = name in self.users
        encoded = self.users.get(name, _DUMMY_HASH)

        def verify() -> bool:
            return verify_password(password, encoded)

        d: Deferred[bool]
        if self.run_hash is None:
            d = defer.maybeDeferred(verify)
        else:
            d = self.run_hash(verify)

        def decide(ok: bool) -> bytes:
            if ok and known:
                return name.encode("utf-8")
            raise UnauthorizedLogin()

        return d.addCallback(decide)


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
            users[name.strip()] = encoded.strip()
    return users


def build_portal(users: Mapping[str, str], run_hash: RunHash | None = None) -> Portal:
    """A portal with the password-hash checker over ``users``."""
    return Portal(SubmissionRealm(), [PasswordHashChecker(users, run_hash)])


class AuthThrottle:
    """Blocks AUTH from an address after repeated failures (kept per factory).

    An address that fails ``max_failures`` times within ``block_seconds``
    (across connections) may not try AUTH again until ``block_seconds`` after
    its last failure.

    Args:
        clock: the injected reactor time.
        max_failures: failures that trigger the block.
        block_seconds: the window and the block length.
    """

    _SWEEP_EVERY = 1000

    def __init__(self, clock: IReactorTime, max_failures: int, block_seconds: float) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.block_seconds = block_seconds
        self._failures: dict[str, list[float]] = {}
        self._calls = 0

    def _recent(self, ip: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(ip, ()) if now - t < self.block_seconds]
        if times:
            self._failures[ip] = times
        else:
            self._failures.pop(ip, None)
        return times

    def is_blocked(self, ip: str) -> bool:
        """True while ``ip`` may not try AUTH."""
        return len(self._recent(ip, self.clock.seconds())) >= self.max_failures

    def record_failure(self, ip: str) -> bool:
        """Count one failure; return True when ``ip`` is now blocked."""
        now = self.clock.seconds()
        times = self._recent(ip, now)
        times.append(now)
        self._failures[ip] = times
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            # Bound memory under a spray of addresses.
            for other in list(self._failures):
                self._recent(other, now)
        blocked = len(times) >= self.max_failures
        if blocked:
            log.warn("AUTH blocked for {ip} for {seconds} s after {failures} failures",
                     ip=ip, seconds=self.block_seconds, failures=len(times))
        return blocked

