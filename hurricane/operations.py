"""Operator actions, written once: retry, release, suppress, unsuppress, replay, find, stats.

Four front ends let an operator act on the live data: the ``hurricane``
command (:mod:`hurricane.cli`), the SSH console (:mod:`hurricane.admin.manhole`),
the web report's forms (:mod:`hurricane.report.pages`) and the JSON API
(:mod:`hurricane.report.api`). Each is a thin adapter over one
:class:`Operations`: it turns its own input (arguments, form fields, JSON)
into a call here and the result (or :class:`InvalidRequest`) into its own
output. What an action does, which input it accepts, and what it wakes up is
decided in this module and nowhere else (STYLE habit 20; Buildbot's web UI
and REST API both go through one data API the same way).

Addresses are checked by one parser, the SMTP server's own
(:func:`hurricane.smtpd.address.parse_path`), and normalised by one rule, the
store's suppression key (the whole address lower-cased), so the form, the
API, the console and the command refuse the same malformed address with the
same message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from hurricane.model import Delivery, Event, Suppression
from hurricane.outcome import PolicyVerb
from hurricane.policy.operate import (
    MailingHold,
    NoPolicyStore,
    check_mailing_id,
    end_hold,
    mailing_hold,
    providers_view,
)
from hurricane.policy.providers import ProviderLimiter
from hurricane.smtpd.address import parse_path
from hurricane.smtpd.reply import ReplyError
from hurricane.store.interface import IOutcomeStore
from hurricane.store.policy import PolicyEvent, PolicyStore, policy_store
from hurricane.store.suppression import GLOBAL, SCOPED, ScopedSuppression, parse_scope
from hurricane.streams import Streams

__all__ = [
    "Counters",
    "InvalidRequest",
    "MAX_FIND",
    "MAX_REASON",
    "Operations",
    "Replayer",
    "Scheduler",
    "ScopedResult",
    "SuppressResult",
    "UnsuppressResult",
    "address_key",
    "parse_address",
]

log = Logger()

#: Longest suppression reason (a word such as ``userunknown`` or ``operator``).
MAX_REASON = 64
#: Most deliveries one :meth:`Operations.find` returns.
MAX_FIND = 1000


class InvalidRequest(ValueError):
    """An operator's input the operations refuse, with the argument at fault.

    Every adapter shows ``message`` as it is (the API and the forms answer
    400 with it, the command exits 2, the console raises), so one mistake
    reads the same wherever it was made.

    Args:
        field: the argument at fault (``address``, ``reason``...).
        message: what is wrong, for a human; it starts with the field name.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_address(value: object, field: str = "address") -> str:
    """A fully qualified address, checked by the SMTP server's path parser.

    Args:
        value: what the operator gave (any type: JSON and forms are untyped).
        field: the argument's name, for the error.

    Returns:
        The address as written (``local@domain``, surrounding space
        removed); the case is kept, since a local part may be case-sensitive
        on delivery.

    Raises:
        InvalidRequest: empty, not text, malformed, or without a domain.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field, f"{field}: expected an address")
    text = value.strip()
    try:
        path, rest = parse_path(f"<{text}>", "recipient")
    except ReplyError as e:
        raise InvalidRequest(field, f"{field}: invalid address {text!r} "
                                    f"({e.reply.text})") from None
    if rest or path.is_null or path.domain is None:
        raise InvalidRequest(field, f"{field}: address must be fully qualified: {text!r}")
    return path.address


def address_key(value: object, field: str = "address") -> str:
    """The normalised form of an address to look up or remove: lower-cased, trimmed.

    No syntax check here, on purpose: an entry written before addresses were
    checked (or a recipient stored by an older version) must stay findable
    and removable. The store keys the suppression list the same way.

    Raises:
        InvalidRequest: empty or not text.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field, f"{field}: expected an address")
    return value.strip().lower()


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_REASON:
        raise InvalidRequest("reason", "reason: expected a short word")
    return value.strip()


def _note(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("note", "note: expected a string")
    return value


class Scheduler(Protocol):
    """The delivery scheduler as the operations see it: woken when mail is due now."""

    def wake(self) -> None:
        """Claim due work soon."""


class Replayer(Protocol):
    """The bounce processor as the operations see it."""

    def replay(self, bounce_id: int) -> Awaitable[object]:
        """Analyze a stored returned message again."""


class Counters(Protocol):
    """A component with counters for :meth:`Operations.stats`."""

    def stats(self) -> Mapping[str, object]:
        """A snapshot of the counters."""


@dataclass(frozen=True)
class SuppressResult:
    """What :meth:`Operations.suppress` did.

    Attributes:
        added: False when the address was on the list already.
        address: the address as the list keys it (lower-cased).
        entry: the list's entry for it after the call.
    """

    added: bool
    address: str
    entry: Suppression | None


@dataclass(frozen=True)
class ScopedResult:
    """What :meth:`Operations.suppress_scoped` / :meth:`Operations.unsuppress_scoped` did.

    Attributes:
        changed: an entry was added (or removed); False when it was already
            there (or was not).
        scope: the scope as stored (``global``, ``stream:NAME``...).
        address: the key (lower-cased address, or the domain for ``domain``).
        entries: every entry naming the address afterwards.
    """

    changed: bool
    scope: str
    address: str
    entries: tuple[ScopedSuppression, ...] = ()


@dataclass(frozen=True)
class UnsuppressResult:
    """What :meth:`Operations.unsuppress` did.

    Attributes:
        removed: False when the address was not on the list.
        address: the address as the list keys it (lower-cased).
    """

    removed: bool
    address: str


class Operations:
    """Every operator action on the store and the live workers.

    Args:
        store: the opened IOutcomeStore.
        clock: "now" for every write (retry due times, suppression dates).
        outbound: the delivery scheduler, woken when mail becomes due; None
            where no scheduler runs in this process (the ``hurricane``
            command: the server's scheduler finds the mail at its next poll).
        processor: the bounce processor, for :meth:`replay`; None where none
            runs.
        counters: components whose ``stats()`` :meth:`stats` gathers, by name.
        limiter: the providers' adaptive limits (the live ones in the server; in
            the command, made from the configuration and the stored state).
    """

    def __init__(self, store: IOutcomeStore, clock: IReactorTime,
                 outbound: Scheduler | None = None, *, processor: Replayer | None = None,
                 counters: Mapping[str, Counters] | None = None,
                 limiter: ProviderLimiter | None = None,
                 streams: Streams | None = None) -> None:
        self.streams = streams
        self.store = store
        self.limiter = limiter
        self.policy_store: PolicyStore | None = policy_store(store)
        self.clock = clock
        self.outbound = outbound
        self.processor = processor
        self.counters = dict(counters or {})

    def _wake(self) -> None:
        if self.outbound is None:
            return
        try:
            self.outbound.wake()
        except Exception:
            # The change is committed: a failing wake-up only delays the
            # delivery to the scheduler's next poll.
            log.failure("waking the scheduler failed")

    # -- the queue -----------------------------------------------------------

    async def retry(self, *, queue_id: str | None = None, domain: str | None = None,
                    delivery_id: int | None = None) -> int:
        """Make deferred deliveries due now and wake the scheduler.

        Every given filter must match (a message, a destination domain, one
        delivery); at least one is required, so that no slip retries the
        whole queue.

        Returns:
            How many deliveries became due.

        Raises:
            InvalidRequest: no filter, or an empty one.
        """
        queue = queue_id.strip().upper() if queue_id is not None else None
        dom = domain.strip().lower() if domain is not None else None
        if queue == "" or dom == "" or (delivery_id is not None and delivery_id < 1):
            raise InvalidRequest("domain", "domain: give a domain, a queue id or a delivery id")
        if queue is None and dom is None and delivery_id is None:
            raise InvalidRequest("domain", "domain: give a domain, a queue id or a delivery id")
        count = await self.store.retry_now(self.clock.seconds(), queue_id=queue, domain=dom,
                                           delivery_id=delivery_id)
        log.info("retry now: {count} deliveries ({selector})", count=count,
                 selector=" ".join(f"{k}={v}" for k, v in (("queue_id", queue), ("domain", dom),
                                                           ("delivery_id", delivery_id))
                                   if v is not None))
        if count:
            self._wake()
        return count

    async def release(self, node_id: str) -> int:
        """Give back every lease a node holds (a node that died), and wake the scheduler.

        Returns:
            How many deliveries were released.

        Raises:
            InvalidRequest: an empty node id.
        """
        if not isinstance(node_id, str) or not node_id.strip():
            raise InvalidRequest("node_id", "node_id: expected the node id of a node")
        count = await self.store.release_owner(node_id.strip())
        log.info("released {count} leases of node {node}", count=count, node=node_id.strip())
        if count:
            self._wake()
        return count

    # -- the suppression list ------------------------------------------------

    async def suppress(self, address: object, reason: object = "operator",
                       note: object = None) -> SuppressResult:
        """Put an address on the suppression list (source ``operator``).

        Raises:
            InvalidRequest: a malformed address, a reason that is not a short
                word, a note that is not text.
        """
        parsed = parse_address(address)
        why = _reason(reason)
        text = _note(note)
        added = await self.store.suppress(parsed, why, self.clock.seconds(), source="operator",
                                          note=text)
        key = parsed.lower()
        log.info("suppression of {address} added by an operator ({added})", address=key,
                 added=added)
        return SuppressResult(added, key, await self.store.get_suppression(key))

    async def unsuppress(self, address: object) -> UnsuppressResult:
        """Take an address off the suppression list.

        Raises:
            InvalidRequest: an empty address.
        """
        key = address_key(address)
        removed = await self.store.unsuppress(key)
        log.info("suppression of {address} removed by an operator ({removed})", address=key,
                 removed=removed)
        return UnsuppressResult(removed, key)

    async def suppression(self, address: object) -> Suppression | None:
        """The list's entry for an address, or None."""
        return await self.store.get_suppression(address_key(address))

    async def suppressions(self, after: str | None = None,
                           limit: int = 1000) -> list[Suppression]:
        """One page of the list ordered by address (keyset on ``after``)."""
        return await self.store.suppressions(after=after, limit=limit)

    # -- scoped suppression (issue 20) ---------------------------------------

    def scope(self, value: object) -> str:
        """A scope checked the one way every front end uses: ``global`` (None or
        ""), ``stream:NAME`` of a configured stream, ``mailing:ID`` or ``domain``.

        Raises:
            InvalidRequest: anything else, or a stream not configured.
        """
        if value is not None and not isinstance(value, str):
            raise InvalidRequest("scope", "scope: expected global, stream:NAME, "
                                          "mailing:ID or domain")
        try:
            scope = parse_scope(value)
        except ValueError as e:
            raise InvalidRequest("scope", f"scope: {e}") from None
        if scope.startswith("stream:") and self.streams is not None and \
                self.streams.get(scope[7:]) is None:
            raise InvalidRequest("scope", f"scope: no stream {scope[7:]!r} is configured; "
                                          f"streams: {', '.join(self.streams.names())}")
        return scope

    def _scoped_key(self, scope: str, address: object) -> str:
        if scope != "domain":
            return parse_address(address).lower()
        if not isinstance(address, str) or not address.strip():
            raise InvalidRequest("address", "address: expected a domain")
        domain = address.strip().lower().rpartition("@")[2].rstrip(".")
        if not domain or "." not in domain or not all(
                c.isalnum() or c in "-." for c in domain):
            raise InvalidRequest("address", f"address: expected a domain, got {address!r}")
        return domain

    async def suppress_scoped(self, address: object, scope: object = None,
                              reason: object = "operator", note: object = None,
                              expires_at: float | None = None) -> ScopedResult:
        """Add an entry of any scope (source ``operator``); global as :meth:`suppress`.

        Raises:
            InvalidRequest: a bad scope, address (a domain for ``domain``),
                reason or note, or an expiry in the past.
        """
        where = self.scope(scope)
        key = self._scoped_key(where, address)
        why, text = _reason(reason), _note(note)
        now = self.clock.seconds()
        if expires_at is not None and (where == GLOBAL or expires_at <= now):
            raise InvalidRequest("expires", "expires: only a stream, mailing or domain entry "
                                            "expires, and in the future")
        added = await self.store.add_suppression(where, key, why, now, "operator", text, None,
                                                 expires_at)
        log.info("suppression of {address} ({scope}) added by an operator ({added})",
                 address=key, scope=where, added=added)
        return ScopedResult(added, where, key,
                            tuple(await self.store.suppression_entries(key)))

    async def unsuppress_scoped(self, address: object, scope: object = None) -> ScopedResult:
        """Remove the entry of one scope (global by default).

        Raises:
            InvalidRequest: a bad scope, or an empty address.
        """
        where = self.scope(scope)
        key = address_key(address)
        if where == "domain":
            key = key.rpartition("@")[2].rstrip(".")
        removed = await self.store.remove_suppression(where, key)
        log.info("suppression of {address} ({scope}) removed by an operator ({removed})",
                 address=key, scope=where, removed=removed)
        return ScopedResult(removed, where, key,
                            tuple(await self.store.suppression_entries(key)))

    async def suppression_entries(self, address: object) -> list[ScopedSuppression]:
        """Every entry naming an address (or its domain), global first."""
        return await self.store.suppression_entries(address_key(address))

    async def list_suppressions(self, scope: object = None, after: tuple[str, str] | None = None,
                                limit: int = 1000) -> list[ScopedSuppression]:
        """One page of entries of every scope, or of one (``scope`` given)."""
        where = None if scope in (None, "", "all") else SCOPED if scope == SCOPED \
            else self.scope(scope)
        if not 1 <= limit <= 10_000:
            raise InvalidRequest("limit", "limit: must be between 1 and 10000")
        return await self.store.list_suppressions(where, after, limit)

    # -- reading -------------------------------------------------------------

    async def find(self, address: object, *, limit: int = 20,
                   before: int | None = None) -> list[Delivery]:
        """The deliveries to an address, newest first.

        Args:
            address: compared case-insensitively.
            limit: at most this many (1 to :data:`MAX_FIND`).
            before: keyset: only deliveries with a smaller id.

        Raises:
            InvalidRequest: an empty address or a limit out of range.
        """
        key = address_key(address)
        if not 1 <= limit <= MAX_FIND:
            raise InvalidRequest("limit", f"limit: must be between 1 and {MAX_FIND}")
        return await self.store.search_deliveries(recipient=key, before_delivery_id=before,
                                                  limit=limit)

    async def events(self, delivery_id: int) -> list[Event]:
        """Every event of one delivery, in order."""
        return await self.store.events(delivery_id)

    async def replay(self, bounce_id: int) -> object:
        """Analyze a stored returned message again (after a rule change).

        Raises:
            RuntimeError: no bounce processor runs in this process.
        """
        if self.processor is None:
            raise RuntimeError("no bounce processor in this process")
        log.info("replaying returned message {bounce_id}", bounce_id=bounce_id)
        return await self.processor.replay(bounce_id)

    async def stats(self) -> dict[str, object]:
        """Every component's counters by name, and the queue depth."""
        found: dict[str, object] = {name: dict(source.stats())
                                    for name, source in self.counters.items()}
        found["queue_depth"] = await self.store.queue_depth()
        return found

    # -- closed-loop delivery (issue 19) -----------------------------------------

    def _policy(self) -> PolicyStore:
        if self.policy_store is None:
            raise NoPolicyStore("this store keeps no policy state (use SQLite or PostgreSQL)")
        return self.policy_store

    @staticmethod
    def _mailing_id(value: object) -> str:
        mailing = check_mailing_id(value)
        if mailing is None:
            raise InvalidRequest("mailing_id", "mailing_id: expected a mailing id")
        return mailing

    async def mailing_hold(self, mailing_id: object) -> MailingHold:
        """A mailing's breaker (held, released, cancelled or never tripped) and counts.

        Raises:
            InvalidRequest: not a mailing id.
        """
        return await mailing_hold(self._policy(), self._mailing_id(mailing_id))

    async def release_mailing(self, mailing_id: object, who: str = "operator") -> int:
        """Send a held mailing's recipients; its breaker stays off. Wakes the scheduler.

        Returns:
            recipients released (0 when none was held).

        Raises:
            InvalidRequest: not a mailing id, or a mailing that was never held.
        """
        return await self._end_hold(mailing_id, PolicyVerb.release, who)

    async def cancel_mailing(self, mailing_id: object, who: str = "operator") -> int:
        """Move a held mailing's recipients to the final state ``cancelled``.

        Returns:
            recipients cancelled.

        Raises:
            InvalidRequest: not a mailing id, or a mailing that was never held.
        """
        return await self._end_hold(mailing_id, PolicyVerb.cancel, who)

    async def _end_hold(self, mailing_id: object, verb: PolicyVerb, who: str) -> int:
        mailing = self._mailing_id(mailing_id)
        moved = await end_hold(self._policy(), mailing, verb, self.clock.seconds(), who)
        if moved < 0:
            raise InvalidRequest("mailing_id", f"mailing_id: {mailing} was never held")
        log.info("mailing {mailing}: {verb} of {count} held recipients by {who}",
                 mailing=mailing, verb=verb.value, count=moved, who=who)
        if moved and verb is PolicyVerb.release:
            self._wake()
        return moved

    async def providers(self) -> list[dict[str, object]]:
        """Every provider budget: configured and current limits, recent actions."""
        if self.limiter is None:
            return []
        return await providers_view(self.policy_store, self.limiter, self.clock.seconds())

    async def policy_events(self, *, scope: str | None = None, subject: str | None = None,
                            limit: int = 100) -> list[PolicyEvent]:
        """The newest policy events, newest first."""
        if self.policy_store is None:
            return []
        return await self.policy_store.policy_events(scope=scope, subject=subject,
                                                     limit=limit)
