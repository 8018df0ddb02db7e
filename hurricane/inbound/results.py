"""What became of one returned message, and the processor's counters."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from enum import StrEnum, auto

__all__ = ["ProcessResult", "ProcessStatus", "ProcessorStats"]


class ProcessStatus(StrEnum):
    """What became of one returned message (compares equal to its text)."""

    #: recorded, correlated
    analyzed = auto()
    #: recorded with no event
    uncorrelated = auto()
    #: the analysis failed; marked failed in the store, raw kept for a replay
    failed = auto()
    #: no such returned message in the store
    missing = auto()
    #: already analyzed, and not a replay
    skipped = auto()
    #: a replay of a message whose raw bytes the retention period dropped
    purged = auto()
    #: the service stopped first; still pending
    stopped = auto()
    #: internal: the store (or the analysis workers) unavailable, try again
    retry = auto()

    @property
    def progress(self) -> bool:
        """The message's status in the store changed (no longer pending)."""
        return self in (ProcessStatus.analyzed, ProcessStatus.uncorrelated,
                        ProcessStatus.failed)


@dataclass(frozen=True)
class ProcessResult:
    """What became of one returned message.

    ``status`` is a :class:`ProcessStatus`; ``retry`` is used internally
    while the store is unavailable: callers of
    :meth:`~hurricane.inbound.processor.BounceProcessor.replay` never see it.
    """

    bounce_id: int
    status: ProcessStatus
    category: str | None = None
    correlation: str | None = None
    event_ids: tuple[int, ...] = ()
    events: int = 0
    error: str | None = None


@dataclass
class ProcessorStats:
    """The processor's counters (see ``BounceProcessor.stats``)."""

    received: int = 0
    analyzed: int = 0
    uncorrelated: int = 0
    failed: int = 0
    retries: int = 0
    replayed: int = 0
    events: int = 0
    by_category: collections.Counter[str] = field(default_factory=collections.Counter)
