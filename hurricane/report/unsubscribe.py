"""``/u/TOKEN``: the one-click unsubscribe endpoint (RFC 8058), served without login.

- ``POST /u/TOKEN`` with the form field ``List-Unsubscribe=One-Click`` (what
  Gmail, Yahoo and Apple Mail send) records the unsubscribe and answers 200;
- ``GET /u/TOKEN`` changes nothing (link scanners and previews fetch every
  URL): it shows a page whose button POSTs the same form;
- a forged or altered token is refused (404) by the signature check alone,
  before the store is touched.

The resource is on the report's site (``/u/``, the only path that needs no
login) and, with ``[unsubscribe] listen``, alone on a site of its own, so the
public side of a reverse proxy can reach it and nothing else
(:func:`build_unsubscribe_site`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.template import Tag, flatten, tags

from hurricane.report.resource import HttpError, ReportResource, arg, run_async, segment
from hurricane.unsubscribe import MAX_TOKEN, Unsubscriber, UnsubscribeToken

if TYPE_CHECKING:
    from hurricane.report.web import HurricaneSite

__all__ = ["UnsubscribeRoot", "UnsubscribeTokenPage", "build_unsubscribe_site",
           "unsubscribe_tree"]

log = Logger()

#: The largest POST body read (the one-click form is 26 octets).
BODY_LIMIT = 2048

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;"
          "padding:0 1em;color:#222}button{font-size:1.1em;padding:.5em 1.2em}")


def _page(request: Request, code: int, title: str, *content: Tag | str) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    page = tags.html(
        tags.head(tags.meta(charset="utf-8"), tags.title(title),
                  tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                  tags.meta(name="robots", content="noindex"), tags.style(_STYLE)),
        tags.body(tags.h1(title), *content), lang="en")
    request.write(b"<!DOCTYPE html>\n")
    d = flatten(request, page, request.write)
    d.addCallback(lambda _: request.finish())
    d.addErrback(lambda f: log.failure("flattening the unsubscribe page failed", f))


def _error(request: Request, code: int, message: str, field: str | None,
           challenge: bytes | None) -> None:
    del field, challenge
    _page(request, code, "Unsubscribe", tags.p(message))


class _Open(ReportResource):
    """A resource of the unsubscribe tree: no login, a small body at most."""

    def __init__(self, unsubscriber: Unsubscriber) -> None:
        super().__init__()
        self.unsubscriber = unsubscriber

    async def authorize(self, request: Request, method: bytes) -> None:
        """Anyone holding a link may use it: the token is the authorization."""
        del request, method

    def missing(self, path: bytes) -> Resource:
        """Anything but ``/u/TOKEN`` is 404."""
        del path
        return _NotFound(self.unsubscriber)


class _NotFound(_Open):
    def render(self, request: Request) -> int:  # noqa: D102 - Twisted
        async def answer(req: Request) -> None:
            raise HttpError(404, "This unsubscribe link is not valid.")

        return run_async(request, answer, _error)


class UnsubscribeRoot(_NotFound):
    """``/u``: its children are tokens."""

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """``/u/TOKEN`` (no deeper path) is the token's page; anything else 404."""
        if path and not any(request.postpath or ()) and len(path) <= MAX_TOKEN:
            return UnsubscribeTokenPage(self.unsubscriber, segment(path))
        return _NotFound(self.unsubscriber)


class UnsubscribeTokenPage(_Open):
    """``/u/TOKEN``: GET shows the confirm page, POST unsubscribes."""

    isLeaf = True

    def __init__(self, unsubscriber: Unsubscriber, token: str) -> None:
        super().__init__(unsubscriber)
        self.token = token

    def body_limit(self, method: bytes) -> int:
        """A form's worth for a POST, nothing otherwise."""
        return BODY_LIMIT if method == b"POST" else 0

    def render_GET(self, request: Request) -> int:  # noqa: N802 - Twisted
        """The confirm page: nothing is recorded (a scanner's GET changes nothing)."""
        return run_async(request, self._get, _error)

    def render_HEAD(self, request: Request) -> int:  # noqa: N802 - Twisted
        """As GET (Twisted drops the body)."""
        return run_async(request, self._get, _error)

    def render_POST(self, request: Request) -> int:  # noqa: N802 - Twisted
        """RFC 8058: ``List-Unsubscribe=One-Click`` unsubscribes."""
        return run_async(request, self._post, _error)

    def _verified(self) -> UnsubscribeToken:
        checked = self.unsubscriber.verify(self.token)
        if not isinstance(checked, UnsubscribeToken):
            raise HttpError(404, "This unsubscribe link is not valid (or has expired).")
        return checked

    async def _get(self, request: Request) -> None:
        token = self._verified()
        form = tags.form(method="post", action="")(
            tags.input(type="hidden", name="List-Unsubscribe", value="One-Click"),
            tags.input(type="hidden", name="confirm", value="1"),
            tags.button("Unsubscribe", type="submit"))
        _page(request, 200, "Unsubscribe",
              tags.p("Stop receiving ", tags.strong(token.stream),
                     " mail at this address? Other mail (receipts, password resets) "
                     "is not affected."), form)

    async def _post(self, request: Request) -> None:
        if arg(request, "List-Unsubscribe") != "One-Click":
            raise HttpError(400, "Expected the form field List-Unsubscribe=One-Click "
                                 "(RFC 8058).")
        via = "confirm" if arg(request, "confirm") == "1" else "one-click"
        # A bad token is refused here, by its signature: the store is not touched.
        done = await self.unsubscriber.unsubscribe(self.token, via)
        token = done.token
        if not isinstance(token, UnsubscribeToken):
            raise HttpError(404, "This unsubscribe link is not valid (or has expired).")
        if done.outcome is not None and not done.outcome.known:
            raise HttpError(404, "This unsubscribe link is no longer valid.")
        _page(request, 200, "Unsubscribed",
              tags.p("You will not receive ", tags.strong(token.stream),
                     " mail at this address any more."))


def unsubscribe_tree(unsubscriber: Unsubscriber) -> Resource:
    """The ``/u`` resource, to put on a site's root."""
    return UnsubscribeRoot(unsubscriber)


class UnsubscribeOnlyRoot(_NotFound):
    """The root of the ``[unsubscribe] listen`` site: ``/u/`` and nothing else."""

    def __init__(self, unsubscriber: Unsubscriber) -> None:
        super().__init__(unsubscriber)
        self.putChild(b"u", UnsubscribeRoot(unsubscriber))

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """Only ``u``; everything else 404."""
        del request
        return _NotFound(self.unsubscriber)


def build_unsubscribe_site(web_site: HurricaneSite, unsubscriber: Unsubscriber,
                           clock: IReactorTime) -> HurricaneSite:
    """The site of ``[unsubscribe] listen``: ``/u/`` alone, with the report
    site's request guard (a body is refused past :data:`BODY_LIMIT` before it
    is read)."""
    from hurricane.report.web import RequestGate, UnsubscribeSite

    root = UnsubscribeOnlyRoot(unsubscriber)
    site = UnsubscribeSite(root, web_site.metrics, web_site.access, RequestGate(root),
                           web_site.api, reactor=clock)
    site.displayTracebacks = False
    return site
