"""The store's scoped-suppression and unsubscribe methods (issue 20), as a mixin of
:class:`~hurricane.store.base.SqlStore`: each runs one transaction function of
:mod:`hurricane.store.suppression`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from hurricane.store import suppression
from hurricane.store.suppression import ScopedSuppression, UnsubscribeOutcome

if TYPE_CHECKING:
    from hurricane.store.txn.core import Txn

__all__ = ["ScopedSuppressionMethods"]

P = ParamSpec("P")
T = TypeVar("T")


class ScopedSuppressionMethods:
    """``add_suppression`` ... ``message_stream`` of IOutcomeStore, on ``_run``."""

    async def _run(self, func: Callable[Concatenate[Txn, P], Awaitable[T]],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(txn, *args)`` in one transaction (the engine's)."""
        raise NotImplementedError

    async def add_suppression(self, scope: str, address: str, reason: str, now: float,
                              source: str | None = None, note: str | None = None,
                              event_id: int | None = None,
                              expires_at: float | None = None) -> bool:
        """Add an entry of any scope; False when it was already there."""
        return await self._run(suppression.add_suppression_txn, scope, address, reason, now,
                               source, note, event_id, expires_at)

    async def remove_suppression(self, scope: str, address: str) -> bool:
        """Remove an entry of any scope; False when there was none."""
        return await self._run(suppression.remove_suppression_txn, scope, address)

    async def suppression_entries(self, address: str) -> list[ScopedSuppression]:
        """Every entry naming an address or its domain, global first."""
        return await self._run(suppression.find_suppressions_txn, address)

    async def list_suppressions(self, scope: str | None = None,
                                after: tuple[str, str] | None = None,
                                limit: int = 1000) -> list[ScopedSuppression]:
        """One page of entries of every scope (or of one), global first."""
        return await self._run(suppression.list_suppressions_txn, scope, after, limit)

    async def record_unsubscribe(self, delivery_id: int, stream: str, now: float,
                                 via: str) -> UnsubscribeOutcome:
        """Record a verified unsubscribe (event and stream entry), idempotently."""
        return await self._run(suppression.record_unsubscribe_txn, delivery_id, stream, now,
                               via)

    async def message_stream(self, delivery_id: int) -> str | None:
        """The stream of a delivery's message (None: the default one)."""
        return await self._run(suppression.message_stream_txn, delivery_id)
