"""Tests of hurricane.accounting: record mapping, the cursor, restarts and rotation."""

from __future__ import annotations

import glob
import json
import os
import stat
from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.python.logfile import DailyLogFile, LogFile
from twisted.trial.unittest import SynchronousTestCase

from hurricane.accounting import (
    AccountingService,
    CursorFile,
    EventFeed,
    accounting_record,
    build_accounting_service,
    open_log_file,
)
from hurricane.model import EventRecord, NewMessage, NewRecipient
from hurricane.opsconfig import AccountingConfig
from hurricane.store.memory import MemoryStore
from tests.helpers import T0, drain, populate, run, temp_path

ALL_KEYS = {
    "type", "timestamp", "time", "event_id", "delivery_id", "queue_id", "recipient", "sender",
    "domain", "code", "status", "response", "dsn_action", "remote_host", "remote_ip", "tls",
    "reason", "hard", "state", "delivery_state", "kind", "source", "rule", "duration",
    "bounce_id", "feedback_type", "correlation", "note", "mailing_id", "message_id",
    "header_message_id", "node_id",
}


def read_lines(pattern: str) -> list[dict[str, object]]:
    """Every JSON line of the files matching ``pattern``, oldest file first."""
    lines: list[dict[str, object]] = []
    for path in sorted(glob.glob(pattern), key=lambda p: (-int(p.rsplit(".", 1)[1])
                                                        if p[-1].isdigit() else 0)):
        with open(path, "rb") as fp:
            lines.extend(json.loads(line) for line in fp.read().splitlines())
    return lines


class AccountingRecordTests(SynchronousTestCase):
    """The mapping of events to accounting records."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.ids = run(self, populate(self.store))
        records = run(self, self.store.events_after(0, 100))
        self.records = [accounting_record(r, "node-a") for r in records]

    def test_every_key_present(self) -> None:
        """Every record has every documented key, absent values as null."""
        for record in self.records:
            self.assertEqual(set(record), ALL_KEYS)

    def test_types(self) -> None:
        """Each event kind gets the PowerMTA/KumoMTA-style record type."""
        types = [(r["recipient"].split("@")[0], r["type"]) for r in self.records]  # type: ignore[union-attr]
        self.assertEqual(types, [
            ("ok", "Reception"), ("later", "Reception"), ("refused", "Reception"),
            ("blocked", "AdminBounce"), ("angry", "Reception"), ("info", "Reception"),
            ("ok", "Delivery"), ("later", "TransientFailure"), ("refused", "Bounce"),
            ("angry", "Delivery"), ("info", "Delivery"), ("later", "AdminRetry"),
            ("later", "Expiration"), ("ok", "OOB"), ("angry", "Feedback"),
            ("info", "Delayed"), ("info", "AutoReply"),
        ])

    def test_delivery_fields(self) -> None:
        """A Delivery line carries the reply, the peer, TLS and the user identifiers."""
        line = self.records[6]
        self.assertEqual(line["type"], "Delivery")
        self.assertEqual(line["code"], 250)
        self.assertEqual(line["status"], "2.0.0")
        self.assertEqual(line["response"], "250 2.0.0 ok queued")
        self.assertEqual(line["dsn_action"], "delivered")
        self.assertEqual(line["remote_host"], "mx.example.org")
        self.assertEqual(line["remote_ip"], "192.0.2.1")
        self.assertEqual(line["tls"], "TLSv1.3")
        self.assertEqual(line["sender"], "app@example.com")
        self.assertEqual(line["domain"], "example.org")
        self.assertEqual(line["mailing_id"], "Spring-26")
        self.assertEqual(line["message_id"], "M-1")
        self.assertEqual(line["header_message_id"], "abc@example.com")
        self.assertEqual(line["timestamp"], T0 + 1)
        self.assertEqual(line["time"], "2026-01-01T00:00:01.000Z")
        self.assertEqual(line["node_id"], "node-a")
        self.assertEqual(line["duration"], 0.5)
        self.assertTrue(line["queue_id"])

    def test_failure_fields(self) -> None:
        """Bounce, OOB and Feedback lines carry reason, hard, rule and the bounce id."""
        bounce, oob, feedback = self.records[8], self.records[13], self.records[14]
        self.assertEqual((bounce["reason"], bounce["hard"], bounce["rule"], bounce["code"],
                          bounce["status"], bounce["dsn_action"]),
                         ("userunknown", True, "550-511", 550, "5.1.1", "failed"))
        self.assertEqual((oob["reason"], oob["state"], oob["bounce_id"], oob["correlation"],
                          oob["source"]), ("mailboxfull", "bounced", 1, "verp", "dsn"))
        self.assertEqual((feedback["feedback_type"], feedback["state"], feedback["source"]),
                         ("abuse", "complained", "arf"))
        self.assertEqual(self.records[7]["dsn_action"], "delayed")


class FakeFeedStore:
    """Just ``events_after`` over a list the test controls (holes allowed)."""

    def __init__(self, records: Sequence[EventRecord]) -> None:
        self.records = list(records)
        self.reads = 0

    async def events_after(self, after_event_id: int, limit: int) -> list[EventRecord]:
        """Records above the id, in id order."""
        self.reads += 1
        found = sorted((r for r in self.records if r.event.event_id > after_event_id),
                       key=lambda r: r.event.event_id)
        return found[:limit]


class Recorder(EventFeed):
    """An EventFeed that keeps what it handled."""

    seen: list[int]

    async def handle(self, records: Sequence[EventRecord]) -> None:
        """Keep the ids."""
        self.seen.extend(r.event.event_id for r in records)


class EventFeedTests(SynchronousTestCase):
    """The follower: holes in the event ids and the cursor file."""

    def setUp(self) -> None:
        store = MemoryStore()
        run(self, populate(store))
        self.all = run(self, store.events_after(0, 100))
        self.dir = temp_path(self)
        os.makedirs(self.dir)
        self.clock = Clock()

    def test_hole_waits_then_skips(self) -> None:
        """A hole in the ids holds the feed for gap_grace seconds, then is skipped."""
        store = FakeFeedStore([r for r in self.all if r.event.event_id != 3])
        feed = Recorder("t", store, self.clock,  # type: ignore[arg-type]
                        CursorFile(os.path.join(self.dir, "c.json")), gap_grace=10)
        feed.seen = []
        feed.startService()
        drain(self.clock)
        self.assertEqual(feed.seen, [1, 2])
        drain(self.clock, 5)
        self.assertEqual(feed.seen, [1, 2])
        drain(self.clock, 6)
        self.assertEqual(feed.seen, [1, 2, *range(4, 18)])
        self.successResultOf_or_none(feed)

    def test_hole_filled_in_time(self) -> None:
        """An event committed late, inside the grace period, is handled in order."""
        late = [r for r in self.all if r.event.event_id == 3]
        store = FakeFeedStore([r for r in self.all if r.event.event_id != 3])
        feed = Recorder("t", store, self.clock,  # type: ignore[arg-type]
                        CursorFile(os.path.join(self.dir, "c.json")), gap_grace=10)
        feed.seen = []
        feed.startService()
        drain(self.clock)
        store.records.extend(late)
        drain(self.clock, 1)
        self.assertEqual(feed.seen, list(range(1, 18)))
        self.successResultOf_or_none(feed)

    def test_cursor_file(self) -> None:
        """The cursor survives in its file, is private, and a corrupt one is refused."""
        path = os.path.join(self.dir, "sub", "c.json")
        cursor = CursorFile(path)
        self.assertEqual(cursor.load(), 0)
        cursor.save(42, T0)
        self.assertEqual(CursorFile(path).load(), 42)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertFalse(os.path.exists(path + ".tmp"))
        with open(path, "w") as fp:
            fp.write("{not json")
        self.assertRaises(ValueError, cursor.load)

    def test_cursor_directory_private(self) -> None:
        """The cursors directory is created 0700; a wider one (and file) is tightened by load()."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        path = os.path.join(self.dir, "cursors", "c.json")
        CursorFile(path).save(7, T0)
        directory = os.path.dirname(path)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        os.chmod(directory, 0o755)
        os.chmod(path, 0o644)
        self.assertEqual(CursorFile(path).load(), 7)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def successResultOf_or_none(self, feed: EventFeed) -> None:
        """Stop ``feed`` and check that nothing is left on the clock."""
        result = feed.stopService()
        if result is not None:
            self.successResultOf(result)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AccountingServiceTests(SynchronousTestCase):
    """The service: lines written, the cursor, restarts, failures and rotation."""

    def setUp(self) -> None:
        self.dir = temp_path(self)
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "acct.jsonl")
        self.cursor_path = os.path.join(self.dir, "cursors", "accounting.json")
        self.store = MemoryStore()
        run(self, populate(self.store))
        self.clock = Clock()

    def service(self, batch: int = 500, rotate_bytes: int = 0,
                max_rotated: int = 0) -> AccountingService:
        """A started service over the test's store, file and cursor."""
        logfile = open_log_file(self.path, rotate_bytes or 10**9, max_rotated)
        svc = AccountingService(self.store, self.clock, logfile, CursorFile(self.cursor_path),
                                node_id="n1", batch=batch, poll_interval=1.0)
        svc.startService()
        return svc

    def stop(self, svc: AccountingService) -> None:
        """Stop ``svc`` and check that no call is left on the clock."""
        result = svc.stopService()
        if result is not None:
            self.successResultOf(result)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def add_message(self, n: int = 2) -> None:
        """Enqueue one more message (``n`` queued events)."""
        run(self, self.store.enqueue(NewMessage(
            sender="app@example.com",
            recipients=tuple(NewRecipient(f"new{i}@example.net") for i in range(n)),
            body=b"x"), T0 + 100))

    def test_writes_every_event(self) -> None:
        """Every event becomes one line, in order, and the cursor names the last."""
        svc = self.service()
        drain(self.clock)
        lines = read_lines(self.path)
        self.assertEqual([line["event_id"] for line in lines], list(range(1, 18)))
        self.assertEqual(lines[0]["node_id"], "n1")
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.assertEqual(svc.stats()["position"], 17)
        self.stop(svc)

    def test_lines_made_durable(self) -> None:
        """Each batch of lines is fsynced, through a descriptor of the log file itself."""
        synced: list[tuple[int, int]] = []

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            synced.append((info.st_dev, info.st_ino))

        self.patch(os, "fsync", fsync)
        logfile = open_log_file(self.path, 10**9)
        svc = AccountingService(self.store, self.clock, logfile, CursorFile(self.cursor_path),
                                batch=5, fsync=True)
        svc.startService()
        drain(self.clock)
        info = os.stat(self.path)
        # 17 events in batches of 5 (the cursor file is fsynced as well)
        self.assertEqual(synced.count((info.st_dev, info.st_ino)), 4)
        self.stop(svc)

    def test_polls_for_new_events(self) -> None:
        """Events recorded later are written at the next poll."""
        svc = self.service()
        drain(self.clock)
        self.add_message(3)
        drain(self.clock, 1.0)
        self.assertEqual([line["event_id"] for line in read_lines(self.path)],
                         list(range(1, 21)))
        self.stop(svc)

    def test_restart_resumes(self) -> None:
        """After a clean restart only new events are written: no loss, no duplicate."""
        svc = self.service(batch=4)
        drain(self.clock)
        self.stop(svc)
        self.add_message(2)
        svc = self.service(batch=4)
        drain(self.clock)
        ids = [line["event_id"] for line in read_lines(self.path)]
        self.assertEqual(ids, list(range(1, 20)))
        self.stop(svc)

    def test_crash_before_cursor_write(self) -> None:
        """A crash between a write and its cursor save repeats that batch only."""
        svc = self.service(batch=5)
        real_save = svc.cursor.save
        saves = []

        def save(event_id: int, now: float | None = None) -> None:
            saves.append(event_id)
            if len(saves) == 2:  # lines 6-10 are on disk: the process dies now
                svc.running = False
                raise OSError("killed")
            real_save(event_id, now)

        svc.cursor.save = save  # type: ignore[method-assign]
        drain(self.clock)
        self.flushLoggedErrors(OSError)
        svc.logfile.close()
        self.assertEqual(CursorFile(self.cursor_path).load(), 5)
        svc2 = self.service(batch=5)
        drain(self.clock)
        ids = [line["event_id"] for line in read_lines(self.path)]
        self.assertEqual(ids, [*range(1, 11), *range(6, 18)])  # 6-10 twice, none lost
        self.stop(svc2)

    def test_store_outage(self) -> None:
        """A store outage delays the log; nothing is skipped."""
        self.store.fail_next(1)
        svc = self.service()
        drain(self.clock)
        self.assertEqual(read_lines(self.path), [])
        self.assertIsNotNone(svc.stats()["last_error"])
        drain(self.clock, 1.0)
        self.assertEqual(len(read_lines(self.path)), 17)
        self.stop(svc)

    def test_write_failure_retried(self) -> None:
        """A failed write leaves the cursor and the batch is written again later."""
        svc = self.service()
        real_write = svc.logfile.write
        calls = []

        def write(data: bytes) -> None:
            calls.append(data)
            if len(calls) == 1:
                raise OSError("EIO")
            real_write(data)

        svc.logfile.write = write  # type: ignore[method-assign]
        drain(self.clock)
        self.assertEqual(svc.position, 0)
        self.assertEqual(svc.failures, 1)
        drain(self.clock, 1.0)
        self.assertEqual([line["event_id"] for line in read_lines(self.path)],
                         list(range(1, 18)))
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        self.stop(svc)

    def test_rotation_by_size(self) -> None:
        """The file rotates by size on line boundaries; rotated files keep every line."""
        svc = self.service(batch=3, rotate_bytes=2000)
        drain(self.clock)
        files = glob.glob(self.path + "*")
        self.assertGreater(len(files), 2)
        for path in files:
            with open(path, "rb") as fp:
                data = fp.read()
            self.assertTrue(data.endswith(b"\n"))
        ids = [line["event_id"] for line in read_lines(self.path + "*")]
        self.assertEqual(ids, list(range(1, 18)))
        self.stop(svc)

    def test_rotation_keeps_max_files(self) -> None:
        """max_rotated_files bounds the number of rotated files kept."""
        svc = self.service(batch=3, rotate_bytes=1000, max_rotated=2)
        drain(self.clock)
        self.assertEqual(sorted(os.path.basename(p) for p in glob.glob(self.path + "*")),
                         ["acct.jsonl", "acct.jsonl.1", "acct.jsonl.2"])
        self.stop(svc)

    def test_build(self) -> None:
        """The builder: None when off; defaults to the data directory; daily rotation."""
        self.assertIsNone(build_accounting_service(AccountingConfig(), self.store, self.clock,
                                                   self.dir))
        svc = build_accounting_service(AccountingConfig(enabled=True, rotate_bytes=0),
                                       self.store, self.clock, self.dir, node_id="n9")
        assert svc is not None
        self.assertIsInstance(svc.logfile, DailyLogFile)
        self.assertEqual(svc.logfile.path, os.path.join(self.dir, "accounting.jsonl"))
        svc.startService()
        drain(self.clock)
        self.stop(svc)
        self.assertEqual(CursorFile(self.cursor_path).load(), 17)
        svc = build_accounting_service(AccountingConfig(enabled=True, file=self.path),
                                       self.store, self.clock, self.dir)
        assert svc is not None
        self.assertIsInstance(svc.logfile, LogFile)
        svc.logfile.close()

    def test_file_modes(self) -> None:
        """The log is 0600 in the data directory (even if it was wider), 0640 elsewhere."""
        old = os.umask(0o022)
        self.addCleanup(os.umask, old)
        inside = os.path.join(self.dir, "accounting.jsonl")
        with open(inside, "wb"):
            pass
        os.chmod(inside, 0o644)  # left by an older version
        for rotate_bytes in (0, 10**6):
            svc = build_accounting_service(
                AccountingConfig(enabled=True, rotate_bytes=rotate_bytes),
                self.store, self.clock, self.dir)
            assert svc is not None
            svc.logfile.close()
            self.assertEqual(stat.S_IMODE(os.stat(inside).st_mode), 0o600, rotate_bytes)
        # A file the operator put elsewhere (e.g. /var/log/hurricane) stays
        # readable by the service's group, for a log shipper.
        outside = os.path.join(temp_path(self), "log", "acct.jsonl")
        svc = build_accounting_service(AccountingConfig(enabled=True, file=outside),
                                       self.store, self.clock, self.dir)
        assert svc is not None
        svc.logfile.close()
        self.assertEqual(stat.S_IMODE(os.stat(outside).st_mode), 0o640)

    def test_config_problems(self) -> None:
        """AccountingConfig reports its invalid values by key."""
        self.assertEqual(AccountingConfig().problems(), [])
        keys = [k for k, _ in AccountingConfig(rotate_bytes=-1, poll_interval=0,
                                               batch=0).problems()]
        self.assertEqual(keys, ["rotate_bytes", "poll_interval", "batch"])
