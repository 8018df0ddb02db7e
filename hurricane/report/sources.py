"""Outcomes per source address (issue 21): the page ``/sources`` and ``GET /api/v1/sources``.

Each attempt records the local address it was sent from (a sending pool's);
a refusal, a deferral or a delivery counts for that address, and a delivery
bounced or complained about later for the address of its accepted attempt, so
a blocklisting or a warm-up going wrong shows on the address that caused it.
The window is the last day unless ``since``/``until`` say otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from twisted.web.server import Request
from twisted.web.template import tags

from hurricane.model import State
from hurricane.report.api import Endpoint, Handler, parse_time
from hurricane.report.html import finish, fmt_time, kpis, layout, table
from hurricane.report.pages import Page
from hurricane.report.resource import HttpError, arg, write_json
from hurricane.store.transport import ISourceOutcomes, SourceCount

__all__ = ["COLUMNS", "SourcesEndpoint", "SourcesPage", "by_source"]

#: The columns of a source's row, in order: attempt states, then late events.
COLUMNS = (State.delivered.value, State.deferred.value, State.failed.value,
           State.bounced.value, State.complained.value)


def by_source(counts: Sequence[SourceCount]) -> dict[str, dict[str, int]]:
    """``{source_ip: {column: count}}``, every column present."""
    found: dict[str, dict[str, int]] = {}
    for c in counts:
        row = found.setdefault(c.source_ip, dict.fromkeys(COLUMNS, 0))
        row[c.what] = row.get(c.what, 0) + c.count
    return found


def _window(request: Request, now: float) -> tuple[float, float]:
    until = parse_time(arg(request, "until"), "until")
    since = parse_time(arg(request, "since"), "since")
    until = now if until is None else until
    return (until - 86400 if since is None else since), until


def _store(store: object) -> ISourceOutcomes:
    if not isinstance(store, ISourceOutcomes):
        raise HttpError(404, "This store does not record source addresses.")
    return store


class SourcesPage(Page):
    """``/sources``: outcomes per source address over a window."""

    async def get(self, request: Request, user: str) -> None:
        """The table of addresses."""
        del user
        since, until = _window(request, self.pages.clock.seconds())
        rows_by = by_source(await _store(self.pages.store).source_outcomes(since, until))
        rows = []
        for ip, row in sorted(rows_by.items()):
            attempts = row[State.delivered.value] + row[State.deferred.value] + row[
                State.failed.value]
            rows.append((ip, attempts, *(row[c] for c in COLUMNS)))
        content = [
            kpis([("Source addresses", len(rows)), ("From", fmt_time(since)),
                  ("Until", fmt_time(until))]),
            tags.div(table(["Source address", "Attempts", "Delivered", "Deferred", "Failed",
                            "Bounced later", "Complaints"], rows, (1, 2, 3, 4, 5, 6)),
                     class_="card"),
            tags.p("A delivery bounced or complained about later counts (when that came) "
                   "for the address that sent its accepted attempt. ?since= and ?until= "
                   "(epoch seconds or ISO 8601) change the window.", class_="muted small"),
        ]
        finish(request, layout("Outcomes by source address", content))


class SourcesEndpoint(Endpoint):
    """``GET /api/v1/sources?since=&until=``: outcomes per source address."""

    def handlers(self) -> Mapping[str, Handler]:
        """GET only."""
        return {"GET": self.get}

    async def get(self, request: Request) -> None:
        """``{"since", "until", "sources": {ip: {state or event kind: count}}}``."""
        since, until = _window(request, self.api.clock.seconds())
        counts = await _store(self.api.store).source_outcomes(since, until)
        write_json(request, 200, {"since": since, "until": until, "sources": by_source(counts)})
