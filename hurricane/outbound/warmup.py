"""Warm-up: how many messages a new sending address may send per day and provider.

A schedule is ``[[day, limit], ...]``: from an address's first use for a
provider (day 1), the day's limit is that of the last step whose day has
come; after the last step there is no limit (the address is warm). Days are
counted from the first use, 86,400 seconds each, on the injected clock.

:class:`Warmup` keeps, per (address, provider), the count of the current
day; :meth:`Warmup.take` grants at most what is left, so the limit holds
exactly however many connections share the address. Providers are whatever
:data:`ProviderOf` says (by default the MX host's parent domain: an MX-domain
roll-up; issue 19's named providers replace the function).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from hurricane.store.transport import FirstUse

__all__ = ["CURVES", "DAY", "ProviderOf", "Warmup", "WarmupSchedule", "mx_provider"]

DAY = 86400.0

#: Named curves: each doubles from 50 a day until the address is warm.
CURVES: Mapping[str, tuple[tuple[int, int], ...]] = {
    "standard": tuple((d, 50 * 2 ** (d - 1)) for d in range(1, 13)),
    "slow": tuple((d, 25 * 2 ** ((d - 1) // 2)) for d in range(1, 25)),
}

#: (recipient domain, MX host) -> provider name.
ProviderOf = Callable[[str, str], str]


def mx_provider(domain: str, mx_host: str) -> str:
    """The provider of a destination: the MX host's last two labels (``google.com``
    for ``alt1.gmail-smtp-in.l.google.com``), else (no name: a route to an
    address) the domain."""
    host = mx_host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        host = ""
    labels = [part for part in host.split(".") if part]
    return ".".join(labels[-2:]) if labels else domain.lower().rstrip(".")


@dataclass(frozen=True)
class WarmupSchedule:
    """Daily limits by day of use."""

    steps: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, steps: Sequence[Sequence[int]], curve: str = "") -> WarmupSchedule | None:
        """The schedule of a pool's settings (None: no warm-up)."""
        if curve:
            return cls(CURVES[curve])
        if not steps:
            return None
        return cls(tuple((int(s[0]), int(s[1])) for s in steps))

    def limit(self, day: int) -> int | None:
        """The limit on ``day`` (1 = the day of first use); None = no limit."""
        if day > self.steps[-1][0]:
            return None
        found = self.steps[0][1]
        for step_day, limit in self.steps:
            if step_day <= day:
                found = limit
        return found


class Warmup:
    """Counts what each address sent to each provider today, against its schedule.

    Args:
        clock: the time.
        schedules: address -> its schedule (an address without one is not limited).
    """

    def __init__(self, clock: IReactorTime, schedules: Mapping[str, WarmupSchedule]) -> None:
        self._clock = clock
        self._schedules = dict(schedules)
        self._first: dict[tuple[str, str], float] = {}
        #: (address, provider) -> (day of use, sent that day)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        #: Keys changed since :meth:`changed` was last called.
        self._dirty: set[tuple[str, str]] = set()

    def load(self, rows: Sequence[FirstUse]) -> None:
        """Known first uses and day counts (from the store): a restart keeps the day
        and what was sent on it."""
        for r in rows:
            key = (r.address, r.provider)
            self._first[key] = min(r.first_at, self._first.get(key, r.first_at))
            if r.day > 0:
                self._counts[key] = (r.day, r.sent)

    def changed(self) -> list[FirstUse]:
        """First uses and counts changed since the last call (the store keeps them)."""
        rows = []
        for key in sorted(self._dirty):
            day, sent = self._counts.get(key, (0, 0))
            rows.append(FirstUse(key[0], key[1], self._first[key], day, sent))
        self._dirty.clear()
        return rows

    def mark(self, rows: Sequence[FirstUse]) -> None:
        """Save these again at the next :meth:`changed` (a save failed)."""
        self._dirty.update((r.address, r.provider) for r in rows)

    def day(self, address: str, provider: str) -> int:
        """The day of use of (address, provider) now: 1 on the first day."""
        first = self._first.get((address, provider))
        if first is None:
            return 1
        return int((self._clock.seconds() - first) // DAY) + 1

    def remaining(self, address: str, provider: str) -> int | None:
        """Messages the address may still send to the provider today (None = no limit)."""
        schedule = self._schedules.get(address)
        if schedule is None:
            return None
        day = self.day(address, provider)
        limit = schedule.limit(day)
        if limit is None:
            return None
        counted_day, count = self._counts.get((address, provider), (day, 0))
        return max(0, limit - (count if counted_day == day else 0))

    def take(self, address: str, provider: str, wanted: int) -> int:
        """Count up to ``wanted`` messages sent now; return how many are granted."""
        left = self.remaining(address, provider)
        granted = wanted if left is None else min(wanted, left)
        if granted <= 0 or address not in self._schedules:
            return max(0, granted)
        key = (address, provider)
        self._first.setdefault(key, self._clock.seconds())
        day = self.day(address, provider)
        counted_day, count = self._counts.get(key, (day, 0))
        self._counts[key] = (day, (count if counted_day == day else 0) + granted)
        self._dirty.add(key)
        return granted
