"""Streaming CSV answers: keyset pages written as they come, with flow control.

A million rows never sit in memory: each page is read from the store,
written to the request and dropped; while the client reads slowly the
transport pauses us (:class:`FlowControl` is the request's push producer) and
the next page is not even read until it resumes. A client that goes away
stops the export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

__all__ = ["FlowControl", "stream_csv", "csv_cell"]

log = Logger()

#: Leading characters that make spreadsheets evaluate a cell as a formula.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value made safe for spreadsheets: text starting like a formula gets a quote.

    Args:
        value: one field.

    Returns:
        The value to write ("" for None).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


@implementer(IPushProducer)
class FlowControl:
    """A push producer whose pause/resume the exporting coroutine waits on."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False
        self._waiting: list[Deferred[None]] = []

    def pauseProducing(self) -> None:
        """The transport's buffer is full."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The transport wants more."""
        self.paused = False
        self._release()

    def stopProducing(self) -> None:
        """The client went away."""
        self.stopped = True
        self._release()

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    async def ready(self) -> bool:
        """Wait until writing may go on; False when the export should stop."""
        while self.paused and not self.stopped:
            d: Deferred[None] = Deferred()
            self._waiting.append(d)
            await d
        return not self.stopped


async def stream_csv(request: Request, filename: str, header: Sequence[str],
                     pages: AsyncIterator[Sequence[Sequence[Any]]]) -> int:
    """Answer ``request`` with a CSV attachment written page by page.

    Args:
        request: the request (not finished by the caller).
        filename: the file name offered to the browser (ASCII).
        header: the column names.
        pages: yields lists of rows, one store page at a time.

    Returns:
        The number of rows written.
    """
    request.setHeader(b"content-type", b"text/csv; charset=utf-8")
    request.setHeader(b"content-disposition",
                      f'attachment; filename="{filename}"'.encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    flow = FlowControl()
    request.registerProducer(flow, True)
    request.notifyFinish().addErrback(lambda _: flow.stopProducing())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    request.write(buffer.getvalue().encode("utf-8"))
    count = 0
    try:
        async for rows in pages:
            if not await flow.ready():
                log.info("CSV export {filename} stopped by the client after {count} rows",
                         filename=filename, count=count)
                return count
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([[csv_cell(v) for v in row] for row in rows])
            request.write(buffer.getvalue().encode("utf-8"))
            count += len(rows)
    finally:
        request.unregisterProducer()
    if not flow.stopped:
        request.finish()
    return count
