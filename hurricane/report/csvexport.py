"""CSV for people's spreadsheets: one cell format, and streaming web answers.

Every CSV Hurricane writes (the web exports here, ``hurricane outcomes
--format csv``) goes through :class:`CsvWriter`, so a cell looks the same
whichever path wrote it, and text from the outside world (returned mail,
remote SMTP replies, addresses) never reaches a spreadsheet as a formula.

Streaming: a million rows never sit in memory: each page is read from the
store, written to the request and dropped; while the client reads slowly the
transport pauses us (:class:`FlowControl` is the request's push producer) and
the next page is not even read until it resumes. A client that goes away
stops the export.
"""

from __future__ import annotations

import csv
import io
import time
import unicodedata
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

if TYPE_CHECKING:
    # Only a type here: the CLI imports this module without twisted.web.
    from twisted.web.server import Request

__all__ = ["CsvWriter", "FlowControl", "csv_cell", "is_time_column", "iso_time", "stream_csv"]

log = Logger()

#: Leading characters that make a spreadsheet read a cell as a formula
#: (OWASP "CSV Injection": = + - @, tab and carriage return), with line feed
#: and the fullwidth and small forms of the four signs (U+FE66 is a small
#: "="), which cost nothing to escape.
_FORMULA = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20",
            "\ufe66", "\ufe62", "\ufe63", "\ufe6b")
#: Unicode categories of the characters a spreadsheet may drop before it
#: looks for a formula: blanks, controls (NUL) and invisible format
#: characters (U+200B zero width space, U+FEFF byte order mark...).
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def _first_visible(text: str) -> str:
    """The first character of ``text`` that is not blank, a control or invisible."""
    for ch in text:
        if not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE:
            return ch
    return ""


def iso_time(value: float) -> str:
    """A timestamp as ISO 8601 UTC to the second: ``2026-12-06T01:02:03Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def is_time_column(name: str) -> bool:
    """True for a column that holds a timestamp: its name ends in ``_at``.

    Every timestamp Hurricane exports is named so (``created_at``,
    ``updated_at``, ``delivered_at``, ``bounced_at``, ``next_attempt_at``...)
    and nothing else is, so the rule needs no list to keep up to date.
    """
    return name.endswith("_at")


def csv_cell(value: object, *, timestamp: bool = False) -> str:
    """The text of one CSV cell, made safe for spreadsheets.

    None is empty, booleans are ``true``/``false`` (as in the JSON exports),
    a timestamp (epoch seconds, in a column :func:`is_time_column` names)
    is :func:`iso_time`, other values are their ``str`` (a ``str`` enum its value).
    Text that starts with a formula character, or whose first character that
    is not blank, a control or invisible is one (``" =HYPERLINK(...)"``,
    ``"\\u200b=1+1"``, ``"\\x00=1"``), gets a leading ``'``, which spreadsheets
    take as "this is text" (OWASP: any leading character a spreadsheet may
    strip). Numbers go through the same rule: no exported number is
    negative, and a cell never starts with ``-``.

    Args:
        value: one field.

    Returns:
        The cell's text.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if timestamp and isinstance(value, int | float):
        return iso_time(value)
    # str(value) of a (str, Enum) member is "Class.member"; its text is the value.
    text = str.__str__(value) if isinstance(value, str) else str(value)
    if text.startswith(_FORMULA) or _first_visible(text) in _FORMULA:
        return "'" + text
    return text


class _TextOut(Protocol):
    def write(self, text: str, /) -> object: ...


class CsvWriter:
    """``csv.writer`` (CRLF line ends, RFC 4180 quoting) with every cell through
    :func:`csv_cell`: the one CSV writer of the web exports and the CLI.

    The header is written first, and names the timestamp columns
    (:func:`is_time_column`): their cells are ISO 8601 UTC, whichever path
    wrote the file (JSON keeps epoch seconds: its fields are the API's).

    Args:
        out: where the text goes (a file, ``sys.stdout``, a StringIO).
        columns: the column names, written as the header row.
    """

    def __init__(self, out: _TextOut, columns: Sequence[str]) -> None:
        self._writer = csv.writer(out, lineterminator="\r\n")
        self._times = [is_time_column(c) for c in columns]
        self._writer.writerow([csv_cell(c) for c in columns])

    def _cells(self, row: Iterable[object]) -> list[str]:
        cells = list(row)
        if len(cells) != len(self._times):
            raise ValueError(f"a row of {len(cells)} cells under {len(self._times)} columns")
        return [csv_cell(v, timestamp=t) for v, t in zip(cells, self._times, strict=True)]

    def writerow(self, row: Iterable[object]) -> None:
        """Write one row, a cell per column."""
        self._writer.writerow(self._cells(row))

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        """Write several rows."""
        self._writer.writerows([self._cells(row) for row in rows])


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
                     pages: AsyncIterator[Sequence[Sequence[object]]]) -> int:
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
    writer = CsvWriter(buffer, header)
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
            writer.writerows(rows)
            request.write(buffer.getvalue().encode("utf-8"))
            count += len(rows)
    finally:
        request.unregisterProducer()
    if not flow.stopped:
        request.finish()
    return count
