"""The password and token verifier, the failure limiter and the hash formats."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from hurricane import passwords
from hurricane.credentials import (
    FailureLimiter,
    PasswordBook,
    SecretVerifier,
    TokenBook,
    VerifierBusy,
    address_key,
    inline_runner,
    threadpool_runner,
)
from hurricane.passwords import (
    dummy_password_hash,
    generate_token,
    hash_password,
    hash_token,
    is_password_hash,
    is_token_hash,
    pbkdf2_iterations,
    verify_password,
)
from tests.pools import Pbkdf2Recorder, QueuedRunner


class HashFormatTests(SynchronousTestCase):
    """Password hashes are pbkdf2; token hashes are sha256 digests; each knows its form."""

    def test_token_hash(self) -> None:
        """A token hash is sha256$ and 64 hex digits; a password hash is not a token hash."""
        token = generate_token()
        self.assertGreaterEqual(len(token), 43)
        encoded = hash_token(token)
        self.assertRegex(encoded, r"^sha256\$[0-9a-f]{64}$")
        self.assertTrue(is_token_hash(encoded))
        self.assertFalse(is_password_hash(encoded))
        self.assertFalse(verify_password(token, encoded))  # never a password
        for bad in ("sha256$", "sha256$xyz", "sha256$" + "g" * 64, "md5$" + "0" * 32):
            self.assertFalse(is_token_hash(bad), bad)

    def test_password_hash(self) -> None:
        """pbkdf2 hashes carry their iteration count, bounded; malformed ones are refused."""
        encoded = hash_password("pw", iterations=1000)
        self.assertEqual(pbkdf2_iterations(encoded), 1000)
        self.assertTrue(is_token_hash(encoded))  # older tokens keep working
        for bad in ("pbkdf2_sha256$10$AAAA$AAAA", "pbkdf2_sha256$x$AAAA$AAAA",
                    "pbkdf2_sha256$1000$!!$AAAA", "pbkdf2_sha256$1000$AAAA"):
            self.assertIsNone(pbkdf2_iterations(bad), bad)

    def test_dummy_hash_costs_like_the_users(self) -> None:
        """The dummy hash takes the most common iteration count, and matches no password."""
        hashes = [hash_password("a", iterations=1000), hash_password("b", iterations=1000),
                  hash_password("c", iterations=2000)]
        dummy = dummy_password_hash(hashes)
        self.assertEqual(pbkdf2_iterations(dummy), 1000)
        self.assertFalse(verify_password("", dummy))
        self.assertEqual(pbkdf2_iterations(dummy_password_hash([])), passwords.ITERATIONS)


class SecretVerifierTests(SynchronousTestCase):
    """pbkdf2 runs only through the runner, is cached, and is bounded."""

    def setUp(self) -> None:
        self.pool = QueuedRunner()
        self.verifier = SecretVerifier(self.pool, max_pending=2)
        self.hash = hash_password("right", iterations=1000)
        self.recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", self.recorder)

    def test_hash_runs_in_the_pool_only(self) -> None:
        """match() queues the hashing and returns; nothing is hashed on the caller's thread."""
        d = self.verifier.match("right", [self.hash])
        self.assertNoResult(d)
        self.assertEqual(self.recorder.calls, [])
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_all()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(len(self.recorder.calls), 1)

    def test_answers_cached(self) -> None:
        """A right and a wrong secret are each hashed once, then answered from the cache."""
        for secret, expected in (("right", 0), ("wrong", None)):
            d = self.verifier.match(secret, [self.hash])
            self.pool.run_all()
            self.assertEqual(self.successResultOf(d), expected)
            self.assertEqual(self.successResultOf(self.verifier.match(secret, [self.hash])),
                             expected)
        self.assertEqual(self.verifier.verifications, 2)
        self.assertEqual(self.pool.jobs, [])

    def test_bounded_pending(self) -> None:
        """Past max_pending waiting jobs, a verification fails at once with VerifierBusy."""
        first = [self.verifier.match(f"guess{i}", [self.hash]) for i in range(2)]
        self.failureResultOf(self.verifier.match("guess3", [self.hash]), VerifierBusy)
        self.assertEqual(len(self.pool.jobs), 2)
        self.assertEqual(self.verifier.refused_busy, 1)
        self.pool.run_all()
        for d in first:
            self.assertIsNone(self.successResultOf(d))
        d = self.verifier.match("guess3", [self.hash])
        self.assertNoResult(d)
        self.pool.run_all()
        self.assertIsNone(self.successResultOf(d))


    def test_pending_counts_hashes(self) -> None:
        """A verification against several hashes counts each; one alone always runs."""
        hashes = [self.hash] * 3
        d = self.verifier.match("a", hashes)  # 3 > max_pending, but nothing else waits
        self.assertEqual(self.verifier.pending, 3)
        self.failureResultOf(self.verifier.match("b", [self.hash]), VerifierBusy)
        self.pool.run_all()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.verifier.pending, 0)


class PasswordBookTests(SynchronousTestCase):
    """Known and unknown user names cost the same pbkdf2."""

    def test_unknown_name_hashes_like_a_known_one(self) -> None:
        """An unknown name is verified against a dummy hash of the users' iteration count."""
        pool = QueuedRunner()
        book = PasswordBook({"alice": hash_password("pw", iterations=1500)},
                            SecretVerifier(pool))
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        results = [book.check(name, password) for name, password in
                   (("alice", "pw"), ("alice", "nope"), ("mallory", "pw"))]
        self.assertEqual(recorder.calls, [])
        self.assertEqual(len(pool.jobs), 3)
        pool.run_all()
        self.assertEqual([self.successResultOf(d) for d in results], [True, False, False])
        self.assertEqual([iterations for _, iterations in recorder.calls], [1500] * 3)

    def test_names_cost_alike_in_every_order(self) -> None:
        """Known and unknown names cost the same pbkdf2 runs whatever came before: one
        for a (name, password) not tried yet, none for a repeat, so no priming failure
        with one unknown name makes another one answer at once (issue 23's second
        review: the failure cache was shared by every unknown name)."""
        hashes = {"alice": hash_password("pw", iterations=1000),
                  "bob": hash_password("other", iterations=1000)}
        attempts = [("alice", "guess"), ("nobody-1", "guess"), ("nobody-2", "guess"),
                    ("bob", "guess"), ("alice", "pw"), ("nobody-1", "pw")]
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        for order in itertools.permutations(attempts, 4):
            book = PasswordBook(hashes, SecretVerifier(inline_runner))
            costs = []
            for name, password in order + order[:2]:
                before = len(recorder.calls)
                self.successResultOf(book.check(name, password))
                costs.append(len(recorder.calls) - before)
            self.assertEqual(costs, [1, 1, 1, 1, 0, 0], order)

    def test_not_a_password_hash(self) -> None:
        """A fast token hash configured as a password admits nobody (and is hashed as a dummy)."""
        token = generate_token()
        pool = QueuedRunner()
        book = PasswordBook({"bob": hash_token(token)}, SecretVerifier(pool))
        d = book.check("bob", token)
        self.assertEqual(pool.run_all(), 1)
        self.assertFalse(self.successResultOf(d))


class TokenBookTests(SynchronousTestCase):
    """sha256 tokens are found by digest at once; pbkdf2 tokens go to the pool."""

    def setUp(self) -> None:
        self.pool = QueuedRunner()
        self.token = generate_token()
        self.legacy = "old-token-" + "x" * 20

    def test_fast_tokens(self) -> None:
        """A sha256 token is answered without any job, right or wrong."""
        book = TokenBook({"app": hash_token(self.token)}, SecretVerifier(self.pool))
        self.assertEqual(self.successResultOf(book.check(self.token)), "app")
        self.assertIsNone(self.successResultOf(book.check(self.token + "x")))
        self.assertEqual(self.pool.jobs, [])
        self.assertEqual(book.pbkdf2_names, [])

    def test_legacy_tokens(self) -> None:
        """A wrong token with pbkdf2 tokens configured costs one job trying them all."""
        book = TokenBook({"app": hash_token(self.token),
                          "old1": hash_password("other", iterations=1000),
                          "old2": hash_password(self.legacy, iterations=1000)},
                         SecretVerifier(self.pool))
        self.assertEqual(book.pbkdf2_names, ["old1", "old2"])
        self.assertEqual(self.successResultOf(book.check(self.token)), "app")
        d = book.check(self.legacy)
        wrong = book.check("nope")
        self.assertEqual(len(self.pool.jobs), 2)
        self.pool.run_all()
        self.assertEqual(self.successResultOf(d), "old2")
        self.assertIsNone(self.successResultOf(wrong))


class FailureLimiterTests(SynchronousTestCase):
    """Failures per address in a sliding window on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = FailureLimiter(self.clock, max_failures=3, window=60.0)

    def test_block_and_release(self) -> None:
        """Three failures block; the block lifts when the oldest failure leaves the window."""
        for second in (0, 10, 20):
            self.clock.advance(second - self.clock.seconds())
            self.assertFalse(self.limiter.is_blocked("198.51.100.7"))
            self.limiter.record_failure("198.51.100.7")
        self.assertTrue(self.limiter.is_blocked("198.51.100.7"))
        self.assertEqual(self.limiter.retry_after("198.51.100.7"), 40.0)
        self.assertFalse(self.limiter.is_blocked("198.51.100.8"))
        self.clock.advance(40)
        self.assertFalse(self.limiter.is_blocked("198.51.100.7"))
        self.assertIsNotNone(self.limiter.attempt("198.51.100.7"))

    def test_attempts_in_flight_count(self) -> None:
        """Attempts count at once (a burst cannot outrun the limit); a success withdraws its."""
        attempts = [self.limiter.attempt("198.51.100.7") for _ in range(3)]
        self.assertNotIn(None, attempts)
        self.assertIsNone(self.limiter.attempt("198.51.100.7"))
        attempts[0].succeeded()  # type: ignore[union-attr]
        attempts[1].failed()  # type: ignore[union-attr]
        again = self.limiter.attempt("198.51.100.7")
        self.assertIsNotNone(again)
        self.assertIsNone(self.limiter.attempt("198.51.100.7"))

    def test_ipv6_counts_by_64(self) -> None:
        """Addresses of one IPv6 /64 share a count; IPv4-mapped ones count as IPv4."""
        self.assertEqual(address_key("2001:db8:1:2::5"), "2001:db8:1:2::/64")
        self.assertEqual(address_key("::ffff:192.0.2.1"), "192.0.2.1")
        for i in range(3):
            self.limiter.record_failure(f"2001:db8:1:2::{i + 1}")
        self.assertTrue(self.limiter.is_blocked("2001:db8:1:2:ffff::1"))
        self.assertFalse(self.limiter.is_blocked("2001:db8:1:3::1"))

    def test_memory_bounded(self) -> None:
        """A spray of addresses keeps at most max_addresses of them."""
        limiter = FailureLimiter(self.clock, 3, 60.0, max_addresses=100)
        for i in range(1000):
            limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(limiter._failures), 100)


class ThreadPoolVerifierTests(TestCase):
    """With a real thread pool, pbkdf2 never runs on the reactor thread."""

    async def test_pbkdf2_off_the_reactor_thread(self) -> None:
        """Every pbkdf2 of a verification runs on a pool thread."""
        recorder = Pbkdf2Recorder()
        encoded = hash_password("pw", iterations=1000)
        self.patch(passwords, "hashlib", recorder)
        pool = ThreadPool(1, 2, name="test-auth")
        pool.start()
        self.addCleanup(pool.stop)
        verifier = SecretVerifier(threadpool_runner(reactor, pool))
        book = PasswordBook({"ops": encoded}, verifier)
        results: list[Any] = []
        for name, password in (("ops", "pw"), ("ops", "bad"), ("nobody", "pw")):
            results.append(await book.check(name, password))
        self.assertEqual(results, [True, False, False])
        self.assertEqual(len(recorder.calls), 3)
        self.assertNotIn(threading.get_ident(), recorder.threads())
