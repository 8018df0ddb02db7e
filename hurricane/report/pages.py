"""The web report: server-rendered HTML pages (twisted.web.template), no JavaScript.

The pages are a tree of resources, one per page
(:func:`hurricane.report.web.build_pages` puts them together):

- ``/`` the overview, ``/search``, ``/deferred`` (and
  ``/deferred/domain/<domain>``), ``/suppressions``;
- ``/mailings`` and ``/mailing/<id>`` (:mod:`hurricane.report.mailings`),
  ``/message/<queue id>`` (and ``.../body``), ``/delivery/<id>``,
  ``/bounce/<id>``;
- ``/export/outcomes.csv``, ``/export/deliveries.csv``,
  ``/export/suppressions.csv`` (streaming CSV); every page's export link
  carries that page's filter (:func:`export_query`);
- the forms ``/suppressions/add``, ``/suppressions/remove`` and
  ``/deferred/retry``: POST only and CSRF-protected; what they do is
  :class:`~hurricane.operations.Operations`' (the same checks and the same
  effects as the API, the console and the command).

Every page needs a login first (:meth:`AccessPolicy.page_user`). Then a POST
anywhere is checked for its CSRF token and answered 405 unless the resource
is a form; other methods than GET, HEAD and POST are 405; a GET of a form or
an unknown path is 404. Lists are paged with keysets.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar, TypedDict
from urllib.parse import urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.template import Flattenable, Tag, tags

from hurricane.bounce.evidence import is_catch_all
from hurricane.model import Delivery, Event, Outcome, State, Suppression
from hurricane.operations import InvalidRequest, Operations
from hurricane.report import charts
from hurricane.report.api import event_explanation, parse_time
from hurricane.report.auth import AccessPolicy
from hurricane.report.csvexport import stream_csv
from hurricane.report.figures import STATES, percent, rates
from hurricane.report.html import (
    badge,
    error_page,
    finish,
    fmt_duration,
    fmt_time,
    kpis,
    layout,
    link,
    q,
    raw_mail,
    redirect,
    summary_block,
    table,
    text,
)
from hurricane.report.resource import HttpError, ReportResource, arg, query_args, run_async, segment
from hurricane.report.settle import SettleModels
from hurricane.store.interface import IOutcomeStore
from hurricane.streams import DEFAULT_STREAM

__all__ = ["DELIVERY_HEADERS", "FORM_BODY_LIMIT", "PAGE_SIZE", "Collection", "ItemPage", "NoPage",
           "Page", "Pages", "WINDOWS", "export_query", "finish", "fmt_time", "outcome_chart"]

log = Logger()

#: Named windows: (label, seconds, alignment seconds of their end).
WINDOWS = {
    "hour": ("Last hour", 3600, 300),
    "day": ("Last day", 86400, 3600),
    "week": ("Last week", 7 * 86400, 6 * 3600),
}
PAGE_SIZE = 50
CSV_PAGE = 1000
#: The largest body of a form POST: an address, a reason, a note and the CSRF
#: token fit in well under 1 KiB; the rest is room for a long note.
FORM_BODY_LIMIT = 16 * 1024

DELIVERY_HEADERS = ["Recipient", "State", "Reason", "Code", "Attempts", "Queue id",
                    "Mailing", "Message id", "Updated"]
#: The delivery filters an export link carries (``before`` pages, it filters nothing).
EXPORT_FILTERS = ("recipient", "queue_id", "mailing_id", "message_id", "domain", "state",
                  "since", "until", "stream")


class DeliveryFilters(TypedDict):
    """The filters of a delivery list (:meth:`Pages.filters`), as
    ``IOutcomeStore.search_deliveries`` takes them."""

    recipient: str | None
    queue_id: str | None
    mailing_id: str | None
    message_id: str | None
    domain: str | None
    state: str | None
    since: float | None
    until: float | None
    before_delivery_id: int | None
    stream: str | None


def export_query(filters: Mapping[str, object]) -> str:
    """``/export/deliveries.csv`` with a list's filters (:meth:`Pages.filters`).

    The link of a page carries everything that selects the page's rows,
    whether it came from the query string or from the path (a mailing id),
    so the file holds the rows the page lists, every page of them.
    """
    params = {k: repr(v) if isinstance(v, float) else str(v)
              for k in EXPORT_FILTERS if (v := filters.get(k)) is not None}
    return "/export/deliveries.csv" + ("?" + urlencode(params) if params else "")


def explain_result(analysis: str | None, recipient: str) -> dict[str, object] | None:
    """The recorded analysis's result for ``recipient`` (or its only result), if any."""
    if not analysis:
        return None
    try:
        record = json.loads(analysis)
    except ValueError:
        return None
    results = record.get("results") if isinstance(record, dict) else None
    if not isinstance(results, list):
        return None
    found = [r for r in results if isinstance(r, dict)
             and str(r.get("recipient") or "").lower() == recipient.lower()]
    if not found and len(results) == 1 and isinstance(results[0], dict):
        found = results
    return found[0] if found else None


def evidence_text(r: Mapping[str, object]) -> str:
    """One line of a result's evidence: action, stage, codes, type, remote MTA, family, text.

    The stage says where it was read: the notification or the text of a
    returned message, or, for a refusal during our own session, the
    command our client was sending. The enhanced status is ``specific`` or
    ``catch-all`` (x.Y.0, x.7.1: it names an area, the text decides),
    as ``hurricane analyze --explain`` prints it.
    """
    stage = r.get("stage")
    status = r.get("status")
    command = r.get("command")
    session = r.get("stage_source") == "session"
    where = (f"reply to our {text(command)}" if session and command
             else f"from the {text(r.get('stage_source'))}")
    kind = ""
    if status:
        kind = " (" + ("catch-all" if is_catch_all(str(status)) else "specific") + \
            (", inferred" if r.get("status_inferred") else "") + ")"
    diagnostic = " ".join(text(r.get("diagnostic")).split())[:300]
    parts = [f"action {text(r.get('action'))}",
             f"stage {stage} ({where})" if stage else "stage unknown",
             f"code {text(r.get('code')) or '-'}",
             f"status {text(status) or '-'}{kind}",
             f"diagnostic type {text(r.get('diagnostic_type')) or '-'}",
             f"remote MTA {text(r.get('remote_mta')) or '-'}"]
    if not session:
        # who wrote the returned message (our own session has no reporter)
        parts.append(f"reporter {text(r.get('family')) or '-'}")
    if diagnostic:
        parts.append(f"text {diagnostic}")
    return "; ".join(parts)


def decision_text(r: Mapping[str, object]) -> str:
    """The reason and the rule that decided it."""
    hard = " (hard)" if r.get("hard") else ""
    return (f"{text(r.get('reason'))}{hard}, by "
            f"{text(r.get('decided_by') or r.get('rule')) or '-'}")


def runner_up_text(r: Mapping[str, object]) -> str:
    """The answer the decision beat, and its rule."""
    if not r.get("runner_up"):
        return "none"
    return f"{text(r.get('runner_up'))} ({text(r.get('runner_up_rule')) or '-'})"


class Pages:
    """What every page shares: the store, the clock, the access policy, the operations.

    Args:
        store: the IOutcomeStore (the pages read it directly).
        clock: the injected clock ("last hour" is relative to it).
        access: the access policy (login and CSRF).
        operations: what the forms do.
    """

    def __init__(self, store: IOutcomeStore, clock: IReactorTime, access: AccessPolicy,
                 operations: Operations) -> None:
        self.store = store
        self.clock = clock
        self.access = access
        self.operations = operations
        #: The settling model the mailing pages share (rebuilt every few minutes).
        self.settle = SettleModels(store, clock)

    def csrf_field(self, user: str) -> Tag:
        """The hidden CSRF input of a form."""
        return tags.input(type="hidden", name="csrf", value=self.access.csrf_token(user))

    def window(self, request: Request) -> tuple[str, float, float]:
        """The selected window: (name, since, until).

        A named window ends at the next multiple of its alignment after now
        (so a page reloaded within minutes shows the same window).
        """
        name = arg(request, "window", "day") or "day"
        now = self.clock.seconds()
        if name == "custom":
            since = parse_time(arg(request, "since"), "since")
            until = parse_time(arg(request, "until"), "until") or now
            if since is None or since >= until:
                raise HttpError(400, "since: a custom window needs since before until",
                                "since")
            return name, since, until
        if name not in WINDOWS:
            raise HttpError(400, f"window: one of {', '.join(WINDOWS)} or custom", "window")
        _, span, align = WINDOWS[name]
        until = (now // align + 1) * align
        return name, until - span, until

    @staticmethod
    def window_form(name: str, since: float, until: float, action: str = "/") -> Tag:
        """The window selector (a GET form: works without JavaScript)."""
        options = [tags.option(label, value=key, **({"selected": "selected"}
                                                     if key == name else {}))
                   for key, (label, _, _) in WINDOWS.items()]
        options.append(tags.option("Custom", value="custom",
                                   **({"selected": "selected"} if name == "custom" else {})))
        iso = "%Y-%m-%dT%H:%M"
        return tags.form(
            tags.label("Window ", tags.select(*options, name="window")),
            tags.label(" from ", tags.input(type="datetime-local", name="since",
                                            value=time.strftime(iso, time.gmtime(since)))),
            tags.label(" to ", tags.input(type="datetime-local", name="until",
                                          value=time.strftime(iso, time.gmtime(until)))),
            tags.span(" (UTC; from/to apply to Custom) ", class_="muted small"),
            tags.button("Show", type="submit"), method="get", action=action, class_="toolbar")

    @staticmethod
    def delivery_rows(found: Sequence[Delivery]) -> list[tuple[object, ...]]:
        """Table rows for deliveries."""
        return [(link(f"/delivery/{d.delivery_id}", d.recipient), badge(d.state),
                 text(d.reason), text(d.code), d.attempts,
                 link(f"/message/{q(d.queue_id)}", d.queue_id),
                 link(f"/mailing/{q(d.mailing_id)}", d.mailing_id) if d.mailing_id else "",
                 text(d.message_id), fmt_time(d.updated_at)) for d in found]

    @staticmethod
    def pager(request: Request, found: Sequence[Delivery], limit: int, path: str,
              filters: Mapping[str, object]) -> Tag:
        """Links to the first and the next page (keyset on the delivery id), and the
        CSV of every row ``filters`` selects (:func:`export_query`)."""
        params = {k.decode(): v[0].decode("utf-8", "replace")
                  for k, v in query_args(request).items() if k != b"before" and v}
        links = []
        if "before" in {k.decode() for k in query_args(request)}:
            links.append(link(path + "?" + urlencode(params), "\u00ab First page"))
        if len(found) == limit:
            links.append(link(path + "?" + urlencode({**params,
                                                      "before": found[-1].delivery_id}),
                              "Next page \u00bb"))
        return tags.div(*links, link(export_query(filters), "Export these recipients (CSV)"),
                        class_="pager")

    def stream_names(self) -> list[str]:
        """The configured streams (the default one when the site has no configuration)."""
        streams = self.operations.streams
        return streams.names() if streams is not None else [DEFAULT_STREAM]

    @staticmethod
    def filters(request: Request) -> DeliveryFilters:
        """The delivery filters of a list's query (search, mailing, CSV export)."""
        before = arg(request, "before")
        if before is not None and not before.isdigit():
            raise HttpError(400, "before: expected a delivery id", "before")
        state = arg(request, "state") or None
        if state is not None and state not in STATES:
            raise HttpError(400, "state: unknown state", "state")
        return {
            "recipient": arg(request, "recipient") or None,
            "queue_id": arg(request, "queue_id") or None,
            "mailing_id": arg(request, "mailing_id") or None,
            "message_id": arg(request, "message_id") or None,
            "domain": arg(request, "domain") or None,
            "state": state,
            "since": parse_time(arg(request, "since"), "since"),
            "until": parse_time(arg(request, "until"), "until"),
            "before_delivery_id": int(before) if before else None,
            "stream": arg(request, "stream") or None,
        }


class Page(ReportResource):
    """One page of the report (see the module docstring for the order of checks).

    Subclasses override :meth:`get`, and forms (``form = True``) :meth:`post`.

    Args:
        pages: what the pages share.
    """

    #: True for the resources that take a form POST (and its small body).
    form: ClassVar[bool] = False
    #: The 404 message of an unknown child.
    not_found: ClassVar[str] = "No such page."

    def __init__(self, pages: Pages) -> None:
        super().__init__()
        self.pages = pages

    def render(self, request: Request) -> int:
        """Every method goes through :meth:`handle`."""
        return run_async(request, self.handle, error_page)

    async def handle(self, request: Request) -> None:
        """Log in, check a POST's CSRF token, then answer the method."""
        user = await self.pages.access.page_user(request)
        method = request.method
        if method == b"POST":
            self.pages.access.check_csrf(request, user, arg(request, "csrf"))
            return await self.post(request, user)
        if method not in (b"GET", b"HEAD"):
            raise HttpError(405, "Use GET (or POST for forms).")
        await self.get(request, user)

    async def get(self, request: Request, user: str) -> None:
        """Answer a GET (or HEAD): this resource has no page."""
        raise HttpError(404, "No such page.")

    async def post(self, request: Request, user: str) -> None:
        """Answer a POST whose CSRF token passed: not a form."""
        raise HttpError(405, "POST is not allowed here.")

    def body_limit(self, method: bytes) -> int:
        """A few KiB for a form's POST, else none."""
        return FORM_BODY_LIMIT if method == b"POST" and self.form else 0

    async def authorize(self, request: Request, method: bytes) -> None:
        """The login every page needs."""
        await self.pages.access.page_user(request)

    def missing(self, path: bytes) -> Resource:
        """An unknown page: 404 for a GET, 405 for a POST."""
        return NoPage(self.pages, self.not_found)


class NoPage(Page):
    """A path that names no page."""

    def __init__(self, pages: Pages, message: str = "No such page.") -> None:
        super().__init__(pages)
        self.message = message

    async def get(self, request: Request, user: str) -> None:
        """404 with the message."""
        raise HttpError(404, self.message)


class Collection(Page):
    """A path segment whose children are identifiers (``/mailing/<id>``...).

    Args:
        pages: what the pages share.
        child: makes the page of one identifier.
    """

    def __init__(self, pages: Pages, child: type[ItemPage]) -> None:
        super().__init__(pages)
        self.child = child

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """The page of the identifier ``path``."""
        if path == b"":
            return super().getChild(path, request)
        return self.child(self.pages, segment(path))


class ItemPage(Page):
    """The page of one identifier.

    Args:
        pages: what the pages share.
        key: the identifier, as the path gave it.
    """

    def __init__(self, pages: Pages, key: str) -> None:
        super().__init__(pages)
        self.key = key


# -- overview --------------------------------------------------------------------


async def outcome_chart(store: IOutcomeStore, first: float | None, last: float | None, *,
                        since: float, until: float, mailing_id: str | None = None) -> list[Tag]:
    """The outcome chart of the recipients created from ``first`` to ``last``, and its caption.

    The bars cover the data, not the window asked for: a 14-second run in
    "last day" gets 1-second bars (:func:`~hurricane.report.charts.time_axis`);
    only rows in [since, until) are counted.
    """
    if first is None or last is None:
        return [tags.p("Nothing was submitted in this window.", class_="muted")]
    axis = charts.time_axis(first, last)
    series = await store.outcome_series(max(since, axis.start), min(until, axis.end),
                                        axis.start, axis.bucket, mailing_id)
    chart = charts.stacked_bars(series, axis, title="Outcomes over time")
    caption = (f"Recipients by when they were submitted, coloured by their state now: "
               f"{fmt_time(axis.start)} \u2013 {fmt_time(axis.end)}, "
               f"{charts.duration_text(axis.bucket)} per bar.")
    return [chart, tags.p(caption, class_="muted small")]


class Overview(Page):
    """``/``: figures, the outcome time series, bounce reasons and top domains."""

    async def get(self, request: Request, user: str) -> None:
        """The overview of the selected window."""
        store = self.pages.store
        name, since, until = self.pages.window(request)
        summary = await store.summary(since, until)
        span = await store.created_span(since, until)
        chart = await outcome_chart(store, *(span or (None, None)), since=since, until=until)
        reasons = await store.bounce_reasons(since, until, 15)
        domains = await store.top_domains(since, until, 15)
        depth = await store.queue_depth()
        reason_chart = charts.horizontal_bars(
            [(r.reason, [(r.synchronous, charts.STATE_COLOURS["failed"], "synchronous"),
                         (r.asynchronous, charts.STATE_COLOURS["bounced"], "asynchronous")])
             for r in reasons], title="Bounce reasons")
        window = {"since": since, "until": until}
        domain_rows = []
        for d in domains:
            r = rates(d.by_state)
            found = export_query({"domain": d.domain, **window}).replace(
                "/export/deliveries.csv", "/search", 1)
            domain_rows.append((link(found, d.domain),
                                d.total, d.by_state.get("delivered", 0),
                                d.by_state.get("deferred", 0), percent(r.delivery),
                                percent(r.bounce), percent(r.complaint)))
        content: list[Flattenable] = [
            self.pages.window_form(name, since, until),
            tags.p(f"{fmt_time(since)} \u2013 {fmt_time(until)}; in the queue now: "
                   f"{depth.get('queued', 0)} queued, {depth.get('deferred', 0)} deferred. ",
                   link(export_query(window), "Export this window's recipients (CSV)"),
                   class_="muted"),
            *summary_block(summary),
            tags.h2("Outcomes over time"), tags.div(*chart, class_="card"),
            tags.h2("Bounce reasons ",
                    tags.span("(red: synchronous, pink: asynchronous)", class_="muted small")),
            tags.div(reason_chart, class_="card"),
            tags.h2("Top destination domains"),
            tags.div(table(["Domain", "Recipients", "Delivered", "Deferred", "Delivery rate",
                            "Bounce rate", "Complaint rate"], domain_rows, (1, 2, 3, 4, 5, 6)),
                     class_="card"),
            tags.p("Rates: delivery = (delivered + complained) / finished; bounce = (failed + "
                   "bounced) / finished; complaint = complained / (delivered + complained); "
                   "finished = delivered, failed, bounced, complained or expired recipients.",
                   class_="muted small"),
        ]
        finish(request, layout("Overview", content))


# -- lists -------------------------------------------------------------------------


class Search(Page):
    """``/search``: deliveries by recipient, queue id, mailing id or message id."""

    async def get(self, request: Request, user: str) -> None:
        """The search form and one page of results."""
        field = arg(request, "field", "recipient") or "recipient"
        term = arg(request, "q")
        if term:
            if field not in ("recipient", "queue_id", "mailing_id", "message_id"):
                raise HttpError(400, "field: unknown search field", "field")
            args = dict(query_args(request))
            args[field.encode()] = [term.encode("utf-8")]
            request.args = args
        filters = self.pages.filters(request)
        found = await self.pages.store.search_deliveries(**filters, limit=PAGE_SIZE)
        fields = [("recipient", "Recipient address"), ("queue_id", "Queue id"),
                  ("mailing_id", "Mailing id"), ("message_id", "Message id")]
        form = tags.form(
            tags.select(*[tags.option(label, value=key, **({"selected": "selected"}
                                                            if key == field else {}))
                          for key, label in fields], name="field"),
            tags.input(type="search", name="q", value=term or "", size="40",
                       placeholder="address or id"),
            tags.select(tags.option("any state", value=""),
                        *[tags.option(s, value=s, **({"selected": "selected"}
                                                     if s == filters["state"] else {}))
                          for s in STATES], name="state"),
            tags.input(type="text", name="domain", value=filters["domain"] or "",
                       placeholder="domain"),
            tags.select(tags.option("any stream", value=""),
                        *[tags.option(s, value=s, **({"selected": "selected"}
                                                     if s == filters["stream"] else {}))
                          for s in self.pages.stream_names()], name="stream"),
            # A window (the overview's domain links carry one) stays with the form.
            *[tags.input(type="hidden", name=k, value=repr(filters[k]))
              for k in ("since", "until") if filters[k] is not None],
            tags.button("Search", type="submit"), method="get", action="/search",
            class_="toolbar")
        window: list[Flattenable] = []
        if filters["since"] is not None or filters["until"] is not None:
            window = [tags.p("Submitted ", f"from {fmt_time(filters['since'])} "
                             if filters["since"] is not None else "",
                             f"before {fmt_time(filters['until'])}"
                             if filters["until"] is not None else "", " \u00b7 ",
                             link("/search", "search all times"), class_="muted")]
        content = [form, *window,
                   tags.div(table(DELIVERY_HEADERS, self.pages.delivery_rows(found), (4,)),
                            class_="card"),
                   self.pages.pager(request, found, PAGE_SIZE, "/search", filters)]
        finish(request, layout("Search", content))


# -- mailing, message, delivery, returned mail ---------------------------------------


class Message(ItemPage):
    """``/message/<queue id>``: envelope, identifiers and every recipient."""

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """``body``: the stored message."""
        if path == b"body":
            return MessageBody(self.pages, self.key)
        return super().getChild(path, request)

    async def get(self, request: Request, user: str) -> None:
        """The message page."""
        message = await self.pages.store.get_message(self.key)
        if message is None:
            raise HttpError(404, f"No message with queue id {self.key}.")
        found = await self.pages.store.search_deliveries(queue_id=message.queue_id, limit=1000)
        info = [("Queue id", message.queue_id), ("Envelope sender", message.sender or "<>"),
                ("Mailing id", message.mailing_id), ("Message id", message.message_id),
                ("Message-ID header", message.header_message_id),
                ("Size", f"{message.size} bytes"), ("Source", message.source),
                ("Client", message.client), ("Submitted", fmt_time(message.created_at)),
                ("Metadata", ", ".join(f"{k}={v}" for k, v in message.metadata.items()))]
        body = f"/message/{q(message.queue_id)}/body"
        content = [
            tags.div(table(["Field", "Value"], info), class_="card"),
            tags.p(link(body, "View the message"), " \u00b7 ",
                   link(body + "?download=1", "Download (.eml)")),
            tags.h2("Recipients"),
            tags.div(table(DELIVERY_HEADERS, self.pages.delivery_rows(list(reversed(found))),
                           (4,)), class_="card"),
        ]
        finish(request, layout(f"Message {message.queue_id}", content))


class MessageBody(ItemPage):
    """``/message/<queue id>/body``: the stored message as submitted (after preparation)."""

    async def get(self, request: Request, user: str) -> None:
        """The raw message."""
        message = await self.pages.store.get_message(self.key)
        if message is None:
            raise HttpError(404, f"No message with queue id {self.key}.")
        body = await self.pages.store.load_body(message.message_pk)
        raw_mail(request, body, f"{message.queue_id}.eml", bool(arg(request, "download")))


def outcome_times(d: Delivery) -> list[tuple[str, str]]:
    """The times of a recipient's outcome, as the recipient page lists them.

    The remote's 250 is "delivered" only while nothing came back: for a
    bounced or complained recipient it is when the remote *accepted* the
    message, shown next to the NDR (or complaint) with the time between them.
    """
    if d.state in (State.bounced, State.complained) and d.delivered_at is not None:
        rows = [("Accepted by remote", fmt_time(d.delivered_at))]
        later = [("Bounced", d.bounced_at)]
        if d.state is State.complained:
            # a complaint moves the row to complained and stamps updated_at
            later.append(("Complained", d.updated_at))
        for label, at in later:
            if at is not None:
                rows.append((label, f"{fmt_time(at)} ({fmt_duration(at - d.delivered_at)} "
                                    "after the remote accepted it)"))
        return rows
    return [(label, fmt_time(at)) for label, at in (("Delivered", d.delivered_at),
                                                    ("Bounced", d.bounced_at)) if at is not None]


#: The columns of the attempts and events table.
EVENT_HEADERS = ["When", "Event", "State, reason", "Reply", "Text", "Remote host (address)",
                 "Details"]


def remote_text(host: str | None, address: str | None) -> str:
    """``mx.example.com (192.0.2.1)``, or the one of them that is known."""
    if host and address and host != address:
        return f"{host} ({address})"
    return text(host or address)


def event_row(e: Event) -> tuple[object, ...]:
    """One row of the attempts and events table.

    The text gets the room (the ``text`` column wraps at word boundaries):
    the returned message's links go under the event, the reason under the
    state, and TLS, source, rule, duration, correlation and note share one
    column, a line each, because most events have only one or two of them.
    """
    event: list[Flattenable] = [text(getattr(e.kind, "value", e.kind))]
    if e.bounce_id is not None:
        event.append(tags.span(link(f"/bounce/{e.bounce_id}", "view"), " \u00b7 ",
                               link(f"/bounce/{e.bounce_id}?download=1", "download"),
                               class_="sub"))
    state: list[Flattenable] = [badge(e.state)] if e.state else []
    if e.reason:
        state.append(tags.span(e.reason, class_="sub"))
    # The note says when a weak correlation changed nothing: it goes with it.
    matched = " \u2014 ".join(text(x) for x in (e.correlation, e.note) if x)
    details = [f"{label} {value}" for label, value in (
        ("TLS", e.tls), ("source", e.source), ("sent from", e.source_ip),
        ("TLS result", e.tls_result), ("TLS policy", e.tls_policy_id or e.tls_policy_type),
        ("rule", e.rule),
        ("took", None if e.duration is None else f"{e.duration:.2f} s"),
        ("feedback type", e.feedback_type), ("correlation" if e.correlation else "", matched))
        if value]
    return (fmt_time(e.at), tags.span(*event), tags.span(*state),
            " ".join(text(x) for x in (e.code, e.status) if x),
            tags.span(text(e.text), class_="mono"), remote_text(e.remote_host, e.remote_ip),
            tags.span(*[tags.span(line, class_="sub") for line in details]))


class DeliveryPage(ItemPage):
    """``/delivery/<id>``: one recipient, its state and every attempt and event in order."""

    async def get(self, request: Request, user: str) -> None:
        """The recipient page, with "retry now" while it is deferred."""
        if not self.key.isdigit():
            raise HttpError(404, "No such delivery.")
        d = await self.pages.store.get_delivery(int(self.key))
        if d is None:
            raise HttpError(404, f"No delivery {self.key}.")
        events = await self.pages.store.events(d.delivery_id)
        info = [("Recipient", d.recipient), ("State", badge(d.state)), *outcome_times(d),
                ("Reason", d.reason), ("Hard", "yes" if d.hard else "no"),
                ("Last reply", " ".join(text(x) for x in (d.code, d.status) if x)),
                ("Text", d.text), ("Remote host", d.remote_host), ("Attempts", d.attempts),
                ("Next attempt", fmt_time(d.next_attempt_at)),
                ("Queue id", link(f"/message/{q(d.queue_id)}", d.queue_id)),
                ("Mailing id", link(f"/mailing/{q(d.mailing_id)}", d.mailing_id)
                 if d.mailing_id else ""), ("Message id", d.message_id),
                ("Stream", link("/search?" + urlencode({"stream": d.stream or DEFAULT_STREAM}),
                                d.stream or DEFAULT_STREAM)),
                ("Envelope sender", d.sender or "<>"), ("Created", fmt_time(d.created_at))]
        rows = [event_row(e) for e in events]
        content: list[Flattenable] = [tags.div(table(["Field", "Value"], info,
                                             classes={0: "nowrap", 1: "wrap"}), class_="card"),
                              tags.h2("Attempts and events")]
        content.append(tags.div(table(EVENT_HEADERS, rows, classes={0: "nowrap", 3: "nowrap",
                                                                    4: "text", 6: "lines"}),
                                class_="card"))
        why = await self._why(d.recipient, events)
        if why:
            content += [tags.h2("Why: the evidence and the decision"),
                        tags.div(table(["When", "Returned message", "Evidence", "Decision",
                                        "Runner-up it beat"], why,
                                       classes={0: "nowrap", 2: "text"}), class_="card")]
        if d.state.value == "deferred":
            content.append(tags.form(self.pages.csrf_field(user),
                                     tags.input(type="hidden", name="delivery_id",
                                                value=str(d.delivery_id)),
                                     tags.button("Retry now", type="submit"),
                                     method="post", action="/deferred/retry"))
        finish(request, layout(f"Recipient {d.recipient}", content))

    async def _why(self, recipient: str, events: Sequence[Event]) -> list[tuple[object, ...]]:
        """Per returned message of the recipient, and per refusal or deferral a
        server gave during our own session: the evidence, decision and runner-up.

        Read from the analysis recorded with the returned message (the same
        explanation as ``hurricane analyze --explain``; docs/bounce-reasons.md),
        or from the classifier's explanation recorded with the attempt
        (:func:`hurricane.decisions.explain_reply`).
        """
        rows: list[tuple[object, ...]] = []
        seen: set[int] = set()
        for e in events:
            own = event_explanation(e) if e.bounce_id is None else None
            if own is not None:
                rows.append((fmt_time(e.at), "none: our own SMTP session", evidence_text(own),
                             decision_text(own), runner_up_text(own)))
            if e.bounce_id is None or e.bounce_id in seen:
                continue
            seen.add(e.bounce_id)
            r = explain_result(await self.pages.store.bounce_analysis(e.bounce_id), recipient)
            if r is None:
                continue
            rows.append((fmt_time(e.at), link(f"/bounce/{e.bounce_id}", f"#{e.bounce_id}"),
                         evidence_text(r), decision_text(r), runner_up_text(r)))
        return rows


class RawBounce(ItemPage):
    """``/bounce/<id>``: a returned message as received."""

    async def get(self, request: Request, user: str) -> None:
        """The raw returned message, or 410 once retention purged it."""
        if not self.key.isdigit():
            raise HttpError(404, "No such returned message.")
        bounce = await self.pages.store.load_bounce(int(self.key))
        if bounce is None:
            raise HttpError(404, f"No returned message {self.key}.")
        if bounce.purged_at is not None:
            raise HttpError(410, f"Returned message {self.key} was purged at "
                                 f"{fmt_time(bounce.purged_at)} ([bounce] retention); "
                                 "its analysis and events are kept.")
        raw_mail(request, bounce.raw, f"bounce-{bounce.bounce_id}.eml",
                 bool(arg(request, "download")))


# -- suppressions --------------------------------------------------------------------


def _invalid(e: InvalidRequest) -> HttpError:
    """The operations' refusal as the 400 page (the same message as the API's)."""
    return HttpError(400, e.message, e.field)


class Suppressions(Page):
    """``/suppressions``: the list (paged by address, with its total) and the add and
    remove forms; each entry links to the delivery whose event put it there."""

    async def get(self, request: Request, user: str) -> None:
        """The list, or the entry of one address."""
        after = arg(request, "after") or None
        find = arg(request, "address") or None
        if find:
            entry = await self.pages.operations.suppression(find)
            page = [entry] if entry else []
        else:
            page = await self.pages.operations.suppressions(after=after, limit=PAGE_SIZE)
        total = await self.pages.store.suppression_count()
        causes = await self.pages.store.suppression_causes(
            [s.event_id for s in page if s.event_id is not None])
        csrf = self.pages.csrf_field(user)
        rows = [(s.address, s.reason, text(s.source), cause_link(s, causes), text(s.note),
                 fmt_time(s.created_at),
                 tags.form(csrf, tags.input(type="hidden", name="address", value=s.address),
                           tags.button("Remove", type="submit", class_="danger"),
                           method="post", action="/suppressions/remove", class_="inline"))
                for s in page]
        add = tags.form(csrf,
                        tags.input(type="email", name="address", required="required",
                                   placeholder="address@example.com", size="32"),
                        tags.input(type="text", name="reason", value="operator", size="12"),
                        tags.input(type="text", name="note", placeholder="note", size="24"),
                        tags.input(type="text", name="scope", value="global", size="16",
                                   title="global, stream:NAME, mailing:ID, or domain "
                                         "(the address is then a domain)"),
                        tags.button("Add", type="submit"), method="post",
                        action="/suppressions/add", class_="toolbar")
        look = tags.form(tags.input(type="search", name="address", value=find or "",
                                    placeholder="find an address", size="32"),
                         tags.button("Find", type="submit"), method="get",
                         action="/suppressions", class_="toolbar")
        pager = [link("/suppressions", "\u00ab First page")] if after or find else []
        if len(page) == PAGE_SIZE:
            pager.append(link("/suppressions?" + urlencode({"after": page[-1].address}),
                              "Next page \u00bb"))
        export = "/export/suppressions.csv" + (
            "?" + urlencode({"address": find}) if find else "")
        notice = arg(request, "done")
        shown = (f"{len(page)} found for {find!r}" if find else
                 f"{len(page)} shown, from {page[0].address}" if page and after else
                 f"{len(page)} of {total} shown")
        content = ([tags.div(notice, class_="msg")] if notice else []) + [
            kpis([("Suppressed addresses", total, "on the whole list")]), add, look,
            tags.p(shown, class_="muted small"),
            tags.div(table(["Address", "Reason", "Source", "Caused by", "Note", "Since", ""],
                           rows, classes={5: "nowrap"}), class_="card"),
            tags.div(*pager, link(export, "Export " + ("this entry" if find else "the list")
                                  + " (CSV)"), class_="pager")]
        content += await scoped_entries(self.pages, csrf, find)
        finish(request, layout("Suppression list", content))


async def scoped_entries(pages: Pages, csrf: Tag, find: str | None) -> list[Tag]:
    """The stream, mailing and domain entries (issue 20): those of the address
    looked for, else the first page, each with its remove button."""
    if find:
        found = [e for e in await pages.operations.suppression_entries(find)
                 if e.scope != "global"]
    else:
        found = await pages.operations.list_suppressions("scoped", None, PAGE_SIZE)
    rows = [(e.scope, e.address, e.reason, text(e.source), text(e.event_id),
             fmt_time(e.created_at), fmt_time(e.expires_at) if e.expires_at else "",
             tags.form(csrf, tags.input(type="hidden", name="address", value=e.address),
                       tags.input(type="hidden", name="scope", value=e.scope),
                       tags.button("Remove", type="submit", class_="danger"),
                       method="post", action="/suppressions/remove", class_="inline"))
            for e in found]
    return [tags.h2("Stream, mailing and domain entries"),
            tags.p("An unsubscribe stops one stream; a domain that did not resolve twice, "
                   "an hour apart, stops every address of the domain until removed here.",
                   class_="muted small"),
            tags.div(table(["Scope", "Address", "Reason", "Source", "Event", "Since",
                            "Expires", ""], rows, classes={5: "nowrap"}), class_="card")]


def cause_link(entry: Suppression, causes: dict[int, int]) -> Tag:
    """The delivery whose event put ``entry`` on the list, as a link (or what is known)."""
    if entry.event_id is None:
        return tags.span("added by hand" if entry.source == "operator" else "", class_="muted")
    delivery_id = causes.get(entry.event_id)
    if delivery_id is None:
        return tags.span(f"event {entry.event_id} (purged)", class_="muted")
    return link(f"/delivery/{delivery_id}", f"delivery {delivery_id}")


class SuppressionAdd(Page):
    """``POST /suppressions/add``: :meth:`Operations.suppress`."""

    form = True

    async def post(self, request: Request, user: str) -> None:
        """Add the address, then back to the list with a notice."""
        scope = arg(request, "scope") or "global"
        try:
            if scope != "global":  # a stream, mailing or domain entry (issue 20)
                scoped = await self.pages.operations.suppress_scoped(
                    arg(request, "address") or "", scope, arg(request, "reason") or "operator",
                    arg(request, "note") or None)
                added, address = scoped.changed, f"{scoped.address} ({scoped.scope})"
            else:
                result = await self.pages.operations.suppress(
                    arg(request, "address") or "", arg(request, "reason") or "operator",
                    arg(request, "note") or None)
                added, address = result.added, result.address
        except InvalidRequest as e:
            raise _invalid(e) from None
        done = (f"Added {address}." if added else f"{address} was already suppressed.")
        redirect(request, "/suppressions?" + urlencode({"done": done}))


class SuppressionRemove(Page):
    """``POST /suppressions/remove``: :meth:`Operations.unsuppress`."""

    form = True

    async def post(self, request: Request, user: str) -> None:
        """Remove the address, then back to the list with a notice."""
        try:
            scoped = await self.pages.operations.unsuppress_scoped(
                arg(request, "address") or "", arg(request, "scope") or None)
        except InvalidRequest as e:
            raise _invalid(e) from None
        what = scoped.address + ("" if scoped.scope == "global" else f" ({scoped.scope})")
        done = f"Removed {what}." if scoped.changed else f"{what} was not suppressed."
        redirect(request, "/suppressions?" + urlencode({"done": done}))


# -- deferred queue ----------------------------------------------------------------


def last_error(code: int | None, status: str | None, reply: str | None) -> str:
    """A deferred delivery's last reply: ``451 4.7.1 greylisted``.

    The enhanced status is said once: most servers start their text with it.
    """
    if status and reply and reply.startswith(status):
        status = None
    return " ".join(text(x) for x in (code, status, reply) if x)


def retry_form(pages: Pages, user: str, **fields: str) -> Tag:
    """A "Retry now" button posting ``fields`` to ``/deferred/retry``."""
    return tags.form(pages.csrf_field(user),
                     *[tags.input(type="hidden", name=k, value=v) for k, v in fields.items()],
                     tags.button("Retry now", type="submit"), method="post",
                     action="/deferred/retry", class_="inline")


class DeferredQueue(Page):
    """``/deferred``: the deferred queue by destination domain with each one's last error;
    a domain links to its deliveries (``/deferred/domain/<domain>``)."""

    async def get(self, request: Request, user: str) -> None:
        """The queue by domain."""
        groups = await self.pages.store.deferred_domains(200)
        depth = await self.pages.store.queue_depth()
        rows = [(link(f"/deferred/domain/{q(g.domain)}", g.domain), g.count,
                 fmt_time(g.oldest_created_at), fmt_time(g.next_attempt_at),
                 tags.span(tags.span(last_error(g.code, g.status, g.text), class_="mono"),
                           tags.span(f"from {g.remote_host}" if g.remote_host else "",
                                     class_="sub")),
                 fmt_time(g.last_update), retry_form(self.pages, user, domain=g.domain))
                for g in groups]
        notice = arg(request, "done")
        content = ([tags.div(notice, class_="msg")] if notice else []) + [
            kpis([("Queued", depth.get("queued", 0)), ("Deferred", depth.get("deferred", 0)),
                  ("Domains", len(groups))]),
            tags.div(table(["Domain", "Deferred", "Oldest", "Next attempt", "Last error",
                            "Last update", ""], rows, (1,),
                           classes={2: "nowrap", 3: "nowrap", 4: "text", 5: "nowrap"}),
                     class_="card"),
            tags.p("A domain's last error is the last reply of its most recently tried "
                   "deferred delivery; open the domain for each delivery's.",
                   class_="muted small")]
        finish(request, layout("Deferred queue", content))

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """``domain``: the pages of the domains (``retry`` is put as a child)."""
        if path == b"domain":
            return Collection(self.pages, DeferredDomain)
        return super().getChild(path, request)


class DeferredDomain(ItemPage):
    """``/deferred/domain/<domain>``: the deferred deliveries to one domain."""

    async def get(self, request: Request, user: str) -> None:
        """One page of the domain's deferred deliveries, each with its last error."""
        domain = self.key.strip().lower()
        filters = self.pages.filters(request)
        filters.update({"domain": domain, "state": State.deferred.value})
        found = await self.pages.store.search_deliveries(**filters, limit=PAGE_SIZE)
        path = f"/deferred/domain/{q(domain)}"
        rows = [(tags.span(link(f"/delivery/{d.delivery_id}", d.recipient),
                           tags.span("queued ", fmt_time(d.created_at), " \u00b7 ",
                                     link(f"/message/{q(d.queue_id)}", d.queue_id),
                                     class_="sub")),
                 d.attempts, tags.span(last_error(d.code, d.status, d.text), class_="mono"),
                 text(d.remote_host), fmt_time(d.updated_at), fmt_time(d.next_attempt_at),
                 retry_form(self.pages, user, domain=domain, delivery_id=str(d.delivery_id)))
                for d in found]
        notice = arg(request, "done")
        content = ([tags.div(notice, class_="msg")] if notice else []) + [
            tags.div(link("/deferred", "\u00ab Deferred queue"),
                     retry_form(self.pages, user, domain=domain),
                     tags.span("every deferred delivery to this domain", class_="muted"),
                     class_="toolbar"),
            tags.div(table(["Recipient", "Attempts", "Last error", "Remote host",
                            "Last attempt", "Next attempt", ""], rows,
                           (1,), classes={2: "text", 4: "nowrap", 5: "nowrap"}),
                     class_="card"),
            self.pages.pager(request, found, PAGE_SIZE, path, filters)]
        finish(request, layout(f"Deferred to {domain}", content))


class Retry(Page):
    """``POST /deferred/retry``: :meth:`Operations.retry` for a domain or one delivery."""

    form = True

    async def post(self, request: Request, user: str) -> None:
        """Make the mail due now (the scheduler is woken), then back to where it came from."""
        domain = arg(request, "domain") or None
        given = arg(request, "delivery_id") or None
        delivery_id = int(given) if given is not None and given.isdigit() else None
        if given is not None and delivery_id is None and domain is not None:
            raise HttpError(400, "delivery_id: expected a delivery id", "delivery_id")
        try:
            count = await self.pages.operations.retry(domain=domain, delivery_id=delivery_id)
        except InvalidRequest as e:
            raise _invalid(e) from None
        if delivery_id is not None and domain is None:
            redirect(request, f"/delivery/{delivery_id}")
            return
        assert domain is not None  # the operations refuse a retry without a filter
        done = (f"{count} deliveries to {domain} are due now." if delivery_id is None else
                f"Delivery {delivery_id} is due now." if count else
                f"Delivery {delivery_id} was not deferred any more.")
        # Back to where the form was: a domain's page posts its delivery ids.
        back = (f"/deferred/domain/{q(domain.strip().lower())}" if delivery_id is not None
                else "/deferred")
        redirect(request, back + "?" + urlencode({"done": done}))


# -- CSV ------------------------------------------------------------------------------


class ExportOutcomes(Page):
    """``/export/outcomes.csv``: one outcome record per recipient (state, mailing filters)."""

    async def get(self, request: Request, user: str) -> None:
        """Stream the records page by page."""
        state = arg(request, "state") or None
        mailing = arg(request, "mailing_id") or None
        stream = arg(request, "stream") or None
        store = self.pages.store

        async def outcome_pages() -> AsyncIterator[list[list[object]]]:
            after = 0
            while True:
                page: list[Outcome] = await store.outcomes(after, CSV_PAGE, state=state,
                                                           mailing_id=mailing, stream=stream)
                if not page:
                    return
                yield [[getattr(o, f) for f in Outcome.FIELDS] for o in page]
                if len(page) < CSV_PAGE:
                    return
                after = page[-1].delivery_id

        await stream_csv(request, "outcomes.csv", Outcome.FIELDS, outcome_pages())


class ExportDeliveries(Page):
    """``/export/deliveries.csv``: the deliveries of a search (its filters)."""

    COLUMNS = ("delivery_id", "queue_id", "recipient", "state", "reason", "hard", "code",
               "status", "text", "attempts", "remote_host", "mailing_id", "message_id",
               "header_message_id", "created_at", "updated_at", "stream")

    async def get(self, request: Request, user: str) -> None:
        """Stream the deliveries page by page."""
        filters = self.pages.filters(request)
        store = self.pages.store

        async def delivery_pages() -> AsyncIterator[list[list[object]]]:
            while True:
                page = await store.search_deliveries(**filters, limit=CSV_PAGE)
                if not page:
                    return
                yield [[getattr(getattr(d, c), "value", getattr(d, c)) if c != "stream"
                        else d.stream or DEFAULT_STREAM for c in self.COLUMNS] for d in page]
                if len(page) < CSV_PAGE:
                    return
                filters["before_delivery_id"] = page[-1].delivery_id

        await stream_csv(request, "deliveries.csv", self.COLUMNS, delivery_pages())


class ExportSuppressions(Page):
    """``/export/suppressions.csv``: the suppression list, or the entry of ``address``."""

    COLUMNS = ("address", "reason", "source", "note", "created_at", "event_id")

    async def get(self, request: Request, user: str) -> None:
        """Stream the list page by page (the one entry the list page found)."""
        operations = self.pages.operations
        find = arg(request, "address") or None

        async def suppression_pages() -> AsyncIterator[list[list[object]]]:
            if find is not None:
                entry = await operations.suppression(find)
                if entry is not None:
                    yield [[getattr(entry, c) for c in self.COLUMNS]]
                return
            after = None
            while True:
                page = await operations.suppressions(after=after, limit=CSV_PAGE)
                if not page:
                    return
                yield [[getattr(s, c) for c in self.COLUMNS] for s in page]
                if len(page) < CSV_PAGE:
                    return
                after = page[-1].address

        await stream_csv(request, "suppressions.csv", self.COLUMNS, suppression_pages())


class Exports(Page):
    """``/export``: the CSV exports are its children."""

    not_found = "No such export."
