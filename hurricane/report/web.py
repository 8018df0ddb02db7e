"""The one twisted.web site on ``[web] listen``: report, API and /metrics.

The composition root calls :func:`build_web_site` and listens with the Site
on each ``[web] listen`` endpoint; the metrics collector starts when the
first listener starts (``Site.startFactory``) and stops with the last.

Request bodies are never read before the request is allowed (issue 23 item
5). twisted.web reads a body whole (to a temporary file past 100 KB) before
any resource runs, so the check sits below the resources, in the Request:
when the headers are complete (:meth:`GuardedRequest.gotLength`) the
:class:`RequestGate` finds the resource that will answer (Twisted's own
traversal of the same tree), refuses a Content-Length over that resource's
limit with 413, and runs its access check
(:class:`~hurricane.report.auth.AccessPolicy`, the same one the resource
runs again). While a password waits for the thread pool the
connection stops reading. A refused request is answered at once and the
connection closed, without reading a byte of its body; a chunked body is
counted as it arrives and cut at the limit. Requests without a body go
straight to the resources, which render their own error pages.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Request, Site

from hurricane.config import Config
from hurricane.credentials import FailureLimiter, SecretVerifier, inline_runner
from hurricane.operations import Operations
from hurricane.report.api import Api, build_api
from hurricane.report.auth import AccessPolicy, Denied
from hurricane.report.mailings import MailingPage, Mailings, MailingsRedirect
from hurricane.report.metrics import Metrics, MetricsResource
from hurricane.report.pages import (
    Collection,
    DeferredQueue,
    DeliveryPage,
    ExportDeliveries,
    ExportOutcomes,
    Exports,
    ExportSuppressions,
    Message,
    Overview,
    Page,
    Pages,
    RawBounce,
    Retry,
    Search,
    SuppressionAdd,
    SuppressionRemove,
    Suppressions,
)
from hurricane.report.providers import HoldForm, ProvidersPage
from hurricane.report.resource import (
    HttpError,
    ReportResource,
    retry_after_value,
    run_async,
)
from hurricane.report.unsubscribe import unsubscribe_tree
from hurricane.store.interface import IOutcomeStore
from hurricane.unsubscribe import Unsubscriber

__all__ = ["GuardedChannel", "GuardedRequest", "HurricaneSite", "MetricsPage", "RequestGate",
           "build_pages", "build_web_site"]

log = Logger()


class MetricsPage(ReportResource):
    """``/metrics`` behind the access policy (open on loopback, else a login or token).

    A leaf: any path under ``/metrics`` is the metrics too.
    """

    isLeaf = True

    def __init__(self, access: AccessPolicy, metrics: Metrics) -> None:
        super().__init__()
        self.access = access
        self.inner = MetricsResource(metrics)

    def render(self, request: Request) -> int:
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

    async def authorize(self, request: Request, method: bytes) -> None:
        """The metrics' access check."""
        await self.access.metrics_allowed(request)

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


class RequestGate:
    """Decides, once the headers are in, whether a request's body may be read.

    It finds the resource that will answer exactly as the Site will, with
    Twisted's own traversal (:func:`twisted.web.resource.getChildForRequest`)
    over the same tree and the same percent-decoded segments, and asks that
    resource for its body limit and its access check.

    Args:
        root: the site's root resource.
    """

    def __init__(self, root: Resource) -> None:
        self.root = root

    def resource_for(self, request: Request, target: bytes) -> ReportResource:
        """The resource of a request line's target.

        The traversal runs on the request itself (its ``prepath`` and
        ``postpath``), which ``Request.process`` sets again from the start
        when the request is served.
        """
        path = target.split(b"?", 1)[0]
        # The same split and decoding as twisted.web.server.Request.process.
        request.prepath = []
        request.postpath = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
        try:
            found = getChildForRequest(self.root, request)
        finally:
            request.prepath = request.postpath = None
        if not isinstance(found, ReportResource):
            raise TypeError(f"{type(found).__name__} is not a ReportResource")
        return found


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

    def __init__(self, channel: HTTPChannel, *args: object, **kwargs: object) -> None:
        super().__init__(channel, *args, **kwargs)
        self._line: tuple[bytes, bytes, bytes] | None = None
        self._state = _OPEN
        self._limit: int | None = None
        self._resource: ReportResource | None = None
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
        resource = gate.resource_for(self, target)
        self._resource = resource
        self._limit = resource.body_limit(method)
        if length is not None and length > self._limit:
            self._refuse(Denied(413, _too_large(self._limit)))
            return
        if length == 0:
            # Nothing to hold back: the resource checks access and answers
            # with its own page.
            super().gotLength(length)
            return
        self._length = length
        self._state = _PENDING
        d = Deferred.fromCoroutine(resource.authorize(self, method))
        d.addCallbacks(lambda _: self._allowed(), self._denied)
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
        """Count the body as it arrives and cut it at the resource's limit."""
        if self._state == _REFUSED:
            return
        self._received += len(data)
        if self._limit is not None and self._received > self._limit:
            self._refuse(Denied(413, _too_large(self._limit)))
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

    def _denied(self, failure: Failure) -> None:
        if self._gone or self._state == _REFUSED:
            return
        denied = failure.value
        if not isinstance(denied, Denied):
            log.failure("access check failed", failure)
            denied = Denied(500, "Internal error (see the server log).")
        self._refuse(denied)

    def _refuse(self, denied: Denied) -> None:
        """Answer ``denied`` now and close, reading nothing more."""
        self._state = _REFUSED
        self._held = BytesIO()
        # Twisted would send "100 Continue" after our answer otherwise.
        self.requestHeaders.removeHeader(b"expect")
        if self.content is None:
            self.content = BytesIO()  # connectionLost closes it
        assert self._resource is not None  # a refusal comes after the gate found it
        content_type, body = self._resource.refusal(denied)
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
        api: what the API's endpoints share (its limits).
    """

    # A plain HTTP/1.1 channel: the guard needs its request line. (Twisted's
    # default wraps the channel to switch to HTTP/2 after TLS ALPN; the
    # report listens on plain TCP behind a proxy, so nothing is lost.)
    protocol = GuardedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, metrics: Metrics, access: AccessPolicy,
                 gate: RequestGate, api: Api, **kwargs: object) -> None:
        super().__init__(resource, requestFactory=GuardedRequest, **kwargs)
        self.metrics = metrics
        self.access = access
        self.gate = gate
        self.api = api

    def startFactory(self) -> None:  # noqa: N802 - Twisted
        """Start the metrics collector with the first listener."""
        super().startFactory()
        self.metrics.start()

    def stopFactory(self) -> None:  # noqa: N802 - Twisted
        """Stop the metrics collector with the last listener."""
        self.metrics.stop()
        super().stopFactory()


class UnsubscribeSite(HurricaneSite):
    """The ``[unsubscribe] listen`` site: the report site's guard, not its collector."""

    def startFactory(self) -> None:  # noqa: N802 - Twisted
        """Start listening (the report site runs the metrics collector)."""
        Site.startFactory(self)

    def stopFactory(self) -> None:  # noqa: N802 - Twisted
        """Stop listening."""
        Site.stopFactory(self)


def build_web_site(config: Config, store: IOutcomeStore, clock: IReactorTime, *,
                   on_enqueued: Callable[[], None], operations: Operations | None = None,
                   codec: object = None, metrics: Metrics | None = None,
                   hostname: str | None = None, csrf_secret: bytes | None = None,
                   verifier: SecretVerifier | None = None,
                   unsubscriber: Unsubscriber | None = None) -> HurricaneSite:
    """Build the site serving the report, ``/api/v1`` and ``/metrics``.

    Args:
        config: the whole configuration (``[web]``, submission limits, hostname).
        store: the opened IOutcomeStore.
        clock: the injected reactor time (windows, submission time, collector,
            the failed-login window).
        on_enqueued: called after each committed API injection (the scheduler's wake()).
        operations: what the forms and the API's suppressions do; the server
            passes its one :class:`Operations`. None makes one on ``store``
            and ``clock`` whose scheduler is ``on_enqueued`` (tests and tools).
        codec: the VERP codec (reserved; the report shows stored identifiers only).
        metrics: a Metrics to expose (one is built on ``store`` and ``clock`` if None).
        hostname: the name for Message-IDs added to injected mail
            (default ``config.server.hostname``).
        csrf_secret: the CSRF key (random per process if None; tests pass one).
        verifier: verifies passwords and tokens; the server passes one on a
            thread pool. None verifies inline, on the caller's thread: for
            tests and tools only.
        unsubscriber: serves ``/u/TOKEN`` (one-click unsubscribe, no login);
            None: no ``/u/``.

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
    if operations is None:
        operations = Operations(store, clock, _Hook(on_enqueued), streams=config.stream_set)
    api = Api(store, clock, access, operations, hostname or config.server.hostname,
              on_enqueued, max_message_size=config.submission.max_message_size,
              max_recipients=config.submission.max_recipients)
    root = build_pages(Pages(store, clock, access, operations))
    root.putChild(b"api", build_api(api))
    root.putChild(b"metrics", MetricsPage(access, metrics))
    if unsubscriber is not None:
        root.putChild(b"u", unsubscribe_tree(unsubscriber))
    # The injected clock also runs the connections' idle timeouts.
    site = HurricaneSite(root, metrics, access, RequestGate(root), api, reactor=clock)
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


def build_pages(pages: Pages) -> Page:
    """The tree of pages; its root is the overview, ``/``.

    The API (``/api``) and ``/metrics`` are put on the same root by
    :func:`build_web_site`.
    """
    root = Overview(pages)
    root.putChild(b"search", Search(pages))
    deferred = DeferredQueue(pages)
    deferred.putChild(b"retry", Retry(pages))
    root.putChild(b"deferred", deferred)
    suppressions = Suppressions(pages)
    suppressions.putChild(b"add", SuppressionAdd(pages))
    suppressions.putChild(b"remove", SuppressionRemove(pages))
    root.putChild(b"suppressions", suppressions)
    root.putChild(b"mailings", Mailings(pages))
    root.putChild(b"mailing", MailingsRedirect(pages, MailingPage))
    root.putChild(b"message", Collection(pages, Message))
    root.putChild(b"delivery", Collection(pages, DeliveryPage))
    root.putChild(b"bounce", Collection(pages, RawBounce))
    exports = Exports(pages)
    exports.putChild(b"outcomes.csv", ExportOutcomes(pages))
    exports.putChild(b"deliveries.csv", ExportDeliveries(pages))
    exports.putChild(b"suppressions.csv", ExportSuppressions(pages))
    root.putChild(b"export", exports)
    from hurricane.report.sources import SourcesPage
    root.putChild(b"sources", SourcesPage(pages))
    root.putChild(b"providers", ProvidersPage(pages))
    root.putChild(b"hold", HoldForm(pages))
    return root


class _Hook:
    """A bare callable as the operations' scheduler (a site built without the server)."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
