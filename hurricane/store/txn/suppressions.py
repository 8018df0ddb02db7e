"""The suppression list."""

from __future__ import annotations

from hurricane.address import fold
from hurricane.model import Suppression
from hurricane.store import sql
from hurricane.store.txn.core import Txn, suppression_from_row

__all__ = ["insert_suppression", "suppress_txn", "unsuppress_txn", "get_suppression_txn",
           "suppressions_txn"]


async def insert_suppression(txn: Txn, address: str, reason: str, now: float,
                             source: str | None, note: str | None, event_id: int | None) -> bool:
    """Add an address (folded) unless it is there; True when added."""
    await txn.execute(sql.INSERT_SUPPRESSION,
                      (fold(address), reason, source, event_id, note, now))
    return txn.fetchone() is not None


async def suppress_txn(txn: Txn, address: str, reason: str, now: float, source: str | None,
                       note: str | None, event_id: int | None) -> bool:
    """Add an address; False when it was already there."""
    return await insert_suppression(txn, address, reason, now, source, note, event_id)


async def unsuppress_txn(txn: Txn, address: str) -> bool:
    """Remove an address; False when it was not there."""
    await txn.execute(sql.DELETE_SUPPRESSION, (fold(address),))
    return bool(txn.fetchall())


async def get_suppression_txn(txn: Txn, address: str) -> Suppression | None:
    """The suppression entry of an address."""
    await txn.execute(sql.SELECT_SUPPRESSION, (fold(address),))
    row = txn.fetchone()
    return None if row is None else suppression_from_row(row)


async def suppressions_txn(txn: Txn, after: str | None, limit: int) -> list[Suppression]:
    """One page of the suppression list by address."""
    await txn.execute(sql.SELECT_SUPPRESSIONS, (fold(after) if after else "", limit))
    return [suppression_from_row(row) for row in txn.fetchall()]
