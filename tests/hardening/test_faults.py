"""Faults around a running Hurricane: the sink away, a slow receiver, a failing store."""

from __future__ import annotations

import os
import random
import smtplib
import subprocess
import threading
import time

from twisted.trial.unittest import TestCase

from tests.hardening.harness import (
    Hurricane,
    PySink,
    SmtpSink,
    StoreReader,
    free_port,
    fresh_postgres_database,
    make_message,
    smtp_send,
    temp_dir,
    terminate_backends,
    wait_until,
)
from tests.peers import missing_peer

SEED = 424242


def submit(server: Hurricane, tag: str, rcpt: str) -> int:
    """Submit one message; its reply code (0 for a connection problem)."""
    try:
        code, _ = smtp_send(server.submission_port, "app@app.hx.test", [rcpt],
                            make_message(tag, rcpt))
    except (OSError, smtplib.SMTPException):
        return 0
    return code


class SinkDownTests(TestCase):
    """The destination is unreachable for a while, then comes back."""

    timeout = 120

    def test_deferred_then_delivered(self) -> None:
        """Every message is deferred while the sink is down and delivered once it is up."""
        port = free_port()
        server = Hurricane(temp_dir(self), {"routes": {"*": f"127.0.0.1:{port}"}}).start(self)
        reader = StoreReader(server.store_url)
        tags = [f"down{i:03d}" for i in range(12)]
        for tag in tags:
            self.assertEqual(submit(server, tag, f"{tag}@sink.test"), 250)

        def deferred_twice() -> bool:
            rows = reader.deliveries()
            return len(rows) == len(tags) and all(
                d["state"] == "deferred" and d["attempts"] >= 2 for d in rows)

        wait_until(deferred_twice, 30, "two failed attempts per message", 0.2)
        sink = SmtpSink(self, port=port).start()

        def delivered() -> bool:
            return all(d["state"] == "delivered" for d in reader.deliveries())

        wait_until(delivered, 30, "delivery once the sink is up", 0.2)
        rows = reader.deliveries()
        self.assertTrue(all(d["attempts"] >= 3 for d in rows), rows)
        # the attempts are recorded as events: the deferrals, then the delivery
        events = reader.query("SELECT delivery_id, state FROM events ORDER BY event_id")
        for d in rows:
            states = [s for i, s in events if i == d["delivery_id"]]
            self.assertGreaterEqual(states.count("deferred"), 2, (d, states))
            self.assertEqual(states[-1], "delivered", (d, states))
        wait_until(lambda: sink.count() >= len(tags), 10, "the sink's files")
        self.assertEqual(sink.count(), len(tags))
        self.assertTrue(server.alive())


class SlowReceiverTests(TestCase):
    """A stalling destination does not hold up mail for a fast one."""

    timeout = 120

    def test_fast_domain_not_starved(self) -> None:
        """Mail to the fast domain is delivered while the slow one still holds every slot."""
        slow = PySink(self, stall=30.0)
        fast = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), {
            "routes": {"slow.test": f"127.0.0.1:{slow.port}",
                       "fast.test": f"127.0.0.1:{fast.port}"},
            "delivery": {"max_connections_per_destination": 2, "max_in_flight": 50,
                         "timeouts": {"data_end": 60.0}},
        }).start(self)
        reader = StoreReader(server.store_url)
        for i in range(20):
            self.assertEqual(submit(server, f"slow{i:03d}", f"slow{i:03d}@slow.test"), 250)
        # the slow sink now holds its connections at the final dot
        wait_until(lambda: len(slow._conns) >= 2, 20, "the slow destination to be busy")
        started = time.monotonic()
        for i in range(10):
            self.assertEqual(submit(server, f"fast{i:03d}", f"fast{i:03d}@fast.test"), 250)

        def fast_done() -> bool:
            rows = [d for d in reader.deliveries() if d["recipient"].endswith("@fast.test")]
            return len(rows) == 10 and all(d["state"] == "delivered" for d in rows)

        # far below the 30 s stall: the fast domain did not wait behind the slow one
        wait_until(fast_done, 15, "the fast domain's deliveries", 0.1)
        self.assertLess(time.monotonic() - started, 20)
        slow_rows = [d for d in reader.deliveries() if d["recipient"].endswith("@slow.test")]
        self.assertTrue(all(d["state"] != "delivered" for d in slow_rows))
        self.assertEqual(slow.raw, [])


    def test_fast_domain_not_starved_when_slots_are_full(self) -> None:
        """With every in-flight slot held by a slow domain, new mail elsewhere still goes out."""
        slow = PySink(self, stall=30.0)
        fast = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), {
            "routes": {"slow.test": f"127.0.0.1:{slow.port}",
                       "fast.test": f"127.0.0.1:{fast.port}"},
            "delivery": {"max_connections_per_destination": 2, "max_in_flight": 20,
                         "timeouts": {"data_end": 60.0}},
        }).start(self)
        reader = StoreReader(server.store_url)
        # one message, 40 recipients: a single claim can fill every slot with slow.test
        rcpts = [f"slow{i:03d}@slow.test" for i in range(40)]
        code, text = smtp_send(server.submission_port, "app@app.hx.test", rcpts,
                               make_message("slowbatch", rcpts[0]))
        self.assertEqual(code, 250, text)
        wait_until(lambda: len(slow._conns) >= 2, 20, "the slow destination to be busy")
        for i in range(5):
            self.assertEqual(submit(server, f"fast{i:03d}", f"fast{i:03d}@fast.test"), 250)

        def fast_done() -> bool:
            rows = [d for d in reader.deliveries() if d["recipient"].endswith("@fast.test")]
            return len(rows) == 5 and all(d["state"] == "delivered" for d in rows)

        wait_until(fast_done, 15, "the fast domain's deliveries (slots held by slow.test)", 0.1)
        self.assertEqual(slow.raw, [])


class ReadOnlyStoreTests(TestCase):
    """The SQLite files become unwritable (chattr +i) under a running server."""

    timeout = 120

    def test_451_then_recovers(self) -> None:
        """Submissions and bounces answer 451 with a logged reason, then 250 once writable."""
        if os.geteuid() != 0 or subprocess.run(["chattr", "--help"], capture_output=True
                                                ).returncode not in (0, 1):
            missing_peer("needs root and chattr to make files immutable")
        sink = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), {"routes": {"*": f"127.0.0.1:{sink.port}"}}
                           ).start(self)
        self.assertEqual(submit(server, "ro-before", "ro-before@sink.test"), 250)
        data = server.data_dir
        # Not the -shm file: SQLite maps it, and a write to a mapped immutable
        # file is SIGBUS (a kernel kill no process can answer, not a store error).
        files = [os.path.join(data, n) for n in os.listdir(data)
                 if n.startswith("hurricane.db") and not n.endswith("-shm")]
        probe = subprocess.run(["chattr", "+i", data, *files], capture_output=True, text=True)
        if probe.returncode != 0:
            missing_peer(f"chattr +i not supported here: {probe.stderr.strip()}")
        self.addCleanup(subprocess.run, ["chattr", "-i", data, *files], capture_output=True)
        codes = [submit(server, f"ro-{i}", f"ro-{i}@sink.test") for i in range(3)]
        self.assertEqual(codes, [451, 451, 451])
        bounce = (b"From: MAILER-DAEMON@remote.test\r\nSubject: ro bounce\r\n\r\nreturned\r\n")
        code, text = smtp_send(server.bounce_port, "", ["postmaster@bounces.hx.test"], bounce)
        self.assertEqual(code, 451, text)
        self.assertTrue(server.alive())
        log = server.log_text()
        self.assertIn("store unavailable, answered 451", log)
        self.assertRegex(
            log, r"(?i)store .*(readonly|read-only|permission|not permitted|disk I/O error)")
        subprocess.run(["chattr", "-i", data, *files], check=True)
        # SQLite may need a moment (and a fresh write) to notice it can write again
        wait_until(lambda: submit(server, "ro-after", "ro-after@sink.test") == 250, 20,
                   "a 250 after the files are writable again", 0.5)
        # twistd re-raises the SIGTERM it stopped on once shut down: -15 is clean
        self.assertIn(server.stop(), (0, -15))
        self.assertIn("hurricane stopped", server.log_text())
        reader = StoreReader(server.store_url)
        self.assertEqual(reader.query("PRAGMA integrity_check"), [("ok",)])
        ids = sorted(d["message_id"] for d in reader.deliveries())
        self.assertEqual(ids[0], "ro-after")
        self.assertIn("ro-before", ids)
        self.assertFalse([i for i in ids if i.startswith("ro-") and i[3:].isdigit()])


class PostgresTerminateTests(TestCase):
    """``pg_terminate_backend`` on our own test database in the middle of a load."""

    timeout = 180

    def test_terminated_connections(self) -> None:
        """Submissions see 250 or 451 (never 550), nothing is lost or doubled, the pool recovers."""
        url = fresh_postgres_database(self)
        sink = SmtpSink(self).start()
        server = Hurricane(temp_dir(self), {
            "store": {"url": url},
            "routes": {"*": f"127.0.0.1:{sink.port}"},
        }).start(self)
        reader = StoreReader(url)
        rng = random.Random(SEED)
        results: dict[str, int] = {}
        lock = threading.Lock()
        stop = threading.Event()
        counter = iter(range(1_000_000))

        def client() -> None:
            while not stop.is_set():
                with lock:
                    tag = f"pg{next(counter):05d}"
                code = submit(server, tag, f"{tag}@sink.test")
                with lock:
                    results[tag] = code

        threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        terminated = 0
        try:
            for _ in range(6):
                time.sleep(rng.uniform(0.3, 1.0))
                terminated += terminate_backends(url)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertTrue(server.alive(), server.log_text()[-3000:])
        self.assertGreater(terminated, 0)
        tally = {c: list(results.values()).count(c) for c in set(results.values())}
        print(f"pg_terminate_backend: {terminated} backends; replies {tally}")
        codes = set(results.values())
        self.assertLessEqual(codes, {250, 451, 0}, codes)
        self.assertIn(250, codes)
        # the pool reconnects by itself: a fresh submission is accepted
        wait_until(lambda: submit(server, "pg-after", "pg-after@sink.test") == 250, 20,
                   "a 250 after the terminations", 0.2)
        results["pg-after"] = 250
        accepted = {t for t, c in results.items() if c == 250}

        def all_delivered() -> bool:
            rows = {d["message_id"]: d["state"] for d in reader.deliveries()}
            return all(rows.get(t) == "delivered" for t in accepted)

        wait_until(all_delivered, 60, "every accepted message delivered", 0.25)
        rows = reader.deliveries()
        seen: dict[str, int] = {}
        for d in rows:
            seen[d["message_id"]] = seen.get(d["message_id"], 0) + 1
        for tag, code in results.items():
            n = seen.get(tag, 0)
            if code == 250:
                self.assertEqual(n, 1, tag)
            elif code == 451:
                self.assertEqual(n, 0, tag)
            else:
                self.assertLessEqual(n, 1, tag)
        # each delivery's outcome is recorded once: one "delivered" event per row
        doubled = reader.query("SELECT delivery_id FROM events WHERE state = 'delivered' "
                               "GROUP BY delivery_id HAVING count(*) > 1")
        self.assertEqual(doubled, [])
        self.assertTrue(server.alive())
