"""The mailings: an index newest first, and one report per mailing (issue 18).

- ``/mailings``: every mailing id, newest first (by its first message),
  paged, with its size, what was delivered, refused during SMTP (sync),
  returned later (async), complained about, what is still in the queue, the
  share of recipients with a final outcome and when the rest settles;
- ``/mailing`` redirects there; ``/mailing/<id>`` is the report of one
  mailing: those figures, the outcome chart, bounce reasons split sync and
  async, the time-to-bounce distribution, the domains and the recipients.

Bounded on a large store (docs/report.md): the index reads one stored row
per mailing it shows (the store's ``mailings`` table). New mailings are
registered from the messages stored since the last look, and a row's
figures are recomputed from the mailing's deliveries when they are stale:
at most every :data:`OPEN_TTL` seconds while the mailing still changes,
every :data:`CLOSED_TTL` once it settled, at most :data:`REFRESH_PER_VIEW`
per page view. A mailing's own page always computes its figures (a few
aggregates over that mailing's deliveries, through the mailing id index)
and stores them for the index. Hurricane has no "hold" of its own: what it
keeps back is the queue, so "In queue" is the queued and deferred recipients.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlencode

from twisted.logger import Logger
from twisted.web.server import Request
from twisted.web.template import Flattenable, Tag, tags

from hurricane.model import State
from hurricane.report import charts
from hurricane.report.api import parse_time
from hurricane.report.figures import STATES, percent, rates
from hurricane.report.html import (
    fmt_duration,
    fmt_time,
    kpis,
    layout,
    link,
    q,
    redirect,
    table,
)
from hurricane.report.pages import (
    DELIVERY_HEADERS,
    PAGE_SIZE,
    Collection,
    ItemPage,
    Page,
    finish,
    outcome_chart,
)
from hurricane.report.resource import HttpError, arg
from hurricane.report.settle import Settlement, SettleModel, settlement
from hurricane.store.interface import (
    MailingEntry,
    MailingOutcomes,
    MailingRollup,
    StoreError,
)

__all__ = ["LATENCY_EDGES", "MailingPage", "Mailings", "MailingsRedirect", "latency_labels",
           "needs_refresh", "rollup_of"]

log = Logger()

#: Mailings per page of the index.
INDEX_PAGE = 25
#: Seconds a stored figure of a mailing that still changes is shown before
#: it is computed again.
OPEN_TTL = 60.0
#: The same for a mailing that had settled when it was computed (a very late
#: bounce is improbable, not impossible).
CLOSED_TTL = 6 * 3600.0
#: Most mailings whose figures one view of the index computes.
REFRESH_PER_VIEW = 10
#: Messages read per look for new mailings, and looks per view.
DISCOVERY_LIMIT = 20_000
DISCOVERY_ROUNDS = 5
#: Domains of a mailing's report.
REPORT_DOMAINS = 25
#: Upper edges (seconds) of the time-to-bounce buckets: about three per
#: decade, in units people read (1-2-5 seconds, then 10 s, 30 s, 1, 2, 5, 10,
#: 30 min, 1, 2, 6, 12 h, 1, 2, 3, 7 days).
LATENCY_EDGES = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400,
                 172800, 259200, 604800)


def latency_labels(edges: Sequence[float] = LATENCY_EDGES) -> list[str]:
    """A label per bucket of :meth:`IOutcomeStore.mailing_latencies` (``len(edges) + 1``)."""
    return ([f"< {charts.duration_text(edges[0])}"]
            + [charts.range_text(a, b) for a, b in zip(edges, edges[1:], strict=False)]
            + [f"\u2265 {charts.duration_text(edges[-1])}"])


def counter(by_state: Mapping[str, int]) -> Callable[[State], int]:
    """How many recipients of ``by_state`` are in a state (0 for none)."""
    return lambda state: by_state.get(state.value, 0)


def rollup_of(outcomes: MailingOutcomes, key: str, now: float) -> MailingRollup:
    """The figures the index keeps of a mailing, computed at ``now``."""
    total = outcomes.total
    return MailingRollup(
        mailing_key=key, mailing_id=outcomes.mailing_id,
        first_at=outcomes.first_at if outcomes.first_at is not None else now,
        computed_at=now, last_at=outcomes.last_at, messages=outcomes.messages,
        by_state=dict(total.by_state), settled=total.settled, settles_at=total.settles_at)


def needs_refresh(rollup: MailingRollup | None, now: float) -> bool:
    """True when stored figures are missing or older than their mailing allows."""
    if rollup is None:
        return True
    closed = rollup.pending == 0 and (rollup.settles_at is None
                                      or rollup.settles_at <= rollup.computed_at)
    return now - rollup.computed_at >= (CLOSED_TTL if closed else OPEN_TTL)


def settles_text(s: Settlement, now: float) -> str:
    """When a mailing (or a domain of it) settles, for people."""
    if s.done:
        return "settled" + (f" at {fmt_time(s.settles_at)}" if s.settles_at else "")
    if s.pending:
        return f"after the queue: {s.pending} still queued or deferred"
    if s.settles_at is None:
        return ""
    return f"at {fmt_time(s.settles_at)} (in {fmt_duration(s.settles_at - now)})"


def model_text(model: SettleModel) -> str:
    """The settling delays in use, in one sentence."""
    own = sorted(model.domains.values(), key=lambda d: (-d.samples, d.domain))
    parts = [f"{d.domain} {fmt_duration(d.seconds)}" for d in own[:5]]
    more = f" and {len(own) - 5} more" if len(own) > 5 else ""
    measured = (f"; measured per domain: {', '.join(parts)}{more}" if parts else "")
    return (f"Settling delay (the 99th percentile of the time from acceptance to a late "
            f"bounce or complaint): {fmt_duration(model.default)} for any domain "
            f"({model.default_source()}){measured}.")


class Mailings(Page):
    """``/mailings``: the mailings index, newest first."""

    async def get(self, request: Request, user: str) -> None:
        """One page of the index (``before_at`` and ``before_key``: the keyset)."""
        store = self.pages.store
        now = self.pages.clock.seconds()
        before = self._keyset(request)
        notices: list[Flattenable] = []
        try:
            for _ in range(DISCOVERY_ROUNDS):
                if await store.discover_mailings(DISCOVERY_LIMIT) < DISCOVERY_LIMIT:
                    break
            else:
                notices.append(tags.div("Still registering older mailings: reload for more.",
                                        class_="msg"))
        except StoreError:
            log.failure("registering new mailings failed")
        entries = await store.mailings(before, INDEX_PAGE)
        entries = await self._refreshed(entries, now)
        model = await self.pages.settle.current()
        rows = [self._row(e, now) for e in entries]
        pager = [link("/mailings", "\u00ab Newest")] if before else []
        if len(entries) == INDEX_PAGE:
            last = entries[-1]
            pager.append(link("/mailings?" + urlencode(
                {"before_at": repr(last.first_at), "before_key": last.mailing_key}),
                "Older \u00bb"))
        content = [*notices,
                   tags.div(table(["Mailing", "Started", "Recipients", "Delivered", "Sync failed",
                                   "Async bounced", "Complaints", "In queue", "Settled",
                                   "Settles"], rows, (2, 3, 4, 5, 6, 7, 8),
                                  classes={0: "nowrap", 1: "nowrap"}), class_="card"),
                   tags.div(*pager, class_="pager"),
                   tags.p("Sync failed: refused during our SMTP conversation; async bounced: "
                          "returned later by an NDR. In queue: queued or deferred (Hurricane "
                          "holds nothing else back). Settled: recipients whose outcome is "
                          "final, counting a delivered one once its domain's settling delay "
                          "has passed. " + model_text(model), class_="muted small")]
        finish(request, layout("Mailings", content))

    @staticmethod
    def _keyset(request: Request) -> tuple[float, str] | None:
        at = parse_time(arg(request, "before_at"), "before_at")
        key = arg(request, "before_key")
        if at is None and not key:
            return None
        if at is None or not key:
            raise HttpError(400, "before_at: give before_at and before_key together",
                            "before_at")
        return at, key.lower()

    async def _refreshed(self, entries: list[MailingEntry], now: float) -> list[MailingEntry]:
        """``entries`` with the stale figures of the first few computed again and stored."""
        stale = [e for e in entries if needs_refresh(e.rollup, now)][:REFRESH_PER_VIEW]
        if not stale:
            return entries
        model = await self.pages.settle.current()
        fresh: dict[str, MailingRollup] = {}
        for e in stale:
            outcomes = await self.pages.store.mailing_outcomes(
                e.mailing_key, model.delays(), model.default, now)
            if outcomes is not None:
                fresh[e.mailing_key] = rollup_of(outcomes, e.mailing_key, now)
        try:
            await self.pages.store.save_mailing_rollups(list(fresh.values()))
        except StoreError:
            # Shown all the same; the next view computes them again.
            log.failure("storing mailing figures failed")
        return [dataclasses.replace(e, rollup=fresh.get(e.mailing_key, e.rollup))
                for e in entries]

    @staticmethod
    def _row(e: MailingEntry, now: float) -> tuple[object, ...]:
        name = link(f"/mailing/{q(e.mailing_id)}", e.mailing_id)
        r = e.rollup
        if r is None:
            return (name, fmt_time(e.first_at), "\u2013", "", "", "", "", "",
                    "", tags.span("not computed yet: open the mailing", class_="muted"))
        n = counter(r.by_state)
        s = settlement(r, now)
        age = now - r.computed_at
        fresh = "just computed" if age < 1 else f"figures {fmt_duration(age)} old"
        return (tags.span(name, tags.span(fresh, class_="sub")),
                fmt_time(e.first_at), r.recipients, n(State.delivered), n(State.failed),
                n(State.bounced), n(State.complained), s.pending, percent(s.share),
                settles_text(s, now))


class MailingsRedirect(Collection):
    """``/mailing``: its children are the mailings; itself it redirects to ``/mailings``."""

    async def get(self, request: Request, user: str) -> None:
        """301 to the index."""
        redirect(request, "/mailings", 301)


class MailingPage(ItemPage):
    """``/mailing/<id>``: the report of one mailing."""

    async def get(self, request: Request, user: str) -> None:
        """The mailing's figures, settling, charts, domains and one page of recipients."""
        store = self.pages.store
        now = self.pages.clock.seconds()
        model = await self.pages.settle.current()
        outcomes = await store.mailing_outcomes(self.key, model.delays(), model.default, now,
                                                REPORT_DOMAINS)
        if outcomes is None:
            raise HttpError(404, f"No mailing {self.key}.")
        try:
            # Keyed as the index registers it: the stored id, lower-cased.
            await store.save_mailing_rollups([rollup_of(outcomes, outcomes.mailing_id.lower(),
                                                        now)])
        except StoreError:
            log.failure("storing the figures of mailing {mailing} failed", mailing=self.key)
        mailing_id = outcomes.mailing_id
        filters = self.pages.filters(request)
        filters["mailing_id"] = mailing_id
        found = await store.search_deliveries(**filters, limit=PAGE_SIZE)
        content: list[Flattenable] = [
            *self._figures(outcomes, now),
            tags.h2("Outcomes over time"),
            tags.div(*await outcome_chart(store, outcomes.first_at, outcomes.last_at,
                                          since=0.0, until=math.inf, mailing_id=mailing_id),
                     class_="card"),
            tags.div(tags.div(tags.h2("Bounce reasons ", tags.span(
                "(red: sync, refused in SMTP; pink: async, returned later)",
                class_="muted small")), *await self._reasons(mailing_id)),
                     tags.div(tags.h2("Time to bounce"), *await self._latencies(mailing_id)),
                     class_="grid2"),
            tags.h2("Domains"), self._domains(outcomes, model, now),
            tags.h2("Recipients"), self._state_form(mailing_id, filters["state"]),
            tags.div(table(DELIVERY_HEADERS, self.pages.delivery_rows(found), (4,),
                           classes={8: "nowrap"}), class_="card"),
            self.pages.pager(request, found, PAGE_SIZE, f"/mailing/{q(mailing_id)}", filters),
        ]
        finish(request, layout(f"Mailing {mailing_id}", content))

    @staticmethod
    def _figures(outcomes: MailingOutcomes, now: float) -> list[Tag]:
        """Key figures and the settling status."""
        total = outcomes.total
        n = counter(total.by_state)
        r = rates(dict(total.by_state))
        s = settlement(total, now)
        figures = kpis([
            ("Recipients", total.recipients, f"in {outcomes.messages} messages"),
            ("Delivered", n(State.delivered), f"delivery rate {percent(r.delivery)}"),
            ("Sync failed", n(State.failed), f"{percent(r.bounce_sync)} refused in SMTP"),
            ("Async bounced", n(State.bounced), f"{percent(r.bounce_async)} returned later"),
            ("Complaints", n(State.complained), f"complaint rate {percent(r.complaint)}"),
            ("In queue", s.pending, f"{n(State.queued)} queued, {n(State.deferred)} deferred"),
            ("Expired", n(State.expired), f"{n(State.suppressed)} suppressed (not sent)"),
            ("Settled", percent(s.share), f"{s.settled} of {s.recipients}"),
        ])
        if s.done:
            status = ("Settled: every recipient has a final outcome"
                      + (f"; late bounces became improbable at {fmt_time(s.settles_at)}."
                         if s.settles_at else "."))
        elif s.pending:
            status = (f"Not settled: {s.pending} recipients are still queued or deferred; "
                      "it settles after they are delivered or fail.")
        else:
            assert s.settles_at is not None  # something delivered is still settling
            status = (f"Settling: late bounces become improbable at {fmt_time(s.settles_at)} "
                      f"(in {fmt_duration(s.settles_at - now)}); {percent(s.share)} of "
                      "recipients have a final outcome.")
        sent = (f"Submitted {fmt_time(outcomes.first_at)} \u2013 {fmt_time(outcomes.last_at)}. "
                "A recipient has settled when its outcome is final: failed, bounced, "
                "complained, expired or suppressed, or delivered longer ago than its domain's "
                "settling delay (the domains below). The delivery rate counts complained "
                "recipients as delivered: their mail arrived.")
        return [figures, tags.div(tags.p(status, class_="status"),
                                  tags.p(sent, class_="muted small"), class_="card")]

    async def _reasons(self, mailing_id: str) -> list[Tag]:
        """The bounce reasons, split sync and async: a chart and a table."""
        reasons = await self.pages.store.mailing_bounce_reasons(mailing_id, 15)
        chart = charts.horizontal_bars(
            [(r.reason, [(r.synchronous, charts.STATE_COLOURS[State.failed.value], "sync"),
                         (r.asynchronous, charts.STATE_COLOURS[State.bounced.value], "async")])
             for r in reasons], title="Bounce reasons", width=560,
            empty="nothing failed or bounced")
        rows = [(r.reason, r.synchronous, r.asynchronous, r.total) for r in reasons]
        return [tags.div(chart, table(["Reason", "Sync (failed)", "Async (bounced)", "Total"],
                                      rows, (1, 2, 3)), class_="card")]

    async def _latencies(self, mailing_id: str) -> list[Tag]:
        """The time from acceptance to a late bounce or complaint, as a histogram."""
        got = await self.pages.store.mailing_latencies(mailing_id, LATENCY_EDGES)
        labels = latency_labels()
        counts: dict[int, dict[str, int]] = {}
        for bucket, state, count in got:
            counts.setdefault(bucket, {})[state] = count
        total = sum(sum(c.values()) for c in counts.values())
        if not total:
            return [tags.div(tags.p("Nothing came back after the remote servers accepted "
                                    "the mail.", class_="muted"), class_="card")]
        shown = max(max(counts), 5)
        buckets = [(labels[i], [(counts.get(i, {}).get(State.bounced.value, 0),
                                 charts.STATE_COLOURS[State.bounced.value], State.bounced.value),
                                (counts.get(i, {}).get(State.complained.value, 0),
                                 charts.STATE_COLOURS[State.complained.value],
                                 State.complained.value)])
                   for i in range(shown + 1)]
        chart = charts.histogram(buckets, title="Time to bounce", width=560,
                                 legend=[(s.value, charts.STATE_COLOURS[s.value])
                                         for s in (State.bounced, State.complained)],
                                 boundaries=[charts.duration_text(e) for e in LATENCY_EDGES])
        running, p99 = 0, labels[-1]
        for i in range(len(labels)):
            running += sum(counts.get(i, {}).values())
            if running >= 0.99 * total:
                p99 = labels[i]
                break
        note = (f"{total} late outcomes, from the remote's acceptance to the NDR or the "
                f"complaint (log scale); 99 % came within the {p99} bucket.")
        return [tags.div(chart, tags.p(note, class_="muted small"), class_="card")]

    @staticmethod
    def _domains(outcomes: MailingOutcomes, model: SettleModel, now: float) -> Tag:
        """The mailing's largest domains, with their settling."""
        rows = []
        for domain, counts in outcomes.domains:
            n = counter(counts.by_state)
            s = settlement(counts, now)
            found = "/search?" + urlencode({"mailing_id": outcomes.mailing_id,
                                            "domain": domain})
            rows.append((link(found, domain), counts.recipients, n(State.delivered),
                         n(State.failed), n(State.bounced), n(State.complained), s.pending,
                         percent(s.share),
                         tags.span(fmt_duration(model.delay(domain)),
                                   tags.span(model.source_short(domain), class_="sub")),
                         settles_text(s, now)))
        return tags.div(table(["Domain", "Recipients", "Delivered", "Sync failed",
                               "Async bounced", "Complaints", "In queue", "Settled",
                               "Settling delay", "Settles"], rows, (1, 2, 3, 4, 5, 6, 7)),
                        class_="card")

    @staticmethod
    def _state_form(mailing_id: str, state: str | None) -> Tag:
        """The recipients' state filter (a GET form)."""
        return tags.form(
            tags.select(tags.option("every state", value=""),
                        *[tags.option(s, value=s, **({"selected": "selected"}
                                                     if s == state else {})) for s in STATES],
                        name="state"),
            tags.button("Show", type="submit"), method="get",
            action=f"/mailing/{q(mailing_id)}", class_="toolbar")

