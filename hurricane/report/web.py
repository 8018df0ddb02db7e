"""The one twisted.web site on ``[web] listen``: report, API and /metrics.

The composition root calls :func:`build_web_site` and listens with the Site
on each ``[web] listen`` endpoint; the metrics collector starts when the
first listener starts (``Site.startFactory``) and stops with the last.

Request bodies are never read before the request is allowed (issue 23 item
5). twisted.web reads a body whole (to a temporary file past 100 KB) before
any resource runs, so the check sits below the resources, in the Request:
when the headers are complete (:meth:`GuardedRequest.gotLength`) the
:class:`RequestGate` looks at the method and the path, refuses a
Content-Length over the route's limit with 413, and runs the route's access
check (:class:`~hurricane.report.auth.AccessPolicy`, the same one the
resources run again). While a password waits for the thread pool the
connection stops reading. A refused request is answered at once and the
connection closed, without reading a byte of its body; a chunked body is
counted as it arrives and cut at the limit. Requests without a body go
straight to the resources, which render their own error pages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hurricane.config import Config
from hurricane.credentials import FailureLimiter, SecretVerifier, inline_runner
from hurricane.report.api import ApiResource
from hurricane.report.auth import AccessPolicy, Denied
from hurricane.report.metrics import Metrics, MetricsResource
from hurricane.report.pages import ReportPages
from hurricane.report.resource import (
    HttpError,
    retry_after_value,
    run_async,
)

__all__ = ["GuardedChannel", "GuardedRequest", "HurricaneSite", "RequestGate", "Route",
           "build_web_site"]

log = Logger()


class _GuardedMetrics(Resource):
    """/metrics behind the access policy (open on loopback, else a login or token)."""

    isLeaf = True

    def __init__(self, access: AccessPolicy, inner: MetricsResource) -> None:
        super().__init__()
        self.access = access
        self.inner = inner

    def render(self, request: Request) -> Any:
        """Check access, then render the metrics."""
        return run_async(request, self.handle, self._error)

    async def handle(self, request: Request) -> None:
        """Check access (it may wait for the password pool), then answer."""
        await self.access.metrics_allowed(request)
        if request.method not in (b"GET", b"HEAD"):
            raise HttpError(405, "Use GET.")
        body = self.inner.render_GET(request)
        if request.method == b"GET":
            request.write(body)
        request.finish()

    @staticmethod
    def _error(request: Request, code: int, message: str, field: str | None,
               challenge: bytes | None) -> None:
        del field
        request.setResponseCode(code)
        if challenge is not None:
            request.setHeader(b"www-authenticate", challenge)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(message.encode("utf-8") + b"\n")
        request.finish()


class _Root(Resource):
    """``/api``, ``/metrics`` and every other path to the report pages."""

    def __init__(self, pages: ReportPages, api: ApiResource, metrics: Resource) -> None:
        super().__init__()
        self.pages = pages
        self.api = api
        self.metrics = metrics

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """Route the first path segment."""
        if path == b"api":
            return self.api
        if path == b"metrics":
            return self.metrics
        # The pages resource is a leaf: it sees the whole path again.
        assert request.postpath is not None and request.prepath is not None
        request.postpath.insert(0, path)
        request.prepath.pop()
        return self.pages

    def render(self, request: Request) -> Any:
        """``/`` itself: the overview."""
        return self.pages.render(request)


@dataclass(frozen=True)
class Route:
    """What the gate needs to know about a request's target.

    Attributes:
        kind: ``"api"``, ``"metrics"`` or ``"pages"`` (the resource that will answer).
        body_limit: the largest body the target takes (0: none).
        write: for the API, True when the call changes something.
    """

    kind: str
    body_limit: int
    write: bool = False


class RequestGate:
    """Decides, once the headers are in, whether a request's body may be read.

    It routes exactly as :class:`_Root` does (first path segment, after
    Twisted's percent-decoding), asks the answering resource for its body
    limit and runs that resource's access check.

    Args:
        access: the site's access policy.
        api: the ``/api`` resource.
        pages: the report pages.
    """

    def __init__(self, access: AccessPolicy, api: ApiResource, pages: ReportPages) -> None:
        self.access = access
        self.api = api
        self.pages = pages

    def route(self, method: bytes, target: bytes) -> Route:
        """The route of a request line's method and target."""
        path = target.split(b"?", 1)[0]
        # The same split and decoding as twisted.web.server.Request.process.
        segments = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
        if segments[0] == b"api":
            return Route("api", self.api.body_limit(method, segments[1:]),
                         write=method not in (b"GET", b"HEAD"))
        if segments[0] == b"metrics":
            return Route("metrics", 0)
        return Route("pages", self.pages.body_limit(method, segments))

    async def authorize(self, route: Route, request: Request) -> None:
        """Run the route's access check.

        Raises:
            Denied: the answer the resource would give.
        """
        if route.kind == "api":
            await self.access.api_client(request, route.write)
        elif route.kind == "metrics":
            await self.access.metrics_allowed(request)
        else:
            await self.access.page_user(request)


class GuardedChannel(HTTPChannel):
    """An HTTPChannel that shows each :class:`GuardedRequest` its request line.

    twisted.web keeps the method and target to itself until the body is in;
    the gate needs them when the headers are.
    """

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted
        """Parse as usual; a line that started a request is handed to that request."""
        count = len(self.requests)
        super().lineReceived(line)
        if len(self.requests) > count:
            request = self.requests[-1]
            if isinstance(request, GuardedRequest):
                request.request_line_received(line)


_OPEN, _PENDING, _REFUSED = "open", "pending", "refused"


class GuardedRequest(Request):
    """A Request that refuses before its body: see the module docstring.

    States: ``open`` (reading the body as usual), ``pending`` (the access
    check waits for the pool; the transport is paused and what already
    arrived is held, within the limit) and ``refused`` (answered and
    closing; anything else is dropped).
    """

    def __init__(self, channel: HTTPChannel, *args: Any, **kwargs: Any) -> None:
        super().__init__(channel, *args, **kwargs)
        self._line: tuple[bytes, bytes, bytes] | None = None
        self._state = _OPEN
        self._limit: int | None = None
        self._received = 0
        self._length: int | None = None
        self._held = BytesIO()
        self._paused: IPushProducer | None = None
        self._expect_continue = False
        self._received_args: tuple[bytes, bytes, bytes] | None = None
        self._gone = False

    def request_line_received(self, line: bytes) -> None:
        """The channel parsed this request's first line."""
        parts = line.split(b" ")
        if len(parts) == 3:
            self._line = (parts[0], parts[1], parts[2])

    def _gate(self) -> RequestGate | None:
        site = getattr(self.channel, "site", None)
        return site.gate if isinstance(site, HurricaneSite) else None

    # -- the channel's calls -----------------------------------------------------

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted
        """The headers are in: refuse, hold the body until allowed, or read it."""
        gate = self._gate()
        if gate is None or self._line is None:
            super().gotLength(length)
            return
        method, target, _version = self._line
        route = gate.route(method, target)
        self._limit = route.body_limit
        if length is not None and length > route.body_limit:
            self._refuse(route, Denied(413, _too_large(route.body_limit)))
            return
        if length == 0:
            # Nothing to hold back: the resource checks access and answers
            # with its own page.
            super().gotLength(length)
            return
        self._length = length
        self._state = _PENDING
        d = Deferred.fromCoroutine(gate.authorize(route, self))
        d.addCallbacks(lambda _: self._allowed(), lambda f: self._denied(route, f))
        if self._state == _PENDING:
            # The check waits for the thread pool: stop reading meanwhile, and
            # keep Twisted from inviting the body with "100 Continue".
            expect = self.requestHeaders.getRawHeaders(b"expect") or []
            self._expect_continue = any(v.lower() == b"100-continue" for v in expect)
            self.requestHeaders.removeHeader(b"expect")
            producer = IPushProducer(self.channel.transport, None)
            if producer is not None:
                producer.pauseProducing()
                self._paused = producer

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted
        """Count the body as it arrives and cut it at the route's limit."""
        if self._state == _REFUSED:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            gate = self._gate()
            assert gate is not None and self._line is not None  # a limit comes from the gate
            self._refuse(gate.route(self._line[0], self._line[1]),
                         Denied(413, _too_large(self._limit)))
            return
        if self._state == _PENDING:
            self._held.write(data)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes,  # noqa: N802 - Twisted
                        version: bytes) -> None:
        """The body is complete: process, unless refused or still being checked."""
        if self._state == _REFUSED:
            return
        if self._state == _PENDING:
            self._received_args = (command, path, version)
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted
        """Remember that the client is gone (a pending check then does nothing)."""
        self._gone = True
        super().connectionLost(reason)

    # -- the check's outcome ----------------------------------------------------------

    def _allowed(self) -> None:
        if self._state != _PENDING or self._gone:
            return
        self._state = _OPEN
        super().gotLength(self._length)
        held = self._held.getvalue()
        self._held = BytesIO()
        if held:
            super().handleContentChunk(held)
        if self._paused is not None:
            self._paused.resumeProducing()
            self._paused = None
            assert self._line is not None
            if self._expect_continue and self._line[2] == b"HTTP/1.1" and not self._received:
                self.channel.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._received_args is not None:
            command, path, version = self._received_args
            self._received_args = None
            super().requestReceived(command, path, version)

    def _denied(self, route: Route, failure: Failure) -> None:
        if self._gone or self._state == _REFUSED:
            return
        denied = failure.value
        if not isinstance(denied, Denied):
            log.failure("access check failed", failure)
            denied = Denied(500, "Internal error (see the server log).")
        self._refuse(route, denied)

    def _refuse(self, route: Route, denied: Denied) -> None:
        """Answer ``denied`` now and close, reading nothing more."""
        self._state = _REFUSED
        self._held = BytesIO()
        # Twisted would send "100 Continue" after our answer otherwise.
        self.requestHeaders.removeHeader(b"expect")
        if self.content is None:
            self.content = BytesIO()  # connectionLost closes it
        if route.kind == "api":
            body = json.dumps({"error": denied.message, "field": None}).encode("utf-8") + b"\n"
            content_type = b"application/json"
        else:
            body = denied.message.encode("utf-8") + b"\n"
            content_type = b"text/plain; charset=utf-8"
        headers = Headers({
            b"content-type": [content_type],
            b"content-length": [str(len(body)).encode("ascii")],
            b"connection": [b"close"],
            b"cache-control": [b"no-store"],
            b"x-content-type-options": [b"nosniff"],
        })
        if denied.challenge is not None:
            headers.setRawHeaders(b"www-authenticate", [denied.challenge])
        if denied.retry_after is not None:
            headers.setRawHeaders(b"retry-after", [retry_after_value(denied.retry_after)])
        assert self._line is not None
        log.info("refused {method} {target} from {client} before its body: {code}",
                 method=self._line[0].decode("latin-1"),
                 target=self._line[1][:200].decode("latin-1"),
                 client=getattr(self.getClientAddress(), "host", "?"), code=denied.code)
        channel = self.channel
        reason = RESPONSES.get(denied.code) or _REASONS.get(denied.code, b"Refused")
        channel.writeHeaders(b"HTTP/1.1", str(denied.code).encode("ascii"), reason, headers)
        channel.write(body)
        channel.loseConnection()


#: Reason phrases twisted.web.http.RESPONSES lacks.
_REASONS = {429: b"Too Many Requests"}


def _too_large(limit: int) -> str:
    if limit == 0:
        return "This request takes no body."
    return f"Request body larger than {limit} bytes."


class HurricaneSite(Site):
    """A Site that guards request bodies and runs the metrics collector while it listens.

    Attributes:
        metrics: the :class:`Metrics` (other components may call its methods).
        access: the :class:`AccessPolicy`.
        gate: the :class:`RequestGate` its requests consult before their bodies.
    """

    # A plain HTTP/1.1 channel: the guard needs its request line. (Twisted's
    # default wraps the channel to switch to HTTP/2 after TLS ALPN; the
    # report listens on plain TCP behind a proxy, so nothing is lost.)
    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, metrics: Metrics, access: AccessPolicy,
                 gate: RequestGate, **kwargs: Any) -> None:
        super().__init__(resource, requestFactory=GuardedRequest, **kwargs)
        self.metrics = metrics
        self.access = access
        self.gate = gate

    def startFactory(self) -> None:  # noqa: N802 - Twisted
        """Start the metrics collector with the first listener."""
        super().startFactory()
        self.metrics.start()

    def stopFactory(self) -> None:  # noqa: N802 - Twisted
        """Stop the metrics collector with the last listener."""
        self.metrics.stop()
        super().stopFactory()


def build_web_site(config: Config, store: Any, clock: IReactorTime, *,
                   on_enqueued: Callable[[], None], codec: Any = None,
                   metrics: Metrics | None = None, hostname: str | None = None,
                   csrf_secret: bytes | None = None,
                   verifier: SecretVerifier | None = None) -> HurricaneSite:
    """Build the site serving the report, ``/api/v1`` and ``/metrics``.

    Args:
        config: the whole configuration (``[web]``, submission limits, hostname).
        store: the opened IOutcomeStore.
        clock: the injected reactor time (windows, submission time, collector,
            the failed-login window).
        on_enqueued: called after each committed API injection (the scheduler's wake()).
        codec: the VERP codec (reserved; the report shows stored identifiers only).
        metrics: a Metrics to expose (one is built on ``store`` and ``clock`` if None).
        hostname: the name for Message-IDs added to injected mail
            (default ``config.server.hostname``).
        csrf_secret: the CSRF key (random per process if None; tests pass one).
        verifier: verifies passwords and tokens; the server passes one on a
            thread pool. None verifies inline, on the caller's thread: for
            tests and tools only.

    Returns:
        The Site; listen with it on each ``config.web.listen`` endpoint.
    """
    del codec  # reserved
    web = config.web
    if verifier is None:
        verifier = SecretVerifier(inline_runner)
    limiter = FailureLimiter(clock, web.max_auth_failures, web.auth_block_seconds)
    access = AccessPolicy(web.listen, web.tokens, web.users, verifier=verifier,
                          limiter=limiter, csrf_secret=csrf_secret)
    if metrics is None:
        metrics = Metrics(store, clock)
    pages = ReportPages(store, clock, access)
    api = ApiResource(store, clock, access, hostname or config.server.hostname, on_enqueued,
                      max_message_size=config.submission.max_message_size,
                      max_recipients=config.submission.max_recipients)
    root = _Root(pages, api, _GuardedMetrics(access, MetricsResource(metrics)))
    # The injected clock also runs the connections' idle timeouts.
    site = HurricaneSite(root, metrics, access, RequestGate(access, api, pages), reactor=clock)
    site.displayTracebacks = False
    if not access.loopback_only and not web.users:
        log.warn("[web] listens on {listen} (not loopback) and [web.users] is empty: the "
                 "report pages will answer 403", listen=", ".join(web.listen))
    if access.tokens.pbkdf2_names:
        log.warn("[web.tokens] {names}: hashed with pbkdf2, so every wrong token costs "
                 "{count} pbkdf2 verifications in the thread pool; replace them with "
                 "'hurricane passwd --token' (sha256$...)",
                 names=", ".join(access.tokens.pbkdf2_names),
                 count=len(access.tokens.pbkdf2_names))
    return site
