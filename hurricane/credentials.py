"""Checking passwords and tokens without stalling the reactor.

One place verifies every secret of the server (web users and API tokens,
submission AUTH, the admin console's passwords):

- :class:`SecretVerifier` runs pbkdf2 through an injected runner: a bounded
  thread pool in production (``hurricane.app`` gives it a pool of its own, so
  that a flood of wrong passwords cannot delay DKIM signing or bounce
  analysis), a synchronous fake in tests. At most ``max_pending``
  pbkdf2 hashes wait for the pool; past that it refuses at once
  (:class:`VerifierBusy`) instead of queueing CPU work without bound. Answers
  are cached under an HMAC of the secret with a per-process key, so a client
  that logs in again (or repeats a wrong secret) costs no hashing.
- :class:`PasswordBook` checks ``name -> pbkdf2 hash``. An unknown name is
  verified against a dummy hash of the same cost, and answers are cached per
  user name, known or not, so neither timing nor the cache tells which names
  exist.
- :class:`TokenBook` checks API tokens: a ``sha256$`` token is found by its
  digest in a dict on the calling thread (microseconds); tokens hashed with
  pbkdf2 by earlier versions are still accepted, verified in the pool.
- :class:`FailureLimiter` counts failures per client address in a sliding
  window on an injected clock; over the limit, callers refuse without
  hashing at all.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from hurricane.passwords import (
    dummy_password_hash,
    pbkdf2_iterations,
    token_digest,
    token_hash_digest,
    verify_password,
)

__all__ = [
    "Attempt",
    "FailureLimiter",
    "PasswordBook",
    "Runner",
    "SecretVerifier",
    "TokenBook",
    "VerifierBusy",
    "address_key",
    "inline_runner",
    "threadpool_runner",
]

log = Logger()

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)

#: pbkdf2 hashes that may wait for the pool at once. One pool thread works
#: through 32 (~40 ms each) in about 1.3 s: beyond that a caller waits longer
#: than any client should, and the work only piles up.
MAX_PENDING = 32


class Runner(Protocol):
    """Runs CPU-bound work and fires a Deferred with its result on the reactor thread."""

    def __call__(self, work: Callable[[], _T], /) -> Deferred[_T]:
        """Run ``work``; the Deferred fires with what it returns (or fails with what it raises)."""


def inline_runner(work: Callable[[], _T]) -> Deferred[_T]:
    """Run ``work`` at once on the calling thread.

    For tests and one-shot tools only: on a server's reactor thread it is the
    very stall this module exists to avoid.
    """
    return defer.maybeDeferred(work)


def threadpool_runner(reactor: IReactorFromThreads, pool: ThreadPool) -> Runner:
    """A :class:`Runner` over ``pool``; results come back through ``reactor``."""

    def run(work: Callable[[], _T]) -> Deferred[_T]:
        return deferToThreadPool(reactor, pool, work)

    return run


class VerifierBusy(Exception):
    """Too many verifications are waiting for the pool: try again shortly."""


def _first_match(secret: str, hashes: Sequence[str]) -> int | None:
    """The index of the first pbkdf2 hash ``secret`` matches (runs in the pool)."""
    for index, encoded in enumerate(hashes):
        if verify_password(secret, encoded):
            return index
    return None


class SecretVerifier:
    """Verifies secrets against pbkdf2 hashes through ``run``, remembering answers.

    Args:
        run: runs the hashing (a thread pool; :func:`inline_runner` in tests).
        max_pending: pbkdf2 hashes that may wait for ``run`` at once (a
            verification against several hashes counts each).
        cache_size: answers remembered (each of successes and failures).

    Attributes:
        verifications: pbkdf2 jobs handed to ``run`` (cache misses).
        refused_busy: verifications refused because ``max_pending`` were waiting.
    """

    def __init__(self, run: Runner, *, max_pending: int = MAX_PENDING,
                 cache_size: int = 1024) -> None:
        self._run = run
        self._max_pending = max_pending
        self._cache_size = cache_size
        # Cache keys are MACs under a key that never leaves the process, so
        # the cache holds nothing an attacker could test guesses against.
        self._key = os.urandom(32)
        self._matched: OrderedDict[bytes, int] = OrderedDict()
        self._failed: OrderedDict[bytes, None] = OrderedDict()
        self.pending = 0
        self.verifications = 0
        self.refused_busy = 0

    def _cache_key(self, secret: str, hashes: Sequence[str], scope: str) -> bytes:
        # JSON keeps the encoding of (scope, hashes, secret) one-to-one.
        text = json.dumps([scope, list(hashes), secret])
        return hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def match(self, secret: str, hashes: Sequence[str], *,
              scope: str = "") -> Deferred[int | None]:
        """Which of ``hashes`` ``secret`` matches.

        Args:
            secret: the password or token presented.
            hashes: pbkdf2 hashes to try, in order.
            scope: what else the answer is remembered under (the user name):
                the same secret and hashes in another scope are verified
                again.

        Returns:
            A Deferred firing with the index of the first matching hash, or
            None; it fails with :class:`VerifierBusy` when these hashes would
            bring the waiting ones over ``max_pending``.
        """
        key = self._cache_key(secret, hashes, scope)
        if key in self._matched:
            self._matched.move_to_end(key)
            return defer.succeed(self._matched[key])
        if key in self._failed:
            self._failed.move_to_end(key)
            return defer.succeed(None)
        # Pending work is counted in pbkdf2 hashes: a wrong token tried
        # against ten older pbkdf2 tokens costs ten. One job alone always
        # runs, whatever its size, so any configuration can still log in.
        cost = max(1, len(hashes))
        if self.pending and self.pending + cost > self._max_pending:
            self.refused_busy += 1
            if self.refused_busy == 1 or self.refused_busy % 1000 == 0:
                log.warn("password verification busy: {pending} waiting, {refused} refused "
                         "so far", pending=self.pending, refused=self.refused_busy)
            return defer.fail(VerifierBusy())
        self.pending += cost
        self.verifications += 1
        frozen = tuple(hashes)
        d = self._run(lambda: _first_match(secret, frozen))

        def done(index: int | None) -> int | None:
            self.pending -= cost
            if index is not None:
                self._matched[key] = index
                if len(self._matched) > self._cache_size:
                    self._matched.popitem(last=False)
            else:
                self._failed[key] = None
                if len(self._failed) > self._cache_size:
                    self._failed.popitem(last=False)
            return index

        def failed(reason: Failure) -> Failure:
            self.pending -= cost
            return reason

        return d.addCallbacks(done, failed)

    def remembered(self, secret: str, hashes: Sequence[str], *, scope: str = "") -> int | None:
        """The index a remembered success of ``secret`` matched, or None; never hashes.

        For callers that must not start pbkdf2 work (an address blocked after
        failures) but may still let in a secret already proven right.
        """
        key = self._cache_key(secret, hashes, scope)
        index = self._matched.get(key)
        if index is not None:
            self._matched.move_to_end(key)
        return index


class PasswordBook:
    """User names and their pbkdf2 hashes.

    Args:
        hashes: name -> hash from ``hurricane passwd``.
        verifier: where the hashing runs.
    """

    def __init__(self, hashes: Mapping[str, str], verifier: SecretVerifier) -> None:
        # A value that is not a pbkdf2 hash (config validation refuses it)
        # admits nobody: its name is treated as unknown.
        self._hashes = {name: value for name, value in hashes.items()
                        if pbkdf2_iterations(value) is not None}
        self._dummy = dummy_password_hash(self._hashes.values())
        self.verifier = verifier
        self.configured = bool(hashes)

    def __bool__(self) -> bool:
        return self.configured

    def check(self, name: str, password: str) -> Deferred[bool]:
        """True when ``password`` is ``name``'s.

        An unknown name costs one pbkdf2 of the usual cost, like a known one.
        The answer is remembered for this name only: every unknown name
        shares the dummy hash, so remembered by (hash, password) alone, one
        wrong password for an unknown name would answer every other unknown
        name with that password at once, while a real name costs a hash (a
        user-name oracle, issue 23's second review).

        Returns:
            A Deferred firing with the answer (or failing with :class:`VerifierBusy`).
        """
        encoded = self._hashes.get(name)
        known = encoded is not None
        d = self.verifier.match(password, (encoded if encoded is not None else self._dummy,),
                                scope="user:" + name)
        return d.addCallback(lambda index: known and index == 0)

    def remembered(self, name: str, password: str) -> bool:
        """True when ``password`` was already verified as ``name``'s; never hashes."""
        encoded = self._hashes.get(name)
        return encoded is not None and self.verifier.remembered(
            password, (encoded,), scope="user:" + name) == 0


class TokenBook:
    """API tokens: ``sha256$`` digests looked up directly, older pbkdf2 ones in the pool.

    Args:
        hashes: name -> token hash (``[web.tokens]``).
        verifier: where pbkdf2 tokens are verified.
    """

    def __init__(self, hashes: Mapping[str, str], verifier: SecretVerifier) -> None:
        self._by_digest: dict[str, tuple[str, str]] = {}
        self._legacy: list[tuple[str, str]] = []
        for name, value in hashes.items():
            digest = token_hash_digest(value)
            if digest is not None:
                self._by_digest[digest] = (name, digest)
            elif pbkdf2_iterations(value) is not None:
                self._legacy.append((name, value))
        self.verifier = verifier
        self.configured = bool(hashes)

    def __bool__(self) -> bool:
        return self.configured

    @property
    def pbkdf2_names(self) -> list[str]:
        """Names of tokens still hashed with pbkdf2 (each wrong token costs all of them)."""
        return [name for name, _ in self._legacy]

    def check(self, token: str) -> Deferred[str | None]:
        """The name of the token, or None.

        Returns:
            A Deferred firing with the name (at once for ``sha256$`` tokens),
            or failing with :class:`VerifierBusy`.
        """
        name = self._by_sha256(token)
        if name is not None:
            return defer.succeed(name)
        if not self._legacy:
            return defer.succeed(None)
        d = self.verifier.match(token, [encoded for _, encoded in self._legacy])
        return d.addCallback(lambda index: None if index is None else self._legacy[index][0])

    def _by_sha256(self, token: str) -> str | None:
        digest = token_digest(token)
        # The dict lookup compares the digest of the guess, whose timing says
        # nothing usable about a token (that would take a SHA-256 preimage);
        # the final equality is constant-time all the same.
        entry = self._by_digest.get(digest)
        if entry is not None and hmac.compare_digest(entry[1], digest):
            return entry[0]
        return None

    def remembered(self, token: str) -> str | None:
        """The token's name when it costs no pbkdf2 to know: a ``sha256$`` token
        (one digest), or an older pbkdf2 token already verified. None otherwise."""
        name = self._by_sha256(token)
        if name is not None or not self._legacy:
            return name
        index = self.verifier.remembered(token, [encoded for _, encoded in self._legacy])
        return None if index is None else self._legacy[index][0]


def address_key(host: str) -> str:
    """The unit a client is limited by: its IPv4 address, or its IPv6 /64.

    One IPv6 host usually holds a whole /64, so counting single addresses
    there would not limit anyone.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Attempt:
    """A verification in flight, counted as a failure until it succeeds.

    Counting it at once keeps the limit when many attempts from one address
    arrive before the first answer.
    """

    def __init__(self, limiter: FailureLimiter, key: str, at: float) -> None:
        self._limiter = limiter
        self._key = key
        self._at = at
        self._settled = False

    def succeeded(self) -> None:
        """The secret was right: withdraw the provisional failure."""
        if not self._settled:
            self._settled = True
            self._limiter._withdraw(self._key, self._at)

    def failed(self) -> None:
        """The secret was wrong: the failure stands."""
        if not self._settled:
            self._settled = True
            self._limiter._failed(self._key)


class FailureLimiter:
    """Blocks an address after ``max_failures`` failures within ``window`` seconds.

    A blocked address stays blocked until enough of its failures are older
    than ``window``; callers refuse it without verifying anything.

    Args:
        clock: the injected reactor time.
        max_failures: failures within the window that block.
        window: the window, in seconds.
        max_addresses: addresses remembered; past it the least recently
            failing are forgotten (bounded memory under a spray of addresses).
    """

    _SWEEP_EVERY = 1000

    def __init__(self, clock: IReactorTime, max_failures: int, window: float,
                 max_addresses: int = 65536) -> None:
        self.clock = clock
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._calls = 0

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0.0 when it may now."""
        now = self.clock.seconds()
        times = self._recent(address_key(address), now)
        if len(times) < self.max_failures:
            return 0.0
        # The moment enough failures have left the window to go under the limit.
        return max(0.0, sorted(times)[len(times) - self.max_failures] + self.window - now)

    def is_blocked(self, address: str) -> bool:
        """True while ``address`` may not try."""
        return self.retry_after(address) > 0.0

    def _add(self, key: str, now: float) -> list[float]:
        times = self._recent(key, now)
        times.append(now)
        self._failures[key] = times
        self._failures.move_to_end(key)
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            for other in list(self._failures):
                self._recent(other, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return times

    def record_failure(self, address: str) -> bool:
        """Count one failure; True when ``address`` is now blocked."""
        key = address_key(address)
        times = self._add(key, self.clock.seconds())
        blocked = len(times) >= self.max_failures
        if blocked:
            self._failed(key)
        return blocked

    def attempt(self, address: str) -> Attempt | None:
        """Start a verification for ``address``: None when it is blocked.

        The attempt counts as a failure from now on unless
        :meth:`Attempt.succeeded` withdraws it.
        """
        if self.is_blocked(address):
            return None
        key = address_key(address)
        now = self.clock.seconds()
        self._add(key, now)
        return Attempt(self, key, now)

    def _withdraw(self, key: str, at: float) -> None:
        times = self._failures.get(key)
        if times and at in times:
            times.remove(at)
            if not times:
                del self._failures[key]

    def _failed(self, key: str) -> None:
        if len(self._failures.get(key, ())) == self.max_failures:
            log.warn("logins blocked for {address} for {seconds} s after {failures} failures",
                     address=key, seconds=self.window, failures=self.max_failures)
