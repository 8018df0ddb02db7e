"""Policy events to the accounting log and the webhooks (issue 19, item 5).

The policy events live in their own table (``policy_events``: a provider's
action has no delivery row). :class:`PolicyFeed` follows it the way
:class:`~hurricane.accounting.EventFeed` follows the event table: from a
cursor file of its own, at least once, in order; a failed batch is read
again after ``retry_delay``.

Ids come from a sequence on PostgreSQL, so a later id may commit first; the
feed reads only events older than ``settle`` seconds (a policy transaction
is a few statements long), which keeps it from stepping over one that is
about to commit.

- accounting: one line per action, ``"type": "Policy"``, with the action's
  fields (``scope``, ``subject``, ``action``, ``cause``, ``before``,
  ``after``, ``evidence``, ``until``, ``node``);
- webhooks: ``"type": "policy"`` items, to the endpoints whose ``mode`` is
  ``every`` and whose ``events`` list is empty or names ``policy``.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Awaitable, Callable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from hurricane.accounting import AccountingService, CursorFile
from hurricane.outcome import EventKind
from hurricane.store.policy import PolicyEvent, PolicyStore
from hurricane.webhooks import WebhookService

__all__ = ["PolicyFeed", "accounting_handler", "policy_item", "webhook_handler"]

log = Logger()

#: Seconds an event must be old before the feed reads it.
SETTLE = 5.0


def policy_item(event: PolicyEvent) -> dict[str, object]:
    """One policy event as an accounting line / webhook item."""
    a = event.action
    at = datetime.datetime.fromtimestamp(a.at, datetime.UTC)
    return {"type": EventKind.policy.value, "policy_event_id": event.event_id,
            "timestamp": a.at, "time": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            **{k: v for k, v in a.as_json().items() if k != "at"}, "node": event.node}


class PolicyFeed(Service):
    """Follows ``policy_events`` from a cursor and hands each batch on.

    Args:
        name: for logs (``policy-accounting``, ``policy-webhook:crm``).
        store: the policy store.
        clock: polls and retries.
        cursor: the position file.
        handle: takes one batch; raise to have it read again.
        poll_interval: seconds between reads.
        batch: events per read.
    """

    def __init__(self, name: str, store: PolicyStore, clock: IReactorTime, cursor: CursorFile,
                 handle: Callable[[Sequence[PolicyEvent]], Awaitable[None]], *,
                 poll_interval: float = 1.0, batch: int = 200) -> None:
        self.setName(name)  # type: ignore[no-untyped-call]
        self.store = store
        self.clock = clock
        self.cursor = cursor
        self.handle = handle
        self.poll_interval = poll_interval
        self.batch = batch
        self.position = cursor.load()
        self.failures = 0
        self._call: IDelayedCall | None = None
        self._step: Deferred[bool] | None = None

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        """Start following."""
        super().startService()  # type: ignore[no-untyped-call]
        self._schedule(0)

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 (Twisted API)
        """Stop; the Deferred fires when a step in progress is over."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._step is None:
            return None
        done: Deferred[None] = Deferred()
        self._step.addBoth(lambda _: done.callback(None))
        return done

    def _schedule(self, delay: float) -> None:
        if self.running and self._call is None:
            self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        step = Deferred.fromCoroutine(self.step())
        self._step = step

        def done(more: bool) -> None:
            self._step = None
            self._schedule(0 if more else self.poll_interval)

        def failed(failure: Failure) -> None:
            self._step = None
            self.failures += 1
            log.failure("{feed}: batch failed, retrying", failure, feed=self.name)
            self._schedule(min(60.0, self.poll_interval * 2 ** min(self.failures, 6)))

        step.addCallbacks(done, failed)

    async def step(self) -> bool:
        """Read and hand on one batch; True when there may be more at once."""
        events = await self.store.policy_events(after=self.position, limit=self.batch)
        settled = self.clock.seconds() - SETTLE
        ready = [e for e in events if e.action.at <= settled]
        if len(ready) < len(events):
            # keep the order: stop at the first one too young
            ready = events[:next(i for i, e in enumerate(events) if e.action.at > settled)]
        if not ready:
            return False
        await self.handle(ready)
        self.position = ready[-1].event_id
        self.cursor.save(self.position, self.clock.seconds())
        self.failures = 0
        return len(ready) == self.batch


def accounting_handler(service: AccountingService
                       ) -> Callable[[Sequence[PolicyEvent]], Awaitable[None]]:
    """Lines in the accounting service's log (written and fsynced like its own)."""

    async def handle(events: Sequence[PolicyEvent]) -> None:
        logfile = service.logfile
        for event in events:
            logfile.write(json.dumps(policy_item(event), separators=(",", ":")).encode()
                          + b"\n")
        logfile.flush()
        if service.fsync:
            fd = os.open(logfile.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    return handle


def webhook_handler(endpoint: WebhookService
                    ) -> Callable[[Sequence[PolicyEvent]], Awaitable[None]] | None:
    """POSTs to one endpoint, or None when it does not take policy events."""
    config = endpoint.config
    if config.mode != "every" or (config.events and EventKind.policy.value
                                  not in config.events):
        return None

    async def handle(events: Sequence[PolicyEvent]) -> None:
        await endpoint.post_items([policy_item(e) for e in events])

    return handle
