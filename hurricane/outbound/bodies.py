"""Message bodies for the delivery scheduler: loaded, normalised and signed once.

Two kinds of bytes are kept:

- *fresh* bodies, handed over by submission right after it committed them
  (:meth:`BodyCache.keep_fresh`), so that a message's first delivery need not
  read back from the store what was written a few milliseconds before.
  Bounded: at most ``fresh_bytes`` in all (oldest dropped first) and none
  older than ``fresh_seconds`` (a body nobody here takes: another node
  claimed the message, or a claim read the store first).
- *ready* bodies (normalised and DKIM-signed), kept while any delivery of
  that message is in flight (:meth:`hold` / :meth:`release`), so a message
  to many recipients is loaded and signed once.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from hurricane.outbound.prepare import normalise_message

__all__ = ["FRESH_BODY_BYTES", "FRESH_BODY_SECONDS", "BodyCache", "BodyCacheSettings"]

#: Bytes of just-submitted message bodies kept for their first delivery.
FRESH_BODY_BYTES = 8 * 1024 * 1024
#: Seconds a just-submitted body is kept at most.
FRESH_BODY_SECONDS = 10.0


class BodySource(Protocol):
    """Where bodies come from when they are not fresh (the store)."""

    async def load_body(self, message_pk: int) -> bytes:
        """The stored message bytes."""


class Signer(Protocol):
    """Signs a normalised message (DKIM)."""

    async def sign(self, message: bytes) -> bytes:
        """The message with its signature header(s) added."""


@dataclass(frozen=True)
class BodyCacheSettings:
    """Bounds of the fresh bodies.

    Attributes:
        fresh_bytes: bytes of fresh bodies kept in all; a body over a
            quarter of it is never kept.
        fresh_seconds: seconds a fresh body is kept at most.
    """

    fresh_bytes: int = FRESH_BODY_BYTES
    fresh_seconds: float = FRESH_BODY_SECONDS


class BodyCache:
    """The bytes to send for each message in flight.

    Args:
        source: loads a body that is not fresh.
        clock: the age of fresh bodies.
        signer: signs each message once, or None for no signing.
        settings: the bounds of the fresh bodies.
    """

    def __init__(self, source: BodySource, clock: IReactorTime, signer: Signer | None = None,
                 settings: BodyCacheSettings | None = None) -> None:
        self._source = source
        self._clock = clock
        self._signer = signer
        self._settings = settings or BodyCacheSettings()
        self._refs: Counter[int] = Counter()
        self._ready: dict[int, bytes] = {}
        self._loading: dict[int, list[Deferred[bytes]]] = {}
        #: (time kept, raw body) by message key, oldest first.
        self._fresh: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        self._fresh_bytes = 0

    # -- fresh bodies ----------------------------------------------------------

    @property
    def fresh(self) -> list[int]:
        """The keys of the fresh bodies kept, oldest first."""
        return list(self._fresh)

    @property
    def fresh_bytes(self) -> int:
        """The bytes of the fresh bodies kept."""
        return self._fresh_bytes

    def keep_fresh(self, message_pk: int, body: bytes) -> None:
        """Keep a just-committed body for its first delivery (within the bounds).

        Args:
            message_pk: the message's key.
            body: its raw bytes as stored.
        """
        if len(body) <= self._settings.fresh_bytes // 4 and message_pk not in self._fresh:
            self._fresh[message_pk] = (self._clock.seconds(), body)
            self._fresh_bytes += len(body)
        self.trim()

    def trim(self) -> None:
        """Drop the oldest fresh bodies: over the byte bound, or too old."""
        too_old = self._clock.seconds() - self._settings.fresh_seconds
        while self._fresh:
            kept, body = next(iter(self._fresh.values()))
            if self._fresh_bytes <= self._settings.fresh_bytes and kept > too_old:
                break
            self._fresh.popitem(last=False)
            self._fresh_bytes -= len(body)

    def clear_fresh(self) -> None:
        """Drop every fresh body (the service stops)."""
        self._fresh.clear()
        self._fresh_bytes = 0

    def _take_fresh(self, message_pk: int) -> bytes | None:
        entry = self._fresh.pop(message_pk, None)
        if entry is None:
            return None
        self._fresh_bytes -= len(entry[1])
        return entry[1]

    # -- bodies in flight ------------------------------------------------------

    def hold(self, message_pk: int) -> None:
        """A delivery of this message is now in flight: keep its body once loaded."""
        self._refs[message_pk] += 1

    def release(self, message_pk: int) -> None:
        """A delivery of this message left flight; the last one drops the body."""
        self._refs[message_pk] -= 1
        if self._refs[message_pk] <= 0:
            del self._refs[message_pk]
            self._ready.pop(message_pk, None)

    async def get(self, message_pk: int, sign: bool = True) -> bytes:
        """The normalised, signed bytes of a message, loaded and signed once.

        Args:
            message_pk: the message's key.
            sign: False for a message whose transactions add headers of their
                own and are signed then (a bulk stream's List-Unsubscribe):
                every delivery of a message asks the same way.

        Returns:
            the bytes to send.

        Raises:
            Exception: whatever loading or signing raised (every caller
                waiting for the same load gets it).
        """
        cached = self._ready.get(message_pk)
        if cached is not None:
            return cached
        waiters = self._loading.get(message_pk)
        if waiters is not None:
            # Another transaction is loading it: wait for that one. Each
            # waiter gets its own Deferred (a Deferred awaited twice would
            # hand the second awaiter None).
            d: Deferred[bytes] = Deferred()
            waiters.append(d)
            return await d
        self._loading[message_pk] = []
        try:
            raw = self._take_fresh(message_pk)
            if raw is None:
                raw = await self._source.load_body(message_pk)
            message = normalise_message(raw)
            if self._signer is not None and sign:
                message = await self._signer.sign(message)
        except BaseException as e:
            for d in self._loading.pop(message_pk, []):
                d.errback(Failure(e))
            raise
        if self._refs.get(message_pk):
            self._ready[message_pk] = message
        for d in self._loading.pop(message_pk, []):
            d.callback(message)
        return message
