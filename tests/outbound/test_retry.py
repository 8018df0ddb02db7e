"""Backoff and expiry."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import DeliveryConfig
from hurricane.outbound.retry import RetryPolicy, expired, next_attempt


class BackoffTests(SynchronousTestCase):
    """next_attempt doubles from first_retry up to the cap, with bounded jitter."""

    def test_doubling_and_cap(self) -> None:
        """Intervals are 300, 600, 1200... and never above max_retry_interval."""
        policy = RetryPolicy(first_retry=300, max_retry_interval=3000, jitter=0)
        self.assertEqual([policy.interval(n) for n in range(1, 7)],
                         [300, 600, 1200, 2400, 3000, 3000])
        self.assertEqual(policy.interval(10_000), 3000)

    def test_next_attempt_without_jitter(self) -> None:
        """Without jitter the next attempt is exactly now plus the interval."""
        policy = RetryPolicy(first_retry=60, max_retry_interval=3600, jitter=0)
        self.assertEqual(policy.next_attempt(3, 1000.0, random.Random(1)), 1240.0)

    def test_jitter_bounds(self) -> None:
        """Jitter spreads the interval within ± the fraction, and does spread it."""
        policy = RetryPolicy(first_retry=100, max_retry_interval=1000, jitter=0.2)
        rng = random.Random(3)
        delays = {policy.next_attempt(1, 0.0, rng) for _ in range(200)}
        self.assertTrue(all(80 <= d <= 120 for d in delays))
        self.assertGreater(max(delays) - min(delays), 20)

    def test_from_config(self) -> None:
        """The policy takes first_retry, max_retry_interval and retry_jitter from [delivery]."""
        policy = RetryPolicy.from_config(
            DeliveryConfig(first_retry=10, max_retry_interval=20, retry_jitter=0.1))
        self.assertEqual(policy, RetryPolicy(10, 20, 0.1))

    def test_function_form(self) -> None:
        """The module-level next_attempt uses the given policy."""
        self.assertEqual(next_attempt(2, 0.0, random.Random(0), RetryPolicy(5, 100, 0)), 10.0)


class ExpiryTests(SynchronousTestCase):
    """Expiry is by age since queueing, never by a count of attempts."""

    def test_expired_by_age(self) -> None:
        """A delivery older than max_age is expired; one just under it is not."""
        self.assertFalse(expired(created_at=1000.0, now=1000.0 + 3600, max_age=3600))
        self.assertTrue(expired(created_at=1000.0, now=1000.0 + 3601, max_age=3600))

    def test_not_by_count(self) -> None:
        """However many attempts were made, a young delivery does not expire."""
        policy = RetryPolicy(first_retry=1, max_retry_interval=2, jitter=0)
        now = 0.0
        for attempts in range(1, 100):
            now = policy.next_attempt(attempts, now, random.Random(0))
        self.assertFalse(expired(created_at=0.0, now=now, max_age=3600))
