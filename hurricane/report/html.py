"""The report's HTML: the page frame, tables, badges and figures (twisted.web.template).

Every page is built as a ``Tag`` tree and flattened by twisted.web.template,
which escapes all text and attribute values: an address like ``<script>@x``
shows as text. Charts are inline SVG (:mod:`hurricane.report.charts`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.server import Request
from twisted.web.template import Flattenable, Tag, flatten, tags

from hurricane.model import Summary
from hurricane.report import charts
from hurricane.report.figures import STATES, percent, rates

__all__ = ["CSS", "badge", "error_page", "finish", "fmt_duration", "fmt_time", "kpis", "layout",
           "link", "q", "raw_mail", "redirect", "summary_block", "table", "text"]

log = Logger()

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f4f5f7}
header{background:#1f2933;color:#fff;padding:10px 24px;display:flex;align-items:center;gap:24px}
header a{color:#cbd2d9;text-decoration:none;font-weight:500}header a:hover{color:#fff}
header .brand{color:#fff;font-weight:700;font-size:17px;letter-spacing:.3px}
main{padding:20px 24px;max-width:1240px;margin:0 auto}
main h1{overflow-wrap:anywhere}
h1{font-size:21px;margin:4px 0 14px}h2{font-size:16px;margin:22px 0 8px;color:#334}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:14px 16px;margin:0 0 14px;
overflow-x:auto}
.kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:10px;
margin-bottom:14px}
.kpi{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:10px 12px}
.kpi .v{font-size:22px;font-weight:650}.kpi .l{color:#667;font-size:12px;text-transform:uppercase;
letter-spacing:.4px}.kpi .s{color:#778;font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
th{font-size:12px;color:#556;text-transform:uppercase;letter-spacing:.3px;background:#fafbfc}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;color:#fff;font-size:12px}
form.inline{display:inline}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c5cbd3;border-radius:5px;
background:#fff}
button{background:#1f6feb;color:#fff;border-color:#1f6feb;cursor:pointer;white-space:nowrap}
button.danger{background:#c62828;border-color:#c62828}
.muted{color:#778}.small{font-size:12px}.mono{font-family:ui-monospace,Menlo,monospace;
font-size:12.5px}
td.nowrap,.nowrap{white-space:nowrap}
td.text{width:40%;min-width:18em;overflow-wrap:anywhere;word-break:normal}
td.wrap{overflow-wrap:anywhere}
td .sub{display:block;color:#778;font-size:12px}
td.lines{min-width:11em}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px}
.status{font-size:15px;margin:0 0 6px}
.pager{margin:10px 0}.pager a{margin-right:12px}
.toolbar{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:12px}
.msg{padding:10px 14px;border-radius:6px;background:#fff3cd;border:1px solid #ffe08a;
margin-bottom:14px}
svg.chart{width:100%;height:auto;display:block}
"""


def fmt_time(value: float | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (UTC), or an empty string."""
    if value is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


def fmt_duration(seconds: float | None) -> str:
    """A duration for people: ``0.4 s``, ``14 s``, ``3 min 5 s``, ``2 h 3 min``, ``1 d 4 h``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{max(seconds, 0.0):.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    # The largest unit that fits, and the next one down when it is not zero.
    first = next(i for i, (_, size) in enumerate(units) if whole >= size)
    name, size = units[first]
    parts = [f"{whole // size} {name}"]
    if first + 1 < len(units):
        name, below = units[first + 1]
        if (whole % size) // below:
            parts.append(f"{(whole % size) // below} {name}")
    return " ".join(parts)


def text(value: object) -> str:
    """A value as cell text ("" for None)."""
    return "" if value is None else str(value)


def badge(state: str) -> Tag:
    """A coloured state label."""
    state = str(getattr(state, "value", state))
    return tags.span(state, class_="badge",
                     style=f"background:{charts.STATE_COLOURS.get(state, '#607d8b')}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          numeric: Sequence[int] = (), classes: dict[int, str] | None = None) -> Tag:
    """A table of ``rows`` (each cell text or a Tag).

    Args:
        headers: the column names.
        rows: the cells.
        numeric: columns aligned right (numbers).
        classes: more CSS classes per column (``text`` for the wide one that
            wraps, ``nowrap`` for times).
    """
    classes = classes or {}

    def cls(i: int) -> str:
        return " ".join(c for c in ("n" if i in numeric else "", classes.get(i, "")) if c)

    head = tags.tr(*[tags.th(h, class_=cls(i)) for i, h in enumerate(headers)])
    body = [tags.tr(*[tags.td(c if isinstance(c, Tag) else text(c), class_=cls(i))
                      for i, c in enumerate(row)])
            for row in rows]
    if not rows:
        body = [tags.tr(tags.td("Nothing to show.", colspan=str(len(headers)),
                                class_="muted"))]
    return tags.table(tags.thead(head), tags.tbody(*body))


def link(href: str, label: object) -> Tag:
    """An ``<a>``."""
    return tags.a(text(label), href=href)


def q(value: str) -> str:
    """A path segment, quoted."""
    return quote(value, safe="")


def kpis(items: Sequence[tuple[str, object] | tuple[str, object, str]]) -> Tag:
    """A row of key figures: (label, value) or (label, value, a note under it)."""
    boxes = []
    for label, value, *note in items:
        parts = [tags.div(text(value), class_="v"), tags.div(label, class_="l")]
        if note and note[0]:
            parts.append(tags.div(note[0], class_="s"))
        boxes.append(tags.div(*parts, class_="kpi"))
    return tags.div(*boxes, class_="kpis")


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


#: Page titles of the error answers.
TITLES = {400: "Bad request", 401: "Login required", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 503: "Store unavailable"}


def layout(title: str, content: Sequence[Flattenable]) -> Tag:
    """The page frame: head with inline CSS, navigation, content."""
    # No site-wide export: each page's export link carries that page's filter.
    nav = [tags.a("Hurricane", href="/", class_="brand"), link("/", "Overview"),
           link("/mailings", "Mailings"), link("/search", "Search"),
           link("/deferred", "Deferred queue"), link("/suppressions", "Suppressions")]
    return tags.html(
        tags.head(tags.meta(charset="utf-8"), tags.title(f"{title} \u2013 Hurricane"),
                  tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                  tags.style(CSS)),
        tags.body(Tag("header")(*nav), Tag("main")(tags.h1(title), *content)),
        lang="en")


def finish(request: Request, page: Tag) -> None:
    """Write ``page`` as the HTML answer and finish the request."""
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.write(b"<!DOCTYPE html>\n")
    d = flatten(request, page, request.write)
    d.addCallback(lambda _: request.finish())
    d.addErrback(lambda f: log.failure("flattening a page failed", f))


def error_page(request: Request, code: int, message: str, field: str | None,
               challenge: bytes | None) -> None:
    """An error answer as a page (the ``on_error`` of :func:`~.resource.run_async`)."""
    del field
    if challenge is not None:
        request.setHeader(b"www-authenticate", challenge)
    request.setResponseCode(code)
    finish(request, layout(TITLES.get(code, "Error"), [tags.div(message, class_="msg")]))


def redirect(request: Request, location: str, code: int = 303) -> None:
    """Redirect to ``location``: 303 See Other after a form post, or ``code``."""
    request.setResponseCode(code)
    request.setHeader(b"location", location.encode("ascii"))
    request.finish()


def raw_mail(request: Request, data: bytes, filename: str, download: bool) -> None:
    """Raw mail as plain text (never as HTML), inline or as a download."""
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    # A sandbox CSP: even a browser that sniffed would run nothing.
    request.setHeader(b"content-security-policy", b"sandbox; default-src 'none'")
    disposition = "attachment" if download else "inline"
    request.setHeader(b"content-disposition",
                      f'{disposition}; filename="{filename}"'.encode("ascii"))
    request.write(data)
    request.finish()
