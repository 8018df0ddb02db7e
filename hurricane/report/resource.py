"""The base of the report's resources: the tree, async handlers, errors, security headers.

The site is a tree of twisted.web resources (``putChild`` for fixed names,
``getChild`` for identifiers): Twisted's own traversal picks the resource
that answers, and no module routes by hand. Every resource of the tree is a
:class:`ReportResource`, which also tells the request gate of
:mod:`hurricane.report.web` its body limit and its access check, so the gate
and the renderer can never disagree about where a request goes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from hurricane.report.auth import Denied
from hurricane.store.interface import StoreUnavailable

__all__ = ["HttpError", "ReportResource", "run_async", "arg", "query_args", "json_default",
           "segment", "write_json"]

log = Logger()


class HttpError(Exception):
    """An answer other than 200, with a message (and the offending field) for the client.

    Args:
        code: the HTTP status.
        message: what went wrong, for a human.
        field: the request field at fault, if any.
    """

    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def json_default(value: object) -> object:
    """JSON for enums (their value) and bytes (text)."""
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(request: Request, code: int, body: object) -> None:
    """Write a JSON answer and finish the request."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.write(json.dumps(body, default=json_default, indent=1).encode("utf-8") + b"\n")
    request.finish()


def query_args(request: Request) -> dict[bytes, list[bytes]]:
    """The request's query and form arguments (empty when there are none)."""
    args: dict[bytes, list[bytes]] | None = getattr(request, "args", None)
    return args or {}


def arg(request: Request, name: str, default: str | None = None) -> str | None:
    """A query or form argument as text (the first one), stripped; ``default`` when absent."""
    values = query_args(request).get(name.encode("ascii"))
    if not values:
        return default
    return values[0].decode("utf-8", "replace").strip()


def retry_after_value(seconds: float) -> bytes:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds))).encode("ascii")


def security_headers(request: Request) -> None:
    """Headers every answer carries: no framing, no sniffing, no foreign content."""
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"content-security-policy",
                      b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                      b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def run_async(request: Request, handler: Callable[[Request], Awaitable[None]],
              on_error: Callable[[Request, int, str, str | None, bytes | None], None]) -> int:
    """Run an async handler for a resource's ``render_*``, mapping errors to answers.

    Args:
        request: the request.
        handler: writes and finishes the answer.
        on_error: writes an error answer (status, message, field, challenge).

    Returns:
        NOT_DONE_YET.
    """
    security_headers(request)
    gone = [False]
    request.notifyFinish().addErrback(lambda _: gone.__setitem__(0, True))

    async def call() -> None:
        try:
            await handler(request)
        except Exception as e:
            if gone[0]:
                return
            if getattr(request, "startedWriting", False):
                # Headers are out (a streaming export): all we can do is cut it short.
                log.failure("error after the answer started; closing {uri}",
                            uri=request.uri.decode("ascii", "replace"))
                request.loseConnection()
                return
            try:
                _answer_error(request, e, on_error)
            except Exception:
                log.failure("error page failed for {uri}",
                            uri=request.uri.decode("ascii", "replace"))
                request.setResponseCode(500)
                request.finish()

    Deferred.fromCoroutine(call())
    return NOT_DONE_YET


def _answer_error(request: Request, e: Exception,
                  on_error: Callable[[Request, int, str, str | None, bytes | None], None]
                  ) -> None:
    """Turn an exception into an error answer."""
    uri = request.uri.decode("ascii", "replace")
    if isinstance(e, HttpError):
        on_error(request, e.code, e.message, e.field, None)
    elif isinstance(e, Denied):
        if e.retry_after is not None:
            request.setHeader(b"retry-after", retry_after_value(e.retry_after))
        on_error(request, e.code, e.message, None, e.challenge)
    elif isinstance(e, StoreUnavailable):
        log.warn("store unavailable for {uri}: {error}", uri=uri, error=str(e))
        on_error(request, 503, "The store is unavailable; try again later.", None, None)
    else:
        log.failure("error rendering {uri}", Failure(e), uri=uri)
        on_error(request, 500, "Internal error (see the server log).", None, None)


def segment(path: bytes) -> str:
    """A path segment as text (Twisted has already percent-decoded it, once)."""
    return path.decode("utf-8", "replace")


class ReportResource(Resource):
    """A resource of the report's tree.

    Subclasses render their methods (through :func:`run_async`) and say what
    the request gate needs before a body is read: :meth:`body_limit` and
    :meth:`authorize`, plus the form of an early refusal (:meth:`refusal`).

    A trailing slash names the resource itself (``/search/`` is
    ``/search``); any other unknown child is :meth:`missing`, which answers
    as the subclass's part of the site does (an HTML 404, a JSON 404 or 405).
    """

    def body_limit(self, method: bytes) -> int:
        """The largest request body this resource takes for ``method`` (0: none)."""
        del method
        return 0

    async def authorize(self, request: Request, method: bytes) -> None:
        """The access check of this resource, run by the gate before the body is read.

        Raises:
            Denied: the answer to give instead.
        """
        raise NotImplementedError

    def refusal(self, denied: Denied) -> tuple[bytes, bytes]:
        """The content type and body of an early refusal (plain text by default)."""
        return b"text/plain; charset=utf-8", denied.message.encode("utf-8") + b"\n"

    def missing(self, path: bytes) -> Resource:
        """The resource answering for an unknown child ``path``."""
        raise NotImplementedError

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted
        """Trailing empty segments name this resource; anything else is :meth:`missing`."""
        if path == b"" and not any(request.postpath or ()):
            return self
        return self.missing(path)
