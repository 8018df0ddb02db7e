"""The one twisted.web site on ``[web] listen``: report, API and /metrics.

The composition root calls :func:`build_web_site` and listens with the Site
on each ``[web] listen`` endpoint; the metrics collector starts when the
first listener starts (``Site.startFactory``) and stops with the last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from hurricane.config import Config
from hurricane.credentials import FailureLimiter, SecretVerifier, inline_runner
from hurricane.report.api import ApiResource
from hurricane.report.auth import AccessPolicy
from hurricane.report.metrics import Metrics, MetricsResource
from hurricane.report.pages import ReportPages
from hurricane.report.resource import HttpError, run_async

__all__ = ["HurricaneSite", "build_web_site"]

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


class HurricaneSite(Site):
    """A Site that runs the metrics collector while it listens.

    Attributes:
        metrics: the :class:`Metrics` (other components may call its methods).
        access: the :class:`AccessPolicy`.
    """

    def __init__(self, resource: Resource, metrics: Metrics, access: AccessPolicy,
                 **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.metrics = metrics
        self.access = access

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
    site = HurricaneSite(root, metrics, access)
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
