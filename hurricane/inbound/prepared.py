"""An analysis made ready to record: correlated, turned into events, encoded.

Built in one of two places, by the same functions:

- in the analysis worker, next to the analysis, when correlation needs
  nothing from the store beyond the deliveries the envelope names (read by
  the server before the hand-off and sent along): a return to a verified
  VERP address, the usual case. The server process then only records it.
- in the server (:class:`hurricane.inbound.recorder.Recorder`) otherwise:
  header tokens and ENVIDs to verify, Message-IDs, ORCPTs and bare
  addresses to look up, a per-message token's siblings.

:func:`correlate_offline` runs :func:`hurricane.inbound.correlate.correlate`
itself over a store and a codec that raise :class:`NeedsServer` when
asked anything: correlation either completes without them, with the result
the server would have reached from the same deliveries, or is left to the
server whole. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import NamedTuple, NoReturn

from hurricane.bounce.model import Analysis
from hurricane.inbound.correlate import Correlation, correlate
from hurricane.inbound.events import build_events
from hurricane.model import BounceEvent, Delivery, StoredBounce

__all__ = ["Correlating", "NeedsServer", "Recordable", "correlate_offline", "record_json",
           "recordable"]


class Recordable(NamedTuple):
    """What recording a correlated analysis needs, and what its result reports."""

    category: str
    #: The strongest correlation key that matched (None: uncorrelated).
    key: str | None
    #: At least one result (or the message) reached a delivery.
    correlated: bool
    #: Results no key could pair with a delivery.
    unmatched: int
    events: list[BounceEvent]
    #: The analysis JSON with its correlation, as the store keeps it.
    record: str


class Correlating(NamedTuple):
    """What an analysis worker needs to correlate a message itself.

    ``bounce`` is the stored message (its raw bytes are the work's own
    object: pickled once); ``known`` the deliveries its envelope names, by
    id (None: no such delivery), read by the server just before.
    """

    bounce: StoredBounce
    known: Mapping[int, Delivery | None]
    now: float
    window: float


class NeedsServer(Exception):
    """Correlation asked the store, or the VERP codec: the server correlates."""


class _Unavailable:
    """A store or codec that only says it is not there (any method raises)."""

    def __getattr__(self, name: str) -> object:
        def ask(*args: object, **kwargs: object) -> NoReturn:
            raise NeedsServer(name)

        return ask


def correlate_offline(bounce: StoredBounce, analysis: Analysis, context: Correlating
                      ) -> Correlation:
    """The correlation ``correlate`` gives from the known deliveries alone.

    Raises:
        NeedsServer: it would ask the store or the codec.
    """
    coro = correlate(_Unavailable(), _Unavailable(), bounce,  # type: ignore[arg-type]
                     analysis, context.now, window=context.window, known=context.known)
    try:
        coro.send(None)
    except StopIteration as done:
        corr: Correlation = done.value
        return corr
    coro.close()  # suspended: not on a store that answers nothing
    raise NeedsServer("correlation suspended")


def record_json(analysis: Analysis, encoded: str | None, corr: Correlation) -> str:
    """What the store keeps of an analysis: its JSON object plus ``correlation``.

    ``encoded`` is :func:`~hurricane.inbound.analysis_worker.encode_analysis`
    of it when already computed: only the correlation is encoded here and
    spliced in as the last member, which gives the very text of encoding
    the whole.
    """
    if encoded is None or not encoded.endswith("}") or encoded == "{}":
        record = analysis.to_json()
        record["correlation"] = corr.to_json()
        return json.dumps(record, default=str)
    return encoded[:-1] + ', "correlation": ' + json.dumps(corr.to_json(), default=str) + "}"


def recordable(bounce: StoredBounce, analysis: Analysis, corr: Correlation,
               fingerprint: bytes, encoded: str | None) -> Recordable:
    """The events and the stored record of a correlated analysis."""
    return Recordable(
        analysis.category, corr.key, corr.correlated, len(corr.unmatched),
        build_events(bounce, analysis, corr, fingerprint), record_json(analysis, encoded, corr))
