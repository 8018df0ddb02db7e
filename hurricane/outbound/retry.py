"""When to try a deferred delivery again, and when to give up.

The interval doubles from ``first_retry`` up to ``max_retry_interval``, with
a random spread of ``± jitter`` so that a destination that deferred a whole
mailing at once is not hit by all of it again at the same second. Giving up
is by age (``max_age`` since the message was queued), never by a count of
attempts: a count punishes destinations we happened to try often.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hurricane.config import DeliveryConfig

__all__ = ["RetryPolicy", "expired", "next_attempt"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    Attributes:
        first_retry: seconds before the first retry.
        max_retry_interval: the longest interval between two attempts.
        jitter: fraction of the interval added or removed at random (0.2 = ±20%).
    """

    first_retry: float = 300.0
    max_retry_interval: float = 14400.0
    jitter: float = 0.2

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> RetryPolicy:
        """The policy of a ``[delivery]`` section.

        Args:
            config: the delivery configuration.

        Returns:
            The policy.
        """
        return cls(config.first_retry, config.max_retry_interval, config.retry_jitter)

    def interval(self, attempts: int) -> float:
        """The interval before the next attempt, without jitter.

        Args:
            attempts: attempts made so far, including the one that just failed (>= 1).

        Returns:
            ``first_retry * 2 ** (attempts - 1)``, capped at ``max_retry_interval``.
        """
        n = max(1, attempts) - 1
        # cap the exponent: 2 ** 1000 would overflow the float multiply
        if n >= 64:
            return self.max_retry_interval
        return min(self.first_retry * (2.0**n), self.max_retry_interval)

    def next_attempt(self, attempts: int, now: float, rng: random.Random) -> float:
        """When the next attempt is due.

        Args:
            attempts: attempts made so far, including the one that just failed.
            now: the current time.
            rng: the random source of the jitter (seeded in tests).

        Returns:
            An absolute time, never earlier than ``now``.
        """
        base = self.interval(attempts)
        spread = base * self.jitter
        delay = base + rng.uniform(-spread, spread) if spread > 0 else base
        return now + max(0.0, delay)


def next_attempt(
    attempts: int, now: float, rng: random.Random, policy: RetryPolicy | None = None
) -> float:
    """:meth:`RetryPolicy.next_attempt` with a policy (defaults when None).

    Args:
        attempts: attempts made so far, including the one that just failed.
        now: the current time.
        rng: the random source of the jitter.
        policy: the backoff policy.

    Returns:
        An absolute time.
    """
    return (policy or RetryPolicy()).next_attempt(attempts, now, rng)


def expired(created_at: float, now: float, max_age: float) -> bool:
    """True when a delivery has been pending for longer than ``max_age``.

    Args:
        created_at: when the message was queued.
        now: the current time.
        max_age: seconds after which a still-deferred delivery expires.

    Returns:
        Whether to record ``expired`` instead of deferring again.
    """
    return now - created_at > max_age
