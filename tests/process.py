"""The one process harness of the process-level suites (tests/e2e, tests/integration,
tests/hardening, and the few unit tests that talk to a real peer).

This virtualenv's ``twistd`` and ``hurricane`` executables; ``twistd -n hurricane``
started with its output in a log file, in an environment without
``HURRICANE_CONFIG``; the listener lines it logs; waits that poll with a deadline
(blocking, or on the trial reactor for tests that also serve in-process); SIGTERM
then SIGKILL; free loopback ports; temporary directories and PostgreSQL databases
removed in the test's cleanups; Postfix's smtp-sink command line.

Every wait here is bounded by its ``timeout``; every process a helper starts for a
test is killed in a cleanup the helper registers (or by the caller, when no test
is given).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from twisted.trial.unittest import SkipTest

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")  # this venv's twistd
HURRICANE = os.path.join(os.path.dirname(sys.executable), "hurricane")

#: ``<kind> listening on <host>:<port>``, as the service logs each listener (any kind:
#: submission, bounce, web, admin... so a test of "nothing else listens" sees them all).
LISTENING = re.compile(r"\b([a-z]\w*) listening on ([0-9a-fA-F.:]+):(\d+)")

T = TypeVar("T")


class Cleanups(Protocol):
    """What the helpers need of a test: somewhere to register cleanups."""

    def addCleanup(self, f: Callable[..., object], *args: object,  # noqa: N802
                   **kwargs: object) -> None: ...


# -- twistd -n hurricane ---------------------------------------------------------------


def twistd_argv(args: Sequence[str]) -> list[str]:
    """``twistd -n --pidfile= hurricane ARGS`` with this virtualenv's twistd."""
    return [TWISTD, "-n", "--pidfile=", "hurricane", *args]


def start_twistd(args: Sequence[str], cwd: str, log_path: str,
                 test: Cleanups | None = None) -> subprocess.Popen[bytes]:
    """Start ``twistd -n hurricane ARGS`` in ``cwd``, stdout and stderr to ``log_path``.

    The process gets a session of its own (a signal to the test runner's group
    does not reach it) and the environment without ``HURRICANE_CONFIG``, so the
    developer's configuration never leaks in. With ``test``, the process is
    killed in its cleanups if it still runs.
    """
    env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(twistd_argv(args), stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, start_new_session=True)
    if test is not None:
        test.addCleanup(kill_process, proc)
    return proc


def read_log(path: str) -> str:
    """The text of a log file so far ("" before it exists)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fp:
            return fp.read()
    except FileNotFoundError:
        return ""


def listeners(text: str) -> list[tuple[str, str, int]]:
    """(kind, host, port) of every listener line of a log, in order."""
    return [(kind, host, int(port)) for kind, host, port in LISTENING.findall(text)]


def exited(proc: subprocess.Popen[bytes], log_path: str, what: str = "hurricane") -> None:
    """Fail with the log's tail if ``proc`` has exited (a start that can no longer succeed)."""
    if proc.poll() is not None:
        raise AssertionError(f"{what} exited with {proc.returncode}:\n"
                             + read_log(log_path)[-3000:])


def wait_started(proc: subprocess.Popen[bytes], log_path: str,
                 timeout: float = 60.0) -> str:
    """Block until the log says ``hurricane started``; the log's text. Fails on exit."""
    def started() -> str:
        exited(proc, log_path)
        text = read_log(log_path)
        return text if "hurricane started" in text else ""

    text: str = wait_until(started, timeout, "hurricane started")
    return text


async def wait_started_async(proc: subprocess.Popen[bytes], log_path: str,
                             timeout: float = 60.0) -> str:
    """:func:`wait_started` on the trial reactor (for tests that also serve in-process)."""
    def started() -> str:
        exited(proc, log_path)
        text = read_log(log_path)
        return text if "hurricane started" in text else ""

    text: str = await wait_until_async(started, timeout, "hurricane started")
    return text


# -- waiting and stopping --------------------------------------------------------------


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def sleep(seconds: float) -> None:
    """Wait ``seconds`` of real time on the trial reactor."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def wait_until_async(predicate: Callable[[], T], timeout: float, what: str,
                           interval: float = 0.1) -> T:
    """:func:`wait_until`, sleeping on the trial reactor between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str],
                 timeout: float = 20.0) -> int:
    """SIGTERM and wait; SIGKILL after ``timeout`` seconds. The exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def stop_process_async(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM and wait on the trial reactor (at most ``timeout`` s): the status, or None."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await sleep(0.1)
    return proc.poll()


def kill_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Cleanup: SIGKILL ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# -- ports -----------------------------------------------------------------------------


def free_port() -> int:
    """A port of 127.0.0.1 that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on host:port now."""
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float, what: str = "",
              alive: Callable[[], object] | None = None) -> None:
    """Block until 127.0.0.1:port accepts; ``alive`` (if given) is called on each
    poll and fails the wait by raising (a process that exited)."""
    def up() -> bool:
        if alive is not None:
            alive()
        return port_open(port)

    wait_until(up, timeout, what or f"a listener on port {port}")


# -- directories and databases ---------------------------------------------------------


def temp_dir(test: Cleanups, prefix: str = "hurricane-test-") -> str:
    """A fresh directory removed in the test's cleanups (not mktemp: that writes in the tree)."""
    path = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(remove_tree, path)
    return path


def remove_tree(path: str) -> None:
    """Remove ``path``, clearing immutable flags (``chattr +i``) if anything is left."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        subprocess.run(["chattr", "-R", "-i", path], capture_output=True, check=False)
        shutil.rmtree(path, ignore_errors=True)


def postgres_dsn_or_skip() -> str:
    """``HURRICANE_TEST_POSTGRES``; skip without it (fail if HURRICANE_REQUIRE_POSTGRES=1)."""
    dsn = os.environ.get("HURRICANE_TEST_POSTGRES", "")
    if dsn:
        return dsn
    if os.environ.get("HURRICANE_REQUIRE_POSTGRES") == "1":
        raise AssertionError("HURRICANE_TEST_POSTGRES is unset and HURRICANE_REQUIRE_POSTGRES=1")
    raise SkipTest("HURRICANE_TEST_POSTGRES is unset (a PostgreSQL DSN, "
                   "postgresql://user@host:port/db); the PostgreSQL variant of this test needs one")


def fresh_postgres_database(test: Cleanups, prefix: str = "hx_") -> str:
    """Create ``<prefix><random>`` on the server of the test DSN, drop it in the test's
    cleanups (after ending its other connections); its URL."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    base = postgres_dsn_or_skip()
    name = prefix + uuid.uuid4().hex[:12]
    params = parse_dsn(base)
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop() -> None:
        conn = psycopg2.connect(base)
        conn.autocommit = True
        with conn.cursor() as cur:
            # Only the backends of our own database.
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()

    test.addCleanup(drop)
    # parse_dsn reads URL and key=value forms alike; Hurricane wants a URL.
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    password = params.get("password")
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@{host}:{port}/{name}"


# -- Postfix's smtp-sink ---------------------------------------------------------------


def smtp_sink_argv(path: str, port: int, backlog: int = 1000, dump_dir: str | None = None,
                   extra: Sequence[str] = ()) -> list[str]:
    """smtp-sink on 127.0.0.1:port (as nobody when run as root), dumping each
    transaction into ``dump_dir`` if given."""
    args = [path]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    args += list(extra)
    if dump_dir is not None:
        args += ["-d", os.path.join(dump_dir, "%M.")]
    return [*args, f"127.0.0.1:{port}", str(backlog)]


def start_smtp_sink(path: str, port: int, test: Cleanups, backlog: int = 1000,
                    dump_dir: str | None = None, extra: Sequence[str] = (),
                    timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start smtp-sink (:func:`smtp_sink_argv`), wait until it listens; stopped in cleanup."""
    proc = subprocess.Popen(smtp_sink_argv(path, port, backlog, dump_dir, extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    test.addCleanup(stop_process, proc, 5.0)

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"smtp-sink exited with {proc.returncode}")

    wait_port(port, timeout, "smtp-sink to listen", alive)
    return proc
