"""Shared helpers of the benchmarks: the machine, processes, the sink, RESULTS.md.

Everything binds to 127.0.0.1; every wait is bounded in time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
HURRICANE = os.path.join(BIN, "hurricane")
#: BENCH_TWISTD runs another twistd-compatible script instead (a profiler wrapper, say).
TWISTD = os.environ.get("BENCH_TWISTD") or os.path.join(BIN, "twistd")
RESULTS = os.path.join(HERE, "RESULTS.md")
LISTENING = re.compile(r"(submission|bounce|web) listening on 127\.0\.0\.1:(\d+)")


def machine() -> str:
    """CPU model, cores, OS and Python, on one line."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fp:
            for line in fp:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def peak_rss_mib(pid: int) -> float:
    """Peak resident set (VmHWM) of a live process, MiB."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mib(pid: int) -> float:
    """Current resident set (VmRSS) of a live process, MiB."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            for line in fp:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (s) of a live process and each live descendant, by pid.

    Each figure is user + system time, plus that of the process's children
    it has reaped (Postfix's master reaps each smtpd after ``max_use``
    connections). Sample before and after a phase and subtract per pid
    (:func:`cpu_between`). A descendant still running at the second sample
    is counted from the first (or from its start); one that exits and is
    reaped in between is counted by its parent, whole.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fp:
                fields = fp.read().rsplit(")", 1)[1].split()
            out[p] = sum(int(f) for f in fields[11:15]) / tick
            with open(f"/proc/{p}/task/{p}/children") as fp:
                todo.extend(int(c) for c in fp.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return out


def cpu_between(before: dict[int, float], after: dict[int, float], root: int
                ) -> tuple[float, float]:
    """(CPU s of ``root`` itself, CPU s of its descendants) spent between two samples.

    A descendant seen at the first sample and gone at the second was reaped
    in between: its whole time went into its parent's, so what it had spent
    before the first sample is taken off again.
    """
    own = after.get(root, 0.0) - before.get(root, 0.0)
    rest = sum(t - before.get(p, 0.0) for p, t in after.items() if p != root)
    rest -= sum(t for p, t in before.items() if p != root and p not in after)
    return own, rest


class Sink:
    """``hurricane sink`` in a subprocess, counting into a stats file."""

    def __init__(self, bounce_to: str = "127.0.0.1:9", returns: bool = False,
                 extra: Sequence[str] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-sink-")
        self.stats_file = os.path.join(self.dir, "stats.json")
        args = [HURRICANE, "sink", "--listen", "tcp:0:interface=127.0.0.1:backlog=1024",
                "--stats-file", self.stats_file, "--stats-interval", "0.1",
                "--bounce-to", bounce_to, *extra]
        if not returns:
            args.append("--no-returns")
        self.out = open(os.path.join(self.dir, "out"), "w+")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.DEVNULL)
        self.port = 0

        def ready() -> bool:
            self.out.seek(0)
            m = re.search(r"sink listening on 127\.0\.0\.1:(\d+)", self.out.read())
            if m:
                self.port = int(m.group(1))
            return bool(m) or self.proc.poll() is not None

        wait_for(ready, 20)
        if not self.port:
            raise RuntimeError("the sink did not start")

    def stats(self) -> dict[str, Any]:
        """The last counters the sink wrote."""
        try:
            with open(self.stats_file) as fp:
                data: dict[str, Any] = json.load(fp)
                return data
        except (OSError, ValueError):
            return {}

    def accepted(self) -> int:
        """Recipients accepted so far."""
        return sum(self.stats().get("accepted", {}).values())

    def stop(self) -> None:
        """Stop the sink (by its pid) and remove its directory."""
        stop_process(self.proc)
        self.out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def toml_config(data: dict[str, Any], path: str) -> str:
    """Write a configuration dict as TOML (see hurricane.demo.write_toml)."""
    sys.path.insert(0, ROOT)
    from hurricane.demo import write_toml

    write_toml(data, path)
    return path


class Hurricane:
    """``twistd -n hurricane --config FILE`` in a subprocess."""

    def __init__(self, config: dict[str, Any], *, profile: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-hurricane-")
        config.setdefault("server", {}).setdefault("data_dir", os.path.join(self.dir, "data"))
        self.config_file = toml_config(config, os.path.join(self.dir, "hurricane.toml"))
        self.log_path = os.path.join(self.dir, "twistd.log")
        self.log = open(self.log_path, "wb")
        args = [TWISTD, "-n", "--pidfile=", "--logfile", self.log_path]
        if profile:
            args += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
        args += ["hurricane", "--config", self.config_file]
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.ports: dict[str, int] = {}

        def ready() -> bool:
            with open(self.log_path, errors="replace") as fp:
                self.ports = {k: int(v) for k, v in LISTENING.findall(fp.read())}
            return ("submission" in self.ports and "bounce" in self.ports) or \
                self.proc.poll() is not None

        wait_for(ready, 60, 0.1)
        if "submission" not in self.ports:
            with open(self.log_path, errors="replace") as fp:
                raise RuntimeError("hurricane did not start:\n" + fp.read()[-3000:])

    def stop(self, keep: bool = False) -> int | None:
        """SIGTERM and wait; remove the directory unless ``keep``."""
        rc = stop_process(self.proc, 60)
        self.log.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


def smtp_source(port: int, sessions: int, messages: int, size: int = 5000,
                recipient: str = "to@dest.test", timeout: float = 600) -> float:
    """Run Postfix's smtp-source; return the elapsed seconds.

    Raises:
        RuntimeError: when it fails.
    """
    exe = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    args = [exe, "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "from@bench.test", "-t", recipient, f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - t0
    if proc.returncode:
        raise RuntimeError(f"smtp-source failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed


def postgres_dsn() -> str:
    """``HURRICANE_TEST_POSTGRES`` (or "" when unset)."""
    return os.environ.get("HURRICANE_TEST_POSTGRES", "")


def fresh_postgres_db(dsn: str, prefix: str = "hurricane_bench_") -> tuple[str, Any]:
    """Create an empty database on the DSN's server; return its URL and a dropper."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = prefix + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()

    p = urlsplit(dsn)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment)), drop


def append_results(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
                   notes: Sequence[str] = ()) -> str:
    """Append one Markdown table, with the date, command and machine, to RESULTS.md."""
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {title} ({now})", "", f"Command: `{command}`  ", f"Machine: {machine()}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    text = "\n".join(lines) + "\n\n"
    if not os.path.exists(RESULTS):
        with open(RESULTS, "w") as fp:
            fp.write("# Benchmark results\n\nAppended by the scripts in bench/. The machine "
                     "is shared and noisy: treat single runs as indications, compare "
                     "ratios measured in the same run.\n\n")
    with open(RESULTS, "a") as fp:
        fp.write(text)
    return text
