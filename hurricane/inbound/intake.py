"""The processor's intake: returned messages waiting for analysis, and those in flight.

Bounded: beyond ``max_queued`` ids an id is refused (it stays pending in the
store and a later sweep picks it up), so a flood costs memory per message
only up to the bound. An id is never queued twice nor queued while in
flight; a replay asked for a message already queued upgrades the queued
entry, one asked while it is in flight runs after it.
"""

from __future__ import annotations

import collections

from twisted.internet.defer import Deferred

from hurricane.inbound.results import ProcessResult

__all__ = ["Intake", "Item"]

#: One queued message: its id and whether it is a replay (analyzed whatever
#: its status).
Item = tuple[int, bool]


class Intake:
    """Queued and in-flight returned messages, and who waits for them.

    Args:
        max_queued: ids kept in memory at most.
    """

    def __init__(self, max_queued: int) -> None:
        self._max_queued = max_queued
        self._queue: collections.deque[Item] = collections.deque()
        self._queued: set[int] = set()
        #: Message id -> the Deferred of the batch it is part of.
        self._inflight: dict[int, Deferred[list[ProcessResult]]] = {}
        #: Replays (or not) asked while the message was in flight.
        self._after_inflight: dict[int, bool] = {}
        self._waiters: dict[int, list[Deferred[ProcessResult]]] = {}

    @property
    def queued(self) -> int:
        """Messages waiting."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Messages in a batch being processed."""
        return len(self._inflight)

    def put(self, bounce_id: int, replay: bool) -> bool | None:
        """Queue a message.

        Returns:
            True when queued; False when it was queued or in flight already
            (a replay is remembered); None when the queue is full (a replay
            is queued whatever the bound: someone waits for it).
        """
        if bounce_id in self._inflight:
            if replay:
                self._after_inflight[bounce_id] = True
            return False
        if bounce_id in self._queued:
            if replay:  # upgrade the queued entry so an analyzed message is redone
                self._queue = collections.deque(
                    (b, r or b == bounce_id) for b, r in self._queue)
            return False
        if len(self._queue) >= self._max_queued and not replay:
            return None
        self._queue.append((bounce_id, replay))
        self._queued.add(bounce_id)
        return True

    def take(self, most: int) -> list[Item]:
        """Up to ``most`` queued messages, in order, off the queue."""
        items: list[Item] = []
        while self._queue and len(items) < most:
            item = self._queue.popleft()
            self._queued.discard(item[0])
            items.append(item)
        return items

    def put_back(self, items: list[Item]) -> None:
        """Back in front of the queue, in order (to be retried)."""
        for item in reversed(items):
            self._queue.appendleft(item)
            self._queued.add(item[0])

    def clear(self) -> list[Item]:
        """Empty the queue and forget replays asked in flight; what was queued."""
        items = list(self._queue)
        self._queue.clear()
        self._queued.clear()
        self._after_inflight.clear()
        return items

    def flying(self, items: list[Item], d: Deferred[list[ProcessResult]]) -> None:
        """These messages are being processed, in the batch of ``d``."""
        for bounce_id, _ in items:
            self._inflight[bounce_id] = d

    def landed(self, bounce_id: int) -> bool | None:
        """A message's batch finished: no longer in flight.

        Returns:
            The replay flag of a request made meanwhile (None: none was).
        """
        self._inflight.pop(bounce_id, None)
        return self._after_inflight.pop(bounce_id, None)

    def wait(self, bounce_id: int) -> Deferred[ProcessResult]:
        """A Deferred firing with what becomes of this message."""
        d: Deferred[ProcessResult] = Deferred()
        self._waiters.setdefault(bounce_id, []).append(d)
        return d

    def resolve(self, bounce_id: int, outcome: ProcessResult) -> None:
        """Tell whoever waits for this message what became of it."""
        for w in self._waiters.pop(bounce_id, []):
            w.callback(outcome)
