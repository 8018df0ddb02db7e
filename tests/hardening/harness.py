"""Real processes on loopback for the hardening tests: Hurricane under twistd, sinks, clients.

Everything here is blocking and thread-free except the sinks written in
Python, which run in a daemon thread each. Every wait is a poll loop with a
deadline (:func:`wait_until`); every process started here is killed in the
cleanup the starter registers. Starting, waiting for and stopping processes is
the shared harness of tests/process.py; this module adds the hardening
configuration, the sinks and the raw clients (and re-exports the harness names
its tests import from here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twisted.trial.unittest import SkipTest

from tests.process import TWISTD as TWISTD
from tests.process import (
    exited,
    kill_process,
    listeners,
    read_log,
    smtp_sink_argv,
    start_twistd,
    stop_process,
    wait_port,
)
from tests.process import free_port as free_port
from tests.process import fresh_postgres_database as fresh_postgres_database
from tests.process import postgres_dsn_or_skip as postgres_dsn_or_skip
from tests.process import temp_dir as process_temp_dir
from tests.process import wait_until as wait_until

SMTP_SINK = "/usr/sbin/smtp-sink"
SWAKS = shutil.which("swaks") or "/usr/bin/swaks"
BOUNCE_DOMAIN = "bounces.hx.test"
SINK_DOMAIN = "sink.test"


def require_peer(path: str, package: str) -> str:
    """``path`` if it exists; else skip (or fail under ``HURRICANE_REQUIRE_PEERS=1``)."""
    if os.path.exists(path):
        return path
    message = f"{path} not installed (Debian package {package})"
    if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
        raise AssertionError(message + " and HURRICANE_REQUIRE_PEERS=1")
    raise SkipTest(message)


def temp_dir(test: Any) -> str:
    """A fresh directory removed in the test's cleanups, immutable files included."""
    return process_temp_dir(test, "hurricane-hx-")


def terminate_backends(url: str) -> int:
    """``pg_terminate_backend`` every other connection to the database of ``url``."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# -- the store, read from the outside ---------------------------------------------------


class StoreReader:
    """Read-only queries on the database of a running (or dead) Hurricane."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self.url.startswith("sqlite:"):
            path = "/" + self.url.split("sqlite:", 1)[1].lstrip("/")
            conn: Any = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        else:
            import psycopg2

            conn = psycopg2.connect(self.url)
        try:
            yield conn.cursor()
        finally:
            conn.close()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement (``?`` placeholders, both engines)."""
        if not self.url.startswith("sqlite:"):
            sql = sql.replace("?", "%s")
        with self._cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall())

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery with its message's application ids."""
        rows = self.query(
            "SELECT d.delivery_id, m.message_id, d.recipient, d.state, d.attempts, d.reason "
            "FROM deliveries d JOIN messages m ON m.message_pk = d.message_pk")
        keys = ("delivery_id", "message_id", "recipient", "state", "attempts", "reason")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def bounces(self) -> list[dict[str, Any]]:
        """Every stored returned message (raw as bytes)."""
        rows = self.query("SELECT bounce_id, rcpt_to, delivery_id, status, raw FROM bounces")
        keys = ("bounce_id", "rcpt_to", "delivery_id", "status", "raw")
        return [dict(zip(keys, (*r[:4], bytes(r[4])), strict=True)) for r in rows]


# -- Hurricane under twistd ---------------------------------------------------------------


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def render_config(sections: dict[str, dict[str, Any]]) -> str:
    """TOML text for nested dicts of simple values (tables nested one or two deep)."""
    out: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        simple = {k: v for k, v in body.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in body.items() if isinstance(v, dict)}
        out.append(f"[{name}]")
        out.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in simple.items())
        out.append("")
        for k, v in nested.items():
            table(f"{name}.{k}", v)

    for name, body in sections.items():
        table(name, body)
    return "\n".join(out) + "\n"


@dataclass
class Hurricane:
    """One ``twistd -n hurricane --config FILE`` process and its configuration.

    Args:
        workdir: holds the config file, data directory and logs.
        overrides: config sections merged over the test defaults.
    """

    workdir: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, list[int]] = field(default_factory=dict)
    #: (kind, host, port) of every listener of the current start, from the log
    addresses: list[tuple[str, str, int]] = field(default_factory=list)
    starts: int = 0

    def __post_init__(self) -> None:
        self.data_dir = os.path.join(self.workdir, "data")
        self.config_path = os.path.join(self.workdir, "hurricane.toml")
        sections: dict[str, dict[str, Any]] = {
            "server": {"hostname": "mx.hx.test", "data_dir": self.data_dir, "node_id": "hx-1"},
            "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "bounce": {"domain": BOUNCE_DOMAIN, "listen": ["tcp:0:interface=127.0.0.1"]},
            "web": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "delivery": {
                "first_retry": 1.0, "max_retry_interval": 2.0, "retry_jitter": 0.0,
                "lease_seconds": 4.0, "poll_interval": 0.2,
                "timeouts": {"connect": 2.0, "greeting": 10.0, "mail": 10.0, "rcpt": 10.0,
                             "data_init": 10.0, "data_block": 10.0, "data_end": 10.0},
            },
        }
        for name, body in self.overrides.items():
            merged = dict(sections.get(name, {}))
            for k, v in body.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            sections[name] = merged
        self.sections = sections
        with open(self.config_path, "w") as fp:
            fp.write(render_config(sections))

    @property
    def store_url(self) -> str:
        """The store URL the process uses."""
        url = self.sections.get("store", {}).get("url", "")
        return url or "sqlite:///" + os.path.join(self.data_dir, "hurricane.db")

    @property
    def log_path(self) -> str:
        """This start's log file."""
        return os.path.join(self.workdir, f"twistd-{self.starts}.log")

    def log_text(self, start: int | None = None) -> str:
        """The log of one start (default: the current one)."""
        return read_log(os.path.join(self.workdir, f"twistd-{start or self.starts}.log"))

    def all_logs(self) -> str:
        """The logs of every start, in order."""
        return "".join(self.log_text(i) for i in range(1, self.starts + 1))

    def start(self, test: Any | None = None, timeout: float = 30.0) -> Hurricane:
        """Start the process and wait for every listener's log line."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.proc = start_twistd(["--config", self.config_path], self.workdir, self.log_path)
        if test is not None and self.starts == 1:
            test.addCleanup(self.kill)
        wanted = {"submission": len(self.sections["submission"]["listen"]),
                  "bounce": len(self.sections["bounce"]["listen"])}

        def listening() -> bool:
            if self.proc is not None:
                exited(self.proc, self.log_path)
            ports: dict[str, list[int]] = {}
            found = listeners(self.log_text())
            for kind, _host, port in found:
                ports.setdefault(kind, []).append(port)
            if all(len(ports.get(k, [])) >= n for k, n in wanted.items()) and \
                    "hurricane started" in self.log_text():
                self.ports = ports
                self.addresses = found
                return True
            return False

        wait_until(listening, timeout, "hurricane to listen")
        return self

    @property
    def submission_port(self) -> int:
        """The first submission port of the current start."""
        return self.ports["submission"][0]

    @property
    def bounce_port(self) -> int:
        """The first bounce port of the current start."""
        return self.ports["bounce"][0]

    def kill9(self) -> None:
        """SIGKILL the process (no clean-up of any kind) and reap it."""
        self.ports = {}
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; SIGKILL after ``timeout``. The exit status."""
        if self.proc is None:
            return 0
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """Cleanup: make sure the process is gone."""
        if self.proc is not None:
            kill_process(self.proc)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def codec(self) -> Any:
        """The VERP codec of this configuration (keys from the data directory)."""
        from hurricane.config import load_config
        from hurricane.verp import codec_from_config

        return codec_from_config(load_config(self.config_path))


# -- sinks ----------------------------------------------------------------------------------


class SmtpSink:
    """Postfix's smtp-sink, dumping each transaction into a file of ``directory``."""

    def __init__(self, test: Any, port: int | None = None, extra: Iterable[str] = ()) -> None:
        self.path = require_peer(SMTP_SINK, "postfix")
        self.directory = temp_dir(test)
        os.chmod(self.directory, 0o777)
        self.port = port or free_port()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        test.addCleanup(self.stop)

    def start(self) -> SmtpSink:
        """Start listening on the port (the same one after a stop)."""
        self.proc = subprocess.Popen(
            smtp_sink_argv(self.path, self.port, 1000, self.directory, self.extra),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 10, "smtp-sink to listen")
        return self

    def stop(self) -> None:
        """Stop the sink (files stay)."""
        if self.proc is not None:
            stop_process(self.proc, 5)
        self.proc = None

    def messages(self) -> list[bytes]:
        """Every dumped transaction, complete or not."""
        out = []
        for name in sorted(os.listdir(self.directory)):
            with open(os.path.join(self.directory, name), "rb") as fp:
                out.append(fp.read())
        return out

    def count(self) -> int:
        """How many transactions reached the sink."""
        return len(os.listdir(self.directory))


class PySink:
    """A small SMTP sink in a thread: records raw DATA bytes, can stall or be down.

    Args:
        stall: seconds to wait before answering each final dot (a slow receiver).
        greeting_delay: seconds before the 220.
    """

    def __init__(self, test: Any, stall: float = 0.0, reply: bytes = b"250 2.0.0 Ok") -> None:
        self.stall = stall
        self.reply = reply
        self.raw: list[bytes] = []
        self.received_at: list[float] = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(100)
        self.port = int(self.server.getsockname()[1])
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._stop.set()
        try:
            self.server.close()
        except OSError:
            pass
        for c in list(self._conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            f = conn.makefile("rb")
            conn.sendall(b"220 pysink ESMTP\r\n")
            while not self._stop.is_set():
                line = f.readline(100000)
                if not line:
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-pysink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go\r\n")
                    data = bytearray()
                    while True:
                        chunk = f.readline(1 << 20)
                        if not chunk:
                            return
                        if chunk == b".\r\n":
                            break
                        data += chunk
                    if self.stall:
                        self._stop.wait(self.stall)
                    with self.lock:
                        self.raw.append(bytes(data))
                        self.received_at.append(time.monotonic())
                    conn.sendall(self.reply + b"\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            return
        finally:
            conn.close()


# -- clients -------------------------------------------------------------------------------


def make_message(tag: str, recipient: str, extra_headers: str = "", body: str = "") -> bytes:
    """A small message whose Subject and body carry ``tag``."""
    return (f"From: app@app.hx.test\r\nTo: {recipient}\r\nSubject: hx {tag}\r\n"
            f"X-Hurricane-Message-Id: {tag}\r\n{extra_headers}\r\n"
            f"{body or 'body of ' + tag}\r\n").encode()


def smtp_send(port: int, sender: str, recipients: list[str], data: bytes,
              timeout: float = 10.0) -> tuple[int, str]:
    """One transaction; (code, text) of the reply to the final dot, or of the first refusal.

    Raises:
        OSError / smtplib.SMTPException: connection-level trouble (outcome unknown).
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.ehlo("client.hx.test")
        code, text = s.mail(sender)
        if code != 250:
            return code, text.decode(errors="replace")
        for r in recipients:
            code, text = s.rcpt(r)
            if code not in (250, 251):
                return code, text.decode(errors="replace")
        code, text = s.data(data)
        return code, text.decode(errors="replace")


class RawSMTP:
    """A raw socket SMTP client for attack tests: send exact bytes, read whole replies."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Write bytes as they are."""
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) reply; (0, []) when the server closed."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return (0, lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("ascii", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), lines

    def command(self, line: bytes) -> tuple[int, list[str]]:
        """Send one line (CRLF added) and read the reply."""
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout`` (data ignored)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
