"""The accounting log: one JSON line per delivery attempt and per event.

The accounting log is what PowerMTA and KumoMTA operators feed to their
billing, reporting and suppression tools: an append-only file, one record per
line, rotated by size (or daily). Hurricane writes it from the store's event
feed (``IOutcomeStore.events_after``), never from the delivery path: a slow
disk delays the log, not the mail.

Delivery guarantee (at-least-once):
    :class:`AccountingService` keeps the id of the last event it wrote in a
    cursor file in the data directory (``<data_dir>/cursors/accounting.json``,
    replaced atomically). Each batch is written, flushed and fsynced *before*
    the cursor moves, so after a crash or a restart no event is lost; the
    events of the last batch (at most ``batch`` lines) may be written a second
    time. Every line carries ``event_id``, unique and increasing: a consumer
    that must not count twice drops a line whose ``event_id`` it has seen.

Record fields (flat JSON; the names follow the accounting files operators
already parse; PowerMTA ``acct`` CSV / KumoMTA JSON log equivalents in
brackets):

=====================  ==========================================================
``type``               record type [KumoMTA ``type``; PowerMTA ``type`` d/b/t/rb/f]:
                       ``Reception`` (queued), ``Delivery`` (2xx),
                       ``TransientFailure`` (4xx or connection error, will retry),
                       ``Bounce`` (refused during our SMTP conversation),
                       ``Expiration`` (retries ran out), ``AdminBounce`` (not sent:
                       suppressed), ``OOB`` (asynchronous bounce, an NDR came back),
                       ``Feedback`` (ARF complaint), ``Delayed`` (a "delayed" DSN),
                       ``AutoReply``, ``Relayed`` (a relayed/delivered DSN),
                       ``AdminRetry`` (an operator's retry), ``Note``
``timestamp``          when the event happened, Unix seconds [KumoMTA ``timestamp``;
                       PowerMTA ``timeLogged``]
``time``               the same, ISO 8601 UTC
``event_id``           the store's event id: unique, increasing (de-duplication key)
``delivery_id``        the (message, recipient) row
``queue_id``           the message's queue id [KumoMTA ``id``; PowerMTA ``jobId``]
``recipient``          [KumoMTA ``recipient``; PowerMTA ``rcpt``]
``sender``             the application's envelope sender [``sender``; ``orig``]
``domain``             the recipient's domain [KumoMTA ``queue``/``site``]
``code``               SMTP reply code, e.g. 550
``status``             RFC 3463 enhanced status, e.g. ``5.1.1`` [PowerMTA ``dsnStatus``;
                       KumoMTA ``response.enhanced_code``]
``response``           ``"<code> <status> <text>"`` as the remote said it
                       [PowerMTA ``dsnDiag``; KumoMTA ``response.content``]
``dsn_action``         delivered | failed | delayed | relayed [PowerMTA ``dsnAction``]
``remote_host``        the MX host (or the reporting MTA of a DSN) [``dsnMta``;
                       KumoMTA ``peer_address.name``]
``remote_ip``          [PowerMTA ``dlvDestinationIp``; KumoMTA ``peer_address.addr``]
``tls``                TLS protocol, null for clear text [KumoMTA ``tls_protocol_version``]
``reason``             Sisimai reason word (DESIGN.md) [KumoMTA
                       ``bounce_classification``; PowerMTA ``bounceCat``]
``hard``               future mail to this address will fail as well
``state``              the delivery state this event moved to (null: event only)
``delivery_state``     the delivery's state when the line was written
``kind``               Hurricane's own event kind (attempt, bounce, complaint, ...)
``source``             where the answer came from: smtp, dsn, heuristic, arf, ...
``rule``               the classifier rule that decided ``reason``
``duration``           seconds the attempt took
``bounce_id``          the stored returned message (``OOB``, ``Feedback``...)
``feedback_type``      ARF Feedback-Type (``Feedback``) [KumoMTA ``feedback_report``]
``correlation``        how a returned message was matched to the delivery
``note``               why an event changed nothing it could have, e.g.
                       ``recorded, not applied: unverified correlation``
``mailing_id``         X-Hurricane-Mailing-Id [PowerMTA ``header_x-job``-style tags]
``message_id``         X-Hurricane-Message-Id, the application's message id
``header_message_id``  the RFC 5322 Message-ID
``node_id``            the node that wrote the line [KumoMTA ``nodeid``]
=====================  ==========================================================

Absent values are ``null``, never omitted, so every line has every key.

This module also holds the pieces the webhooks share: :class:`CursorFile` and
:class:`EventFeed`, the follower of the event feed.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.logfile import BaseLogFile, DailyLogFile, LogFile

from hurricane.address import domain_of
from hurricane.filemodes import PRIVATE_FILE_MODE, is_inside, make_dirs, tighten
from hurricane.model import EventRecord
from hurricane.opsconfig import AccountingConfig
from hurricane.outcome import Action, EventKind, State
from hurricane.store.interface import IOutcomeStore

__all__ = [
    "AccountingService",
    "CursorFile",
    "EventFeed",
    "accounting_record",
    "accounting_type",
    "build_accounting_service",
]

log = Logger()

#: Seconds a hole in the event ids is waited for before it is skipped (see EventFeed).
DEFAULT_GAP_GRACE = 10.0


# -- the cursor -----------------------------------------------------------------


class CursorFile:
    """The id of the last event a follower handled, kept in one small JSON file.

    Written atomically (temporary file, fsync, rename, fsync of the
    directory): after a crash the file holds either the old or the new
    position, never a torn one.

    Args:
        path: the file, e.g. ``<data_dir>/cursors/accounting.json``.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> int:
        """The stored position; 0 (the start of the feed) when there is no file.

        The cursor directory and file are made owner-only first (they sit in
        the data directory; see :mod:`hurricane.filemodes`).

        Raises:
            ValueError: the file exists but is not a cursor (naming the path);
                starting from 0 would silently replay the whole history.
            OSError: the directory or the file exists and its mode cannot be
                changed.
        """
        tighten(os.path.dirname(os.path.abspath(self.path)))
        tighten(self.path)
        try:
            with open(self.path, "rb") as fp:
                data = json.loads(fp.read().decode("utf-8"))
        except FileNotFoundError:
            return 0
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"cursor file {self.path} is corrupt: {e}") from None
        event_id = data.get("event_id") if isinstance(data, dict) else None
        if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 0:
            raise ValueError(f"cursor file {self.path} has no valid event_id")
        return event_id

    def save(self, event_id: int, now: float | None = None) -> None:
        """Replace the stored position atomically and durably.

        Raises:
            OSError: the file could not be written (the old position stays).
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        make_dirs(directory)
        tmp = f"{self.path}.tmp"
        body = json.dumps({"event_id": event_id, "saved_at": now}).encode("ascii") + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- the follower ---------------------------------------------------------------


class EventFeed(Service):
    """Follows ``store.events_after`` from a persisted cursor, on an injected clock.

    Subclasses implement :meth:`handle`. A batch whose ``handle`` returns is
    done: the cursor moves past it and is saved. A batch whose ``handle``
    raises is read again after :meth:`retry_delay` (the cursor stays), so an
    event is never skipped, and is handled more than once only when a crash
    falls between ``handle`` and the cursor write.

    Holes in the ids: on PostgreSQL an event id is taken from a sequence when
    a transaction inserts it, and transactions commit out of order, so the
    feed may show event 12 before event 11 is visible. Reading past 11 would
    lose it for good. The follower therefore stops at a hole and waits up to
    ``gap_grace`` seconds for it to fill; a hole older than that is an id
    whose transaction rolled back, and is skipped.

    Args:
        name: for logs and stats (``accounting``, ``webhook:crm``).
        store: the event feed.
        clock: schedules polls and retries.
        cursor: where the position is kept (read here, at construction).
        poll_interval: seconds between reads when there is nothing new.
        batch: events read per step.
        gap_grace: seconds a hole in the ids is waited for.

    Raises:
        ValueError: the cursor file is corrupt.
    """

    def __init__(
        self, name: str, store: IOutcomeStore, clock: IReactorTime, cursor: CursorFile, *,
        poll_interval: float = 1.0, batch: int = 500, gap_grace: float = DEFAULT_GAP_GRACE,
    ) -> None:
        self.setName(name)
        self.store = store
        self.clock = clock
        self.cursor = cursor
        self.poll_interval = poll_interval
        self.batch = batch
        self.gap_grace = gap_grace
        #: The id of the last event handled (and saved, unless saving failed).
        self.position = cursor.load()
        #: Consecutive failures of handle (for the backoff).
        self.failures = 0
        self.handled = 0
        self.last_error: str | None = None
        self._gaps: dict[int, float] = {}  # first missing id -> when first seen
        self._call: IDelayedCall | None = None
        self._step_d: Deferred[float] | None = None

    # -- subclass API ----------------------------------------------------------

    async def handle(self, records: Sequence[EventRecord]) -> None:
        """Handle one batch (ids contiguous, in order); raise to have it retried."""
        raise NotImplementedError

    def retry_delay(self) -> float:
        """Seconds before a failed batch is tried again (``failures`` >= 1)."""
        return self.poll_interval

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        """Start following from the saved position."""
        Service.startService(self)
        log.info("{feed} following events after {position}", feed=self.name,
                 position=self.position)
        self._schedule(0)

    def stopService(self) -> Deferred[None] | None:
        """Stop polling; the Deferred fires once a step in progress is over."""
        Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        step = self._step_d
        if step is None or step.called:
            return None
        done: Deferred[None] = Deferred()

        def finished(result: object) -> object:
            done.callback(None)
            return result

        step.addBoth(finished)
        return done

    def poke(self) -> None:
        """Read the feed now instead of at the next poll (cheap, idempotent)."""
        if self.running and self._call is not None and self._call.active() \
                and self.failures == 0:
            self._call.reset(0)

    def stats(self) -> dict[str, object]:
        """Position, counters and the last error, for the console and metrics."""
        return {
            "position": self.position,
            "handled": self.handled,
            "failures": self.failures,
            "last_error": self.last_error,
            "waiting_for_gap": min(self._gaps) if self._gaps else None,
        }

    # -- the loop --------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self.running and self._call is None:
            self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        step = Deferred.fromCoroutine(self._step())
        self._step_d = step
        step.addErrback(self._step_failed)
        step.addCallback(self._schedule)

    def _step_failed(self, failure: Failure) -> float:
        log.failure("{feed}: unexpected error", failure, feed=self.name)
        return self.poll_interval

    async def _step(self) -> float:
        """Read, handle and save one batch; return the delay until the next step."""
        try:
            records = await self.store.events_after(self.position, self.batch)
        except Exception as e:
            self.last_error = f"store: {e}"
            log.warn("{feed}: cannot read the event feed: {error}", feed=self.name, error=e)
            return self.poll_interval
        usable = self._contiguous(records)
        if not usable:
            return self.poll_interval
        try:
            await self.handle(usable)
        except Exception as e:
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            delay = self.retry_delay()
            log.warn("{feed}: batch {first}-{last} failed ({failures} in a row), retrying "
                     "in {delay}s: {error}", feed=self.name, first=usable[0].event.event_id,
                     last=usable[-1].event.event_id, failures=self.failures, delay=delay,
                     error=self.last_error)
            return delay
        self.failures = 0
        self.last_error = None
        self.handled += len(usable)
        self.position = usable[-1].event.event_id
        try:
            self.cursor.save(self.position, self.clock.seconds())
        except OSError:
            # The batch is done; only a restart before the next good save
            # would repeat it (at-least-once).
            log.failure("{feed}: cannot save the cursor {path}", feed=self.name,
                        path=self.cursor.path)
        if len(usable) == len(records) == self.batch:
            return 0  # more is waiting
        return self.poll_interval

    def _contiguous(self, records: Sequence[EventRecord]) -> list[EventRecord]:
        """The leading run of records with no hole before it (see the class doc)."""
        now = self.clock.seconds()
        expected = self.position + 1
        usable: list[EventRecord] = []
        for record in records:
            event_id = record.event.event_id
            if event_id < expected:  # never handle an event twice in one process
                continue
            if event_id > expected:
                first_seen = self._gaps.setdefault(expected, now)
                if now - first_seen < self.gap_grace:
                    break
                log.info("{feed}: event ids {first}-{last} never appeared; skipping them",
                         feed=self.name, first=expected, last=event_id - 1)
            usable.append(record)
            expected = event_id + 1
        for missing in [m for m in self._gaps if m < expected]:
            del self._gaps[missing]
        return usable


# -- accounting records ---------------------------------------------------------

_KIND_TYPES = {
    EventKind.queued: "Reception",
    EventKind.suppressed: "AdminBounce",
    EventKind.expired: "Expiration",
    EventKind.bounce: "OOB",
    EventKind.complaint: "Feedback",
    EventKind.delayed: "Delayed",
    EventKind.autoreply: "AutoReply",
    EventKind.relayed: "Relayed",
    EventKind.retry: "AdminRetry",
    EventKind.note: "Note",
}

#: The RFC 3464 action each record type amounts to (PowerMTA's ``dsnAction``).
_DSN_ACTIONS: dict[str, str] = {
    "Delivery": Action.delivered.value,
    "TransientFailure": Action.delayed.value,
    "Bounce": Action.failed.value,
    "Expiration": Action.failed.value,
    "AdminBounce": Action.failed.value,
    "OOB": Action.failed.value,
    "Delayed": Action.delayed.value,
    "Relayed": Action.relayed.value,
}


def accounting_type(record: EventRecord) -> str:
    """The record ``type`` of an event (see the module docstring)."""
    event = record.event
    kind = EventKind(event.kind)
    if kind is not EventKind.attempt:
        return _KIND_TYPES.get(kind, "Note")
    state = State(event.state) if event.state is not None else None
    if state is State.delivered:
        return "Delivery"
    if state is State.failed:
        return "Bounce"
    if state is State.deferred:
        return "TransientFailure"
    # a late result kept as an event only: judge by the reply
    if event.code is not None and 200 <= event.code < 300:
        return "Delivery"
    if event.code is not None and event.code >= 500:
        return "Bounce"
    return "TransientFailure"


def _iso(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _response(code: int | None, status: str | None, text: str | None) -> str | None:
    parts = [str(p) for p in (code, status, text) if p not in (None, "")]
    return " ".join(parts) if parts else None


def _value(v: object) -> object:
    return getattr(v, "value", v)


def accounting_record(record: EventRecord, node_id: str | None = None) -> dict[str, object]:
    """One accounting line as a dict, every key present (see the module docstring)."""
    e = record.event
    kind = accounting_type(record)
    domain = domain_of(record.recipient) or None
    return {
        "type": kind,
        "timestamp": e.at,
        "time": _iso(e.at),
        "event_id": e.event_id,
        "delivery_id": e.delivery_id,
        "queue_id": record.queue_id,
        "recipient": record.recipient,
        "sender": record.sender,
        "domain": domain,
        "code": e.code,
        "status": e.status,
        "response": _response(e.code, e.status, e.text),
        "dsn_action": _DSN_ACTIONS.get(kind),
        "remote_host": e.remote_host,
        "remote_ip": e.remote_ip,
        "tls": e.tls,
        "reason": e.reason,
        "hard": bool(e.hard),
        "state": _value(e.state),
        "delivery_state": record.delivery_state,
        "kind": _value(e.kind),
        "source": e.source,
        "rule": e.rule,
        "duration": e.duration,
        "bounce_id": e.bounce_id,
        "feedback_type": e.feedback_type,
        "correlation": e.correlation,
        "note": e.note,
        "mailing_id": record.mailing_id,
        "message_id": record.message_id,
        "header_message_id": record.header_message_id,
        "node_id": node_id,
    }


def accounting_line(record: EventRecord, node_id: str | None = None) -> bytes:
    """One accounting line: compact JSON, UTF-8, ending in a newline."""
    return json.dumps(accounting_record(record, node_id), ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8") + b"\n"


# -- the service ----------------------------------------------------------------


#: Mode of an accounting log outside the data directory: readable by the
#: service's group, so that a log shipper in that group can read it (the
#: layout of docs/production.md: /var/log/hurricane, 0750).
SHARED_LOG_MODE = 0o640


def open_log_file(path: str, rotate_bytes: int, max_rotated_files: int = 0, *,
                  private: bool = False) -> BaseLogFile:
    """A rotating log file: by size (``rotate_bytes`` > 0) or daily.

    Size rotation renames ``file`` to ``file.1`` (``file.1`` to ``file.2``...)
    and keeps ``max_rotated_files`` of them (0: all); daily rotation renames
    it to ``file.YYYY_MM_DD`` at the first write of a new (local) day.

    Args:
        private: mode 0600 and missing directories 0700 (a log in the data
            directory); else 0640 (see :data:`SHARED_LOG_MODE`). The mode is
            set at every open, so an existing file gets it too.
    """
    path = os.path.abspath(path)
    if private:
        make_dirs(os.path.dirname(path))
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = PRIVATE_FILE_MODE if private else SHARED_LOG_MODE
    opened: BaseLogFile
    if rotate_bytes > 0:
        opened = LogFile.fromFullPath(path, rotateLength=rotate_bytes,
                                      maxRotatedFiles=max_rotated_files or None,
                                      defaultMode=mode)
    else:
        opened = DailyLogFile.fromFullPath(path, defaultMode=mode)
    return opened


class AccountingService(EventFeed):
    """Writes the accounting log from the event feed (see the module docstring).

    Args:
        store: the event feed.
        clock: polls on it.
        logfile: an open rotating file (:func:`open_log_file`); closed on stop.
        cursor: the position file.
        node_id: written into each line.
        poll_interval: seconds between reads when idle.
        batch: lines per write, fsync and cursor save.
        fsync: fsync the log before the cursor moves (tests may turn it off).
    """

    def __init__(
        self, store: IOutcomeStore, clock: IReactorTime, logfile: BaseLogFile,
        cursor: CursorFile, *, node_id: str | None = None, poll_interval: float = 1.0,
        batch: int = 500, fsync: bool = True, gap_grace: float = DEFAULT_GAP_GRACE,
    ) -> None:
        super().__init__("accounting", store, clock, cursor, poll_interval=poll_interval,
                         batch=batch, gap_grace=gap_grace)
        self.logfile = logfile
        self.node_id = node_id
        self.fsync = fsync

    async def handle(self, records: Sequence[EventRecord]) -> None:
        """Append one line per event, then make them durable."""
        for record in records:
            # One write per line: LogFile checks its size before each write,
            # so files rotate on a line boundary and close to rotate_bytes.
            self.logfile.write(accounting_line(record, self.node_id))
        self.logfile.flush()
        if self.fsync:
            # LogFile has no fsync of its own and keeps its file object private;
            # its writes are unbuffered, and an fsync through any descriptor of
            # the file makes its data durable.
            fd = os.open(self.logfile.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def stopService(self) -> Deferred[None] | None:
        """Stop following, then close the file once a write in progress is over."""
        result = super().stopService()
        if result is None:
            self._close()
            return None
        return result.addCallback(lambda _: self._close())

    def _close(self) -> None:
        if not self.logfile.closed:
            self.logfile.close()


def build_accounting_service(
    accounting: AccountingConfig, store: IOutcomeStore, clock: IReactorTime, data_dir: str,
    node_id: str | None = None,
) -> AccountingService | None:
    """The accounting service of the configuration, or None when it is off.

    Args:
        accounting: the ``[accounting]`` section.
        store: the root service's store.
        clock: the reactor.
        data_dir: ``Config.data_dir`` (the cursor, and the default file, live there).
        node_id: ``Config.node_id``.

    Raises:
        OSError: the log file cannot be opened.
        ValueError: the cursor file is corrupt.
    """
    if not accounting.enabled:
        return None
    path = accounting.file or os.path.join(data_dir, "accounting.jsonl")
    cursor = CursorFile(os.path.join(data_dir, "cursors", "accounting.json"))
    cursor.load()  # fail before opening anything
    # Every recipient address is in it: in the data directory it is private
    # like the rest; a file the operator put elsewhere stays group-readable.
    logfile = open_log_file(path, accounting.rotate_bytes, accounting.max_rotated_files,
                            private=is_inside(path, data_dir))
    return AccountingService(store, clock, logfile, cursor, node_id=node_id,
                             poll_interval=accounting.poll_interval, batch=accounting.batch)
