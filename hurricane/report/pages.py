"""The web report: server-rendered HTML pages (twisted.web.template), no JavaScript.

Every page is built as a ``Tag`` tree and flattened by twisted.web.template,
which escapes all text and attribute values: an address like ``<script>@x``
shows as text. Charts are inline SVG (:mod:`hurricane.report.charts`). Lists
are paged with keysets and exportable as streaming CSV. Forms that change
state (suppression add/remove, retry now) are POST only and CSRF-protected.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlencode

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.template import Tag, flatten, tags

from hurricane.model import Delivery, Outcome, Summary
from hurricane.report import charts
from hurricane.report.api import parse_time
from hurricane.report.auth import AccessPolicy
from hurricane.report.csvexport import stream_csv
from hurricane.report.figures import STATES, percent, rates
from hurricane.report.resource import HttpError, arg, query_args, run_async

__all__ = ["ReportPages", "WINDOWS", "fmt_time"]

log = Logger()

#: Named windows: (label, seconds, chart bucket seconds).
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

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f4f5f7}
header{background:#1f2933;color:#fff;padding:10px 24px;display:flex;align-items:center;gap:24px}
header a{color:#cbd2d9;text-decoration:none;font-weight:500}header a:hover{color:#fff}
header .brand{color:#fff;font-weight:700;font-size:17px;letter-spacing:.3px}
main{padding:20px 24px;max-width:1240px;margin:0 auto}
h1{font-size:21px;margin:4px 0 14px}h2{font-size:16px;margin:22px 0 8px;color:#334}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 16px;margin:0 0 14px}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px;
margin-bottom:14px}
.kpi{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:10px 12px}
.kpi .v{font-size:22px;font-weight:650}.kpi .l{color:#667;font-size:12px;text-transform:uppercase;
letter-spacing:.4px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{font-size:12px;color:#556;text-transform:uppercase;letter-spacing:.3px;background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-size:12px}
form.inline{display:inline}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c5cbd3;border-radius:5px;
background:#fff}
button{background:#1f6feb;color:#fff;border-color:#1f6feb;cursor:pointer}
button.danger{background:#c62828;border-color:#c62828}
.muted{color:#778}.small{font-size:12px}.mono{font-family:ui-monospace,Menlo,monospace;
font-size:12.5px;word-break:break-all}
.pager{margin:10px 0}.pager a{margin-right:12px}
.toolbar{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:12px}
.msg{padding:10px 14px;border-radius:6px;background:#fff3cd;border:1px solid #ffe08a;
margin-bottom:14px}
svg.chart{max-width:100%;height:auto;display:block}
"""


def fmt_time(value: float | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (UTC), or an empty string."""
    if value is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def badge(state: str) -> Tag:
    """A coloured state label."""
    state = str(getattr(state, "value", state))
    return tags.span(state, class_="badge",
                     style=f"background:{charts.STATE_COLOURS.get(state, '#607d8b')}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
          numeric: Sequence[int] = ()) -> Tag:
    """A table of ``rows`` (each cell text or a Tag)."""
    head = tags.tr(*[tags.th(h, class_="n" if i in numeric else "") for i, h in
                     enumerate(headers)])
    body = [tags.tr(*[tags.td(c if isinstance(c, Tag) else _text(c),
                              class_="n" if i in numeric else "") for i, c in enumerate(row)])
            for row in rows]
    if not rows:
        body = [tags.tr(tags.td("Nothing to show.", colspan=str(len(headers)),
                                class_="muted"))]
    return tags.table(tags.thead(head), tags.tbody(*body))


def explain_result(analysis: str | None, recipient: str) -> dict[str, Any] | None:
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


def evidence_text(r: dict[str, Any]) -> str:
    """One line of a result's evidence: action, stage, codes, type, remote MTA, family."""
    stage = r.get("stage")
    status = r.get("status")
    parts = [f"action {_text(r.get('action'))}",
             f"stage {stage} (from the {_text(r.get('stage_source'))})" if stage
             else "stage unknown",
             f"code {_text(r.get('code')) or '-'}",
             f"status {_text(status) or '-'}"
             + (" (inferred)" if status and r.get("status_inferred") else ""),
             f"diagnostic type {_text(r.get('diagnostic_type')) or '-'}",
             f"remote MTA {_text(r.get('remote_mta')) or '-'}",
             f"reporter {_text(r.get('family')) or '-'}"]
    return "; ".join(parts)


def decision_text(r: dict[str, Any]) -> str:
    """The reason and the rule that decided it."""
    hard = " (hard)" if r.get("hard") else ""
    return (f"{_text(r.get('reason'))}{hard}, by "
            f"{_text(r.get('decided_by') or r.get('rule')) or '-'}")


def runner_up_text(r: dict[str, Any]) -> str:
    """The answer the decision beat, and its rule."""
    if not r.get("runner_up"):
        return "none"
    return f"{_text(r.get('runner_up'))} ({_text(r.get('runner_up_rule')) or '-'})"


def link(href: str, text: Any) -> Tag:
    """An ``<a>``."""
    return tags.a(_text(text), href=href)


def q(value: str) -> str:
    """A path segment, quoted."""
    return quote(value, safe="")


def kpis(items: Sequence[tuple[str, Any]]) -> Tag:
    """A row of key figures."""
    return tags.div(*[tags.div(tags.div(_text(v), class_="v"), tags.div(label, class_="l"),
                               class_="kpi") for label, v in items], class_="kpis")


def summary_block(summary: Summary) -> list[Tag]:
    """Key figures and the table by state of a summary."""
    r = rates(summary.by_state)
    figures = kpis([
        ("Messages", summary.messages), ("Recipients", summary.recipients),
        ("Delivery rate", percent(r.delivery)), ("Bounce rate", percent(r.bounce)),
        ("sync (failed)", percent(r.bounce_sync)), ("async (bounced)", percent(r.bounce_async)),
        ("Complaint rate", percent(r.complaint)),
    ])
    rows = [(badge(s), summary.by_state.get(s, 0),
             percent(summary.by_state.get(s, 0) / summary.recipients
                     if summary.recipients else None)) for s in STATES]
    return [figures, tags.div(table(["State", "Recipients", "Share"], rows, (1, 2)),
                              class_="card")]


class ReportPages(Resource):
    """Every HTML page and CSV export of the report; dispatches on the path.

    Args:
        store: the IOutcomeStore.
        clock: the injected clock ("last hour" is relative to it).
        access: the access policy (login and CSRF).
    """

    isLeaf = True

    def __init__(self, store: Any, clock: IReactorTime, access: AccessPolicy) -> None:
        super().__init__()
        self.store = store
        self.clock = clock
        self.access = access

    def render(self, request: Request) -> Any:
        """Every method goes through :meth:`handle`."""
        return run_async(request, self.handle, self._error)

    def _error(self, request: Request, code: int, message: str, field: str | None,
               challenge: bytes | None) -> None:
        if challenge is not None:
            request.setHeader(b"www-authenticate", challenge)
        request.setResponseCode(code)
        titles = {400: "Bad request", 401: "Login required", 403: "Forbidden",
                  404: "Not found", 405: "Method not allowed", 503: "Store unavailable"}
        self._finish(request, self.layout(titles.get(code, "Error"), [
            tags.div(message, class_="msg")]))

    # -- plumbing ----------------------------------------------------------------

    def layout(self, title: str, content: list[Any]) -> Tag:
        """The page frame: head with inline CSS, navigation, content."""
        nav = [tags.a("Hurricane", href="/", class_="brand"), link("/", "Overview"),
               link("/search", "Search"), link("/deferred", "Deferred queue"),
               link("/suppressions", "Suppressions"), link("/export/outcomes.csv",
                                                           "Export CSV")]
        return tags.html(
            tags.head(tags.meta(charset="utf-8"), tags.title(f"{title} \u2013 Hurricane"),
                      tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                      tags.style(CSS)),
            tags.body(Tag("header")(*nav), Tag("main")(tags.h1(title), *content)),
            lang="en")

    def _finish(self, request: Request, page: Tag) -> None:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.write(b"<!DOCTYPE html>\n")
        d = flatten(request, page, request.write)
        d.addCallback(lambda _: request.finish())
        d.addErrback(lambda f: log.failure("flattening a page failed", f))

    @staticmethod
    def _parts(postpath: list[bytes]) -> list[str]:
        """The path segments as text, without trailing empty ones."""
        parts = [unquote(p.decode("utf-8", "replace")) for p in postpath]
        while parts and parts[-1] == "":
            parts.pop()
        return parts

    def body_limit(self, method: bytes, postpath: list[bytes]) -> int:
        """The largest request body a page takes: a few KiB for the forms, else none.

        The request gate (:mod:`hurricane.report.web`) refuses a bigger one
        before reading it.
        """
        if method == b"POST" and self._parts(postpath) in self.FORMS:
            return FORM_BODY_LIMIT
        return 0

    #: The paths that take a form POST.
    FORMS = (["suppressions", "add"], ["suppressions", "remove"], ["deferred", "retry"])

    async def handle(self, request: Request) -> None:
        """Log in, then route by method and path."""
        user = await self.access.page_user(request)
        parts = self._parts(request.postpath or [])
        method = request.method
        head, rest = (parts[0] if parts else ""), parts[1:]
        if method == b"POST":
            token = arg(request, "csrf")
            self.access.check_csrf(request, user, token)
            if head == "suppressions" and rest == ["add"]:
                return await self.suppression_add(request)
            if head == "suppressions" and rest == ["remove"]:
                return await self.suppression_remove(request)
            if head == "deferred" and rest == ["retry"]:
                return await self.retry(request)
            raise HttpError(405, "POST is not allowed here.")
        if method not in (b"GET", b"HEAD"):
            raise HttpError(405, "Use GET (or POST for forms).")
        if not parts:
            return await self.overview(request)
        if head == "mailing" and len(rest) == 1:
            return await self.mailing(request, user, rest[0])
        if head == "message" and len(rest) == 1:
            return await self.message(request, rest[0])
        if head == "message" and len(rest) == 2 and rest[1] == "body":
            return await self.message_body(request, rest[0])
        if head == "delivery" and len(rest) == 1:
            return await self.delivery(request, user, rest[0])
        if head == "bounce" and len(rest) == 1:
            return await self.raw_bounce(request, rest[0])
        if head == "search" and not rest:
            return await self.search(request)
        if head == "suppressions" and not rest:
            return await self.suppressions(request, user)
        if head == "deferred" and not rest:
            return await self.deferred(request, user)
        if head == "export" and len(rest) == 1:
            return await self.export(request, rest[0])
        raise HttpError(404, "No such page.")

    def csrf_field(self, user: str) -> Tag:
        """The hidden CSRF input of a form."""
        return tags.input(type="hidden", name="csrf", value=self.access.csrf_token(user))

    def window(self, request: Request) -> tuple[str, float, float, float]:
        """The selected window: (name, since, until, chart bucket)."""
        name = arg(request, "window", "day") or "day"
        now = self.clock.seconds()
        if name == "custom":
            since = parse_time(arg(request, "since"), "since")
            until = parse_time(arg(request, "until"), "until") or now
            if since is None or since >= until:
                raise HttpError(400, "since: a custom window needs since before until",
                                "since")
            span = until - since
            bucket = max(60.0, span / 48)
            return name, since, until, bucket
        if name not in WINDOWS:
            raise HttpError(400, f"window: one of {', '.join(WINDOWS)} or custom", "window")
        _, span, bucket = WINDOWS[name]
        until = (now // bucket + 1) * bucket
        return name, until - span, until, float(bucket)

    def window_form(self, name: str, since: float, until: float, action: str = "/") -> Tag:
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

    # -- overview ------------------------------------------------------------------

    async def overview(self, request: Request) -> None:
        """Figures, the outcome time series, bounce reasons and top domains for a window."""
        name, since, until, bucket = self.window(request)
        summary = await self.store.summary(since, until)
        series = await self.store.timeseries(since, until, bucket)
        reasons = await self.store.bounce_reasons(since, until, 15)
        domains = await self.store.top_domains(since, until, 15)
        depth = await self.store.queue_depth()
        fmt = "%H:%M" if until - since <= 2 * 86400 else "%m-%d %H:%M"
        chart = charts.stacked_bars(series, since, until, bucket,
                                    lambda t: time.strftime(fmt, time.gmtime(t)),
                                    title="Outcomes over time")
        reason_chart = charts.horizontal_bars(
            [(r.reason, [(r.synchronous, charts.STATE_COLOURS["failed"], "synchronous"),
                         (r.asynchronous, charts.STATE_COLOURS["bounced"], "asynchronous")])
             for r in reasons], title="Bounce reasons")
        domain_rows = []
        for d in domains:
            r = rates(d.by_state)
            domain_rows.append((link("/search?" + urlencode({"domain": d.domain}), d.domain),
                                d.total, d.by_state.get("delivered", 0),
                                d.by_state.get("deferred", 0), percent(r.delivery),
                                percent(r.bounce), percent(r.complaint)))
        content: list[Any] = [
            self.window_form(name, since, until),
            tags.p(f"{fmt_time(since)} \u2013 {fmt_time(until)}; in the queue now: "
                   f"{depth.get('queued', 0)} queued, {depth.get('deferred', 0)} deferred.",
                   class_="muted"),
            *summary_block(summary),
            tags.h2("Outcomes over time"), tags.div(chart, class_="card"),
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
        self._finish(request, self.layout("Overview", content))

    # -- lists -----------------------------------------------------------------------

    def delivery_rows(self, found: Sequence[Delivery]) -> list[tuple[Any, ...]]:
        """Table rows for deliveries."""
        return [(link(f"/delivery/{d.delivery_id}", d.recipient), badge(d.state),
                 _text(d.reason), _text(d.code), d.attempts,
                 link(f"/message/{q(d.queue_id)}", d.queue_id),
                 link(f"/mailing/{q(d.mailing_id)}", d.mailing_id) if d.mailing_id else "",
                 _text(d.message_id), fmt_time(d.updated_at)) for d in found]

    DELIVERY_HEADERS = ["Recipient", "State", "Reason", "Code", "Attempts", "Queue id",
                        "Mailing", "Message id", "Updated"]

    def pager(self, request: Request, found: Sequence[Delivery], limit: int,
              path: str) -> Tag:
        """Links to the first and the next page (keyset on the delivery id)."""
        params = {k.decode(): v[0].decode("utf-8", "replace")
                  for k, v in query_args(request).items() if k != b"before" and v}
        links = []
        if "before" in {k.decode() for k in query_args(request)}:
            links.append(link(path + "?" + urlencode(params), "\u00ab First page"))
        if len(found) == limit:
            links.append(link(path + "?" + urlencode({**params,
                                                      "before": found[-1].delivery_id}),
                              "Next page \u00bb"))
        csv_link = "/export/deliveries.csv?" + urlencode(params)
        return tags.div(*links, link(csv_link, "Export as CSV"), class_="pager")

    def _filters(self, request: Request) -> dict[str, Any]:
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
            "before_delivery_id": int(before) if before else None,
        }

    async def search(self, request: Request) -> None:
        """Search deliveries by recipient, queue id, mailing id or message id."""
        field = arg(request, "field", "recipient") or "recipient"
        term = arg(request, "q")
        if term:
            if field not in ("recipient", "queue_id", "mailing_id", "message_id"):
                raise HttpError(400, "field: unknown search field", "field")
            args = dict(query_args(request))
            args[field.encode()] = [term.encode("utf-8")]
            request.args = args
        filters = self._filters(request)
        found = await self.store.search_deliveries(**filters, limit=PAGE_SIZE)
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
            tags.button("Search", type="submit"), method="get", action="/search",
            class_="toolbar")
        content = [form, tags.div(table(self.DELIVERY_HEADERS, self.delivery_rows(found), (4,)),
                                  class_="card"),
                   self.pager(request, found, PAGE_SIZE, "/search")]
        self._finish(request, self.layout("Search", content))

    # -- mailing, message, delivery ---------------------------------------------------

    async def mailing(self, request: Request, user: str, mailing_id: str) -> None:
        """One mailing: its figures and its recipients."""
        summary = await self.store.mailing_summary(mailing_id)
        if summary.recipients == 0:
            raise HttpError(404, f"No mailing {mailing_id}.")
        filters = self._filters(request)
        filters["mailing_id"] = mailing_id
        found = await self.store.search_deliveries(**filters, limit=PAGE_SIZE)
        reasons = sorted(summary.by_reason.items(), key=lambda kv: -kv[1])
        content = [
            *summary_block(summary),
            tags.h2("Reasons"),
            tags.div(table(["Reason", "Recipients"], reasons, (1,)), class_="card"),
            tags.h2("Recipients"),
            tags.div(table(self.DELIVERY_HEADERS, self.delivery_rows(found), (4,)),
                     class_="card"),
            self.pager(request, found, PAGE_SIZE, f"/mailing/{q(mailing_id)}"),
        ]
        self._finish(request, self.layout(f"Mailing {mailing_id}", content))

    async def message(self, request: Request, queue_id: str) -> None:
        """One message: envelope, identifiers and every recipient."""
        message = await self.store.get_message(queue_id)
        if message is None:
            raise HttpError(404, f"No message with queue id {queue_id}.")
        found = await self.store.search_deliveries(queue_id=message.queue_id, limit=1000)
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
            tags.div(table(self.DELIVERY_HEADERS, self.delivery_rows(list(reversed(found))),
                           (4,)), class_="card"),
        ]
        self._finish(request, self.layout(f"Message {message.queue_id}", content))

    async def delivery(self, request: Request, user: str, delivery_id: str) -> None:
        """One recipient: its state and every attempt and event in order."""
        if not delivery_id.isdigit():
            raise HttpError(404, "No such delivery.")
        d = await self.store.get_delivery(int(delivery_id))
        if d is None:
            raise HttpError(404, f"No delivery {delivery_id}.")
        events = await self.store.events(d.delivery_id)
        info = [("Recipient", d.recipient), ("State", badge(d.state)),
                ("Reason", d.reason), ("Hard", "yes" if d.hard else "no"),
                ("Last reply", " ".join(_text(x) for x in (d.code, d.status) if x)),
                ("Text", d.text), ("Remote host", d.remote_host), ("Attempts", d.attempts),
                ("Next attempt", fmt_time(d.next_attempt_at)),
                ("Queue id", link(f"/message/{q(d.queue_id)}", d.queue_id)),
                ("Mailing id", link(f"/mailing/{q(d.mailing_id)}", d.mailing_id)
                 if d.mailing_id else ""), ("Message id", d.message_id),
                ("Envelope sender", d.sender or "<>"), ("Created", fmt_time(d.created_at)),
                ("Delivered", fmt_time(d.delivered_at)), ("Bounced", fmt_time(d.bounced_at))]
        rows = []
        for e in events:
            raw: Any = ""
            if e.bounce_id is not None:
                raw = tags.span(link(f"/bounce/{e.bounce_id}", "view"), " ",
                                link(f"/bounce/{e.bounce_id}?download=1", "download"))
            rows.append((fmt_time(e.at), _text(getattr(e.kind, "value", e.kind)),
                         badge(e.state) if e.state else "", _text(e.reason),
                         " ".join(_text(x) for x in (e.code, e.status) if x),
                         tags.span(_text(e.text), class_="mono"),
                         " ".join(_text(x) for x in (e.remote_host, e.remote_ip) if x),
                         _text(e.tls), _text(e.source), _text(e.rule),
                         "" if e.duration is None else f"{e.duration:.2f} s",
                         # the note says when a weak correlation changed nothing
                         " \u2014 ".join(_text(x) for x in (e.correlation or e.feedback_type,
                                                            e.note) if x), raw))
        content: list[Any] = [tags.div(table(["Field", "Value"], info), class_="card"),
                              tags.h2("Attempts and events")]
        content.append(tags.div(table(["When", "Event", "State", "Reason", "Code", "Text",
                                       "Remote", "TLS", "Source", "Rule", "Duration",
                                       "Correlation", "Returned message"], rows),
                                class_="card"))
        why = await self._why(d.recipient, events)
        if why:
            content += [tags.h2("Why: the evidence and the decision"),
                        tags.div(table(["When", "Returned message", "Evidence", "Decision",
                                        "Runner-up it beat"], why), class_="card")]
        if d.state.value == "deferred":
            content.append(tags.form(self.csrf_field(user),
                                     tags.input(type="hidden", name="delivery_id",
                                                value=str(d.delivery_id)),
                                     tags.button("Retry now", type="submit"),
                                     method="post", action="/deferred/retry"))
        self._finish(request, self.layout(f"Recipient {d.recipient}", content))

    async def _why(self, recipient: str, events: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Per returned message of the recipient: its evidence, decision and runner-up.

        Read from the analysis recorded with the returned message (the same
        explanation as ``hurricane analyze --explain``; docs/bounce-reasons.md).
        """
        rows: list[tuple[Any, ...]] = []
        seen: set[int] = set()
        for e in events:
            if e.bounce_id is None or e.bounce_id in seen:
                continue
            seen.add(e.bounce_id)
            r = explain_result(await self.store.bounce_analysis(e.bounce_id), recipient)
            if r is None:
                continue
            rows.append((fmt_time(e.at), link(f"/bounce/{e.bounce_id}", f"#{e.bounce_id}"),
                         evidence_text(r), decision_text(r), runner_up_text(r)))
        return rows

    def _raw(self, request: Request, data: bytes, filename: str) -> None:
        """Raw mail as plain text (never as HTML), inline or as a download."""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        # A sandbox CSP: even a browser that sniffed would run nothing.
        request.setHeader(b"content-security-policy", b"sandbox; default-src 'none'")
        disposition = "attachment" if arg(request, "download") else "inline"
        request.setHeader(b"content-disposition",
                          f'{disposition}; filename="{filename}"'.encode("ascii"))
        request.write(data)
        request.finish()

    async def raw_bounce(self, request: Request, bounce_id: str) -> None:
        """A returned message as received."""
        if not bounce_id.isdigit():
            raise HttpError(404, "No such returned message.")
        bounce = await self.store.load_bounce(int(bounce_id))
        if bounce is None:
            raise HttpError(404, f"No returned message {bounce_id}.")
        if bounce.purged_at is not None:
            raise HttpError(410, f"Returned message {bounce_id} was purged at "
                                 f"{fmt_time(bounce.purged_at)} ([bounce] retention); "
                                 "its analysis and events are kept.")
        self._raw(request, bounce.raw, f"bounce-{bounce.bounce_id}.eml")

    async def message_body(self, request: Request, queue_id: str) -> None:
        """A stored message as submitted (after preparation)."""
        message = await self.store.get_message(queue_id)
        if message is None:
            raise HttpError(404, f"No message with queue id {queue_id}.")
        body = await self.store.load_body(message.message_pk)
        self._raw(request, body, f"{message.queue_id}.eml")

    # -- suppressions -------------------------------------------------------------------

    async def suppressions(self, request: Request, user: str) -> None:
        """The suppression list (paged by address) with add and remove forms."""
        after = arg(request, "after") or None
        find = arg(request, "address") or None
        if find:
            entry = await self.store.get_suppression(find)
            page = [entry] if entry else []
        else:
            page = await self.store.suppressions(after=after, limit=PAGE_SIZE)
        rows = [(s.address, s.reason, _text(s.source), _text(s.note), fmt_time(s.created_at),
                 tags.form(self.csrf_field(user),
                           tags.input(type="hidden", name="address", value=s.address),
                           tags.button("Remove", type="submit", class_="danger"),
                           method="post", action="/suppressions/remove", class_="inline"))
                for s in page]
        add = tags.form(self.csrf_field(user),
                        tags.input(type="email", name="address", required="required",
                                   placeholder="address@example.com", size="32"),
                        tags.input(type="text", name="reason", value="operator", size="12"),
                        tags.input(type="text", name="note", placeholder="note", size="24"),
                        tags.button("Add", type="submit"), method="post",
                        action="/suppressions/add", class_="toolbar")
        look = tags.form(tags.input(type="search", name="address", value=find or "",
                                    placeholder="find an address", size="32"),
                         tags.button("Find", type="submit"), method="get",
                         action="/suppressions", class_="toolbar")
        pager = [link("/suppressions", "\u00ab First page")] if after else []
        if len(page) == PAGE_SIZE:
            pager.append(link("/suppressions?" + urlencode({"after": page[-1].address}),
                              "Next page \u00bb"))
        notice = arg(request, "done")
        content = ([tags.div(notice, class_="msg")] if notice else []) + [
            add, look, tags.div(table(["Address", "Reason", "Source", "Note", "Since", ""],
                                      rows), class_="card"),
            tags.div(*pager, link("/export/suppressions.csv", "Export as CSV"),
                     class_="pager")]
        self._finish(request, self.layout("Suppression list", content))

    def _redirect(self, request: Request, location: str) -> None:
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode("ascii"))
        request.finish()

    async def suppression_add(self, request: Request) -> None:
        """POST: add an address to the suppression list."""
        address = arg(request, "address") or ""
        if "@" not in address or any(c.isspace() for c in address) or len(address) > 320:
            raise HttpError(400, "address: expected an e-mail address", "address")
        reason = (arg(request, "reason") or "operator")[:64]
        note = arg(request, "note") or None
        added = await self.store.suppress(address, reason, self.clock.seconds(),
                                          source="operator", note=note)
        log.info("suppression of {address} added from the web report ({added})",
                 address=address, added=added)
        done = f"Added {address}." if added else f"{address} was already suppressed."
        self._redirect(request, "/suppressions?" + urlencode({"done": done}))

    async def suppression_remove(self, request: Request) -> None:
        """POST: remove an address from the suppression list."""
        address = arg(request, "address") or ""
        removed = await self.store.unsuppress(address)
        log.info("suppression of {address} removed from the web report ({removed})",
                 address=address, removed=removed)
        done = f"Removed {address}." if removed else f"{address} was not suppressed."
        self._redirect(request, "/suppressions?" + urlencode({"done": done}))

    # -- deferred queue ----------------------------------------------------------------

    async def deferred(self, request: Request, user: str) -> None:
        """The deferred queue by destination domain, each with "retry now"."""
        groups = await self.store.deferred_by_domain(200)
        depth = await self.store.queue_depth()
        rows = [(link("/search?" + urlencode({"domain": g.domain, "state": "deferred"}),
                      g.domain), g.count, fmt_time(g.oldest_created_at),
                 fmt_time(g.next_attempt_at), fmt_time(g.last_update),
                 tags.form(self.csrf_field(user),
                           tags.input(type="hidden", name="domain", value=g.domain),
                           tags.button("Retry now", type="submit"), method="post",
                           action="/deferred/retry", class_="inline"))
                for g in groups]
        notice = arg(request, "done")
        content = ([tags.div(notice, class_="msg")] if notice else []) + [
            kpis([("Queued", depth.get("queued", 0)), ("Deferred", depth.get("deferred", 0)),
                  ("Domains", len(groups))]),
            tags.div(table(["Domain", "Deferred", "Oldest", "Next attempt", "Last update", ""],
                           rows, (1,)), class_="card")]
        self._finish(request, self.layout("Deferred queue", content))

    async def retry(self, request: Request) -> None:
        """POST: make a domain's (or one delivery's) deferred mail due now."""
        domain = arg(request, "domain") or None
        delivery_id = arg(request, "delivery_id") or None
        if domain is None and (delivery_id is None or not delivery_id.isdigit()):
            raise HttpError(400, "domain: give a domain or a delivery id", "domain")
        count = await self.store.retry_now(
            self.clock.seconds(), domain=domain,
            delivery_id=int(delivery_id) if delivery_id else None)
        log.info("retry now from the web report: {count} deliveries ({domain}{delivery})",
                 count=count, domain=domain or "", delivery=delivery_id or "")
        if delivery_id and not domain:
            self._redirect(request, f"/delivery/{int(delivery_id)}")
            return
        self._redirect(request, "/deferred?" + urlencode(
            {"done": f"{count} deliveries to {domain} are due now."}))

    # -- CSV ------------------------------------------------------------------------------

    async def export(self, request: Request, name: str) -> None:
        """Streaming CSV: outcomes.csv, deliveries.csv (search filters), suppressions.csv."""
        if name == "outcomes.csv":
            state = arg(request, "state") or None
            mailing = arg(request, "mailing_id") or None

            async def outcome_pages() -> AsyncIterator[list[list[Any]]]:
                after = 0
                while True:
                    page: list[Outcome] = await self.store.outcomes(
                        after, CSV_PAGE, state=state, mailing_id=mailing)
                    if not page:
                        return
                    yield [[getattr(o, f) for f in Outcome.FIELDS] for o in page]
                    if len(page) < CSV_PAGE:
                        return
                    after = page[-1].delivery_id

            await stream_csv(request, "outcomes.csv", Outcome.FIELDS, outcome_pages())
        elif name == "deliveries.csv":
            filters = self._filters(request)
            columns = ("delivery_id", "queue_id", "recipient", "state", "reason", "hard",
                       "code", "status", "text", "attempts", "remote_host", "mailing_id",
                       "message_id", "header_message_id", "created_at", "updated_at")

            async def delivery_pages() -> AsyncIterator[list[list[Any]]]:
                while True:
                    page = await self.store.search_deliveries(**filters, limit=CSV_PAGE)
                    if not page:
                        return
                    yield [[getattr(getattr(d, c), "value", getattr(d, c)) for c in columns]
                           for d in page]
                    if len(page) < CSV_PAGE:
                        return
                    filters["before_delivery_id"] = page[-1].delivery_id

            await stream_csv(request, "deliveries.csv", columns, delivery_pages())
        elif name == "suppressions.csv":
            suppression_columns = ("address", "reason", "source", "note", "created_at",
                                   "event_id")

            async def suppression_pages() -> AsyncIterator[list[list[Any]]]:
                after = None
                while True:
                    page = await self.store.suppressions(after=after, limit=CSV_PAGE)
                    if not page:
                        return
                    yield [[getattr(s, c) for c in suppression_columns] for s in page]
                    if len(page) < CSV_PAGE:
                        return
                    after = page[-1].address

            await stream_csv(request, "suppressions.csv", suppression_columns,
                             suppression_pages())
        else:
            raise HttpError(404, "No such export.")
