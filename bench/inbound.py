#!/usr/bin/env python3
"""Inbound throughput: returned messages accepted, analyzed and recorded, versus Sisimai.

    python bench/inbound.py [--bounces N (3000)] [--rounds R (3)] [--connections K]
                            [--sender-processes P] [--profile FILE] [--no-sisimai]
                            [--no-stages] [--no-append]

1. A real ``twistd -n hurricane`` (SQLite, fresh directory) delivers N x R
   messages, each to its own recipient as in a real mailing (submitted
   over SMTP by the load generator below), to ``hurricane sink
   --dump-dir``, so every message has a genuine signed VERP return path
   and every return names its own delivery's recipient.
2. From the dumped messages the sink's own templates build N returns: 40 %
   RFC 3464 DSNs, 40 % free-text NDRs (Postfix, Exim, Sendmail, qmail,
   Exchange, Gmail styles), 10 % ARF complaints, 10 % auto-replies.
3. 512 more returns go first, untimed, and are waited for: they start the
   server's analysis worker, as in a server already running (Sisimai
   parses them first too, untimed).
4. K SMTP sessions (default 32: returns come from many remote MTAs), run
   by P asyncio load-generator processes (default 1) apart from this one,
   send them to the bounce listener (one message per transaction,
   connections reused, MAIL/RCPT/DATA pipelined). Reported: accepted/s
   (until the last 250, each 250 given after a durable write) and
   recorded/s (until every bounced and complained recipient shows its
   state, read every 10 ms from the SQLite file over a read-only
   connection, which WAL lets run beside the server's writer).
5. Sisimai (Debian libsisimai-perl) analyzes the same files, timed inside
   Perl (start-up and file reading excluded): messages/s on one core.
6. The stage ladder (skip with ``--no-stages``): the same returns, load
   generator and connections through each stage of the path alone
   (bench/_stages.py: stock Twisted ESMTP discarding; Hurricane's bounce
   listener over the memory store; the same over SQLite, 250 after the
   commit), and Hurricane's analyzer alone in this process: where the
   cost per return comes from, measured rather than sampled.
7. Steps 4 to 6 run R times (``--rounds``), each round on its own N
   returns, back to back in an order that flips every round: this
   machine's speed moves by tens of percent within minutes, so the ratio
   reported is the median of the rounds' own ratios.

Hurricane's figure includes SMTP, the durable store write, analysis (in
worker processes or threads, per ``[bounce] analysis_processes``) and
recording; Sisimai's is parsing only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import (  # noqa: E402
    Hurricane,
    Sink,
    append_results,
    cpu_between,
    cpu_seconds,
    free_port,
    machine,
    peak_rss_mib,
    stop_process,
    wait_for,
)
from _stages import STAGES  # noqa: E402

from hurricane.config import BounceConfig  # noqa: E402

PERL = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(clock);
my $warm = shift @ARGV;
my @data;
for my $f (@ARGV) {
    open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; push @data, scalar <$fh>; close $fh;
}
my $call = Sisimai->can('rise') ? 'rise' : 'make';
# Warm-up, not timed (as Hurricane's): Sisimai gets faster over its first
# few hundred messages, as modules load and patterns compile.
for my $d (splice(@data, 0, $warm)) { Sisimai->$call(\$d, 'input' => 'string', 'vacation' => 1); }
my $found = 0;
my $t0 = clock();
for my $d (@data) { my $v = Sisimai->$call(\$d, 'input' => 'string', 'vacation' => 1);
                    $found++ if $v && @$v; }
my $el = clock() - $t0;
printf "%d %.6f %d %s\n", scalar(@data), $el, $found, $Sisimai::VERSION;
"""

MIX = [("late", 40), ("ndr", 40), ("complain", 10), ("vacation", 10)]
#: Returns sent (and recorded) before the timed run, to start the server's
#: analysis worker and warm its caches; Sisimai parses the same ones first,
#: untimed: it too gets faster over its first few hundred messages (its
#: first 500 here: ~870/s, the next ones ~1,300/s), as modules load and
#: patterns compile.
WARM_UP = 512
STYLES = ("postfix", "exim", "sendmail", "qmail", "exchange", "gmail")


def build_returns(dump_dir: str, out_dir: str, n: int, seed: int = 1) -> dict[str, int]:
    """Write N returns built from the dumped messages; count them by kind."""
    from hurricane.sink.returns import Accepted, build_return
    from hurricane.sink.scenario import BUILTIN_BEHAVIOURS

    rng = random.Random(seed)
    kinds: dict[str, int] = {}
    files = sorted(os.listdir(dump_dir))[:n]
    for i, name in enumerate(files):
        with open(os.path.join(dump_dir, name), "rb") as fp:
            raw = fp.read()
        head, _, data = raw.partition(b"X-Sink-Behaviour: accept\r\n")
        mail_from = re.search(rb"X-Sink-Mail-From: <([^>]*)>", head).group(1).decode()
        rcpt = re.search(rb"X-Sink-Rcpt-To: <([^>]*)>", head).group(1).decode()
        pick = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        b = BUILTIN_BEHAVIOURS["ndr-" + STYLES[i % len(STYLES)]] if pick == "ndr" \
            else BUILTIN_BEHAVIOURS[pick]
        ret = build_return(Accepted(mail_from, rcpt, data, time.time(), f"B{i}"), b,
                           "mx.bench.test", time.time())
        assert ret is not None
        kinds[ret.kind] = kinds.get(ret.kind, 0) + 1
        with open(os.path.join(out_dir, f"{i:06d}.{ret.kind}.eml"), "wb") as fp:
            fp.write(ret.data)
        with open(os.path.join(out_dir, f"{i:06d}.env"), "w") as fp:
            fp.write(f"{ret.mail_from}\n{ret.rcpt}\n")
    return kinds


def count_kinds(files: list[str]) -> dict[str, int]:
    """Returns by kind, read from the file names build_returns gave them."""
    kinds: dict[str, int] = {}
    for path in files:
        kind = os.path.basename(path).split(".")[1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _dot_stuffed(data: bytes) -> bytes:
    """DATA payload: CRLF line endings, leading dots doubled, ended by CRLF.CRLF."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = [b"." + line if line.startswith(b".") else line for line in data.split(b"\n")]
    if lines and lines[-1] == b"":
        lines.pop()
    return b"\r\n".join(lines) + b"\r\n.\r\n"


def load_returns(files: list[str]) -> list[tuple[bytes, bytes, bytes]]:
    """(MAIL FROM command, RCPT TO command, dot-stuffed data) for every return file."""
    out = []
    for path in files:
        with open(path[:-len(path.split(".", 1)[1])] + "env") as fp:
            mail_from, rcpt = fp.read().splitlines()
        with open(path, "rb") as fp:
            data = fp.read()
        out.append((f"MAIL FROM:<{mail_from}>\r\n".encode(),
                    f"RCPT TO:<{rcpt}>\r\n".encode(), _dot_stuffed(data)))
    return out


async def _read_reply(reader: Any) -> int:
    """The code of one (possibly multi-line) SMTP reply."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _session(port: int, work: list[tuple[bytes, bytes, bytes]],
                   counts: dict[str, int]) -> None:
    """One SMTP session sending its share, pipelining MAIL/RCPT/DATA (RFC 2920)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if await _read_reply(reader) != 220:
            raise ConnectionError("no greeting")
        writer.write(b"EHLO mx.bench.test\r\n")
        if await _read_reply(reader) != 250:
            raise ConnectionError("EHLO refused")
        for mail, rcpt, data in work:
            writer.write(mail + rcpt + b"DATA\r\n")
            replies = [await _read_reply(reader) for _ in range(3)]
            if replies[2] != 354:
                counts["refused"] += 1
                if replies[0] == 250:
                    writer.write(b"RSET\r\n")
                    await _read_reply(reader)
                continue
            writer.write(data)
            if await _read_reply(reader) == 250:
                counts["accepted"] += 1
            else:
                counts["refused"] += 1
        writer.write(b"QUIT\r\n")
        await _read_reply(reader)
    finally:
        writer.close()


def _sender(port: int, work: list[tuple[bytes, bytes, bytes]], sessions: int,
            ready: Any, go: Any, result: Any) -> None:
    """One load-generator process: ``sessions`` asyncio SMTP sessions over ``work``."""
    counts = {"accepted": 0, "refused": 0, "cpu": 0.0}

    async def run() -> None:
        shares = [work[i::sessions] for i in range(sessions)]
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait, 60)
        cpu0 = time.process_time()  # the load's own CPU, without start-up
        outcomes = await asyncio.wait_for(asyncio.gather(
            *(_session(port, share, counts) for share in shares if share),
            return_exceptions=True), 600)
        counts["cpu"] = time.process_time() - cpu0
        for o in outcomes:
            if isinstance(o, BaseException):
                print(f"sender session failed: {o!r}", file=sys.stderr)

    asyncio.run(run())
    result.put(counts)


def mailing(total: int, size: int = 3000) -> list[tuple[bytes, bytes, bytes]]:
    """A mailing of ``total`` messages, each to its own recipient, ready to submit.

    Every delivery has its own address, as in a real mailing, so a return
    names the recipient of the delivery its VERP address points to.
    """
    out = []
    for i in range(total):
        rcpt = f"user{i}@dest.test"
        head = (f"From: <from@bench.test>\r\nTo: <{rcpt}>\r\n"
                f"Subject: bench {i}\r\nMessage-ID: <bench.{i}@bench.test>\r\n\r\n")
        body = (b"X" * 78 + b"\r\n") * max(1, (size - len(head)) // 80)
        out.append((b"MAIL FROM:<from@bench.test>\r\n", f"RCPT TO:<{rcpt}>\r\n".encode(),
                    _dot_stuffed(head.encode() + body)))
    return out


def send_all(port: int, files: list[str], connections: int,
             processes: int = 1) -> tuple[float, int, float]:
    """Send every return over ``connections`` sessions in ``processes`` processes.

    The load generator runs outside this process (which polls the database)
    and outside the server: asyncio sessions, connections reused, commands
    pipelined as Postfix does when the server offers PIPELINING. The clock
    starts once every sender process is ready (files read, messages
    encoded) and stops at the last reply.

    Returns:
        (seconds, messages not accepted with 250, CPU seconds the load
        generator's processes used while sending).
    """
    return send_work(port, load_returns(files), connections, processes)


def send_work(port: int, work: list[tuple[bytes, bytes, bytes]], connections: int,
              processes: int = 1) -> tuple[float, int, float]:
    """:func:`send_all` for messages already encoded (MAIL, RCPT, data)."""
    ctx = multiprocessing.get_context("spawn")
    processes = max(1, min(processes, connections))
    go = ctx.Event()
    result = ctx.Queue()
    procs = []
    readies = []
    for i in range(processes):
        ready = ctx.Event()
        sessions = connections // processes + (1 if i < connections % processes else 0)
        p = ctx.Process(target=_sender, args=(port, work[i::processes], sessions,
                                              ready, go, result), daemon=True)
        p.start()
        procs.append(p)
        readies.append(ready)
    try:
        for ready in readies:
            if not ready.wait(60):
                raise RuntimeError("a sender process did not start")
        t0 = time.monotonic()
        go.set()
        counts: list[dict[str, int]] = []
        deadline = t0 + 600
        while len(counts) < len(procs):
            try:
                counts.append(result.get(timeout=0.05))
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("the senders did not finish in 600 s") from None
                if all(not p.is_alive() for p in procs) and result.empty():
                    raise RuntimeError("a sender process died") from None
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    accepted = sum(c["accepted"] for c in counts)
    return elapsed, len(work) - accepted, sum(c["cpu"] for c in counts)


def reactor_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (the server's reactor), user + system.

    The rest of the server's CPU is its other threads': the SQLite pool
    thread, the analysis pool's feeder and result threads.
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/stat") as fp:
            fields = fp.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Recorded:
    """Counts recipients in state bounced or complained, reading SQLite directly.

    A read-only connection (WAL: it never blocks the server's writer) polled
    by the caller; costs well under a millisecond per poll, where starting
    ``hurricane outcomes`` cost a Python process on a 2-core machine.
    """

    def __init__(self, data_dir: str) -> None:
        path = os.path.join(data_dir, "hurricane.db")
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def __call__(self) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE state IN ('bounced', 'complained')"
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()


def sisimai(files: list[str], warm: Sequence[str] = ()) -> tuple[float, int, str] | None:
    """(messages/s, messages with a result, version), or None without Sisimai.

    ``warm`` are parsed first, untimed (Sisimai loads its modules on first use).
    """
    if subprocess.run(["perl", "-MSisimai", "-e1"], capture_output=True).returncode:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pl", delete=False) as fp:
        fp.write(PERL)
    try:
        out = subprocess.run(["perl", fp.name, str(len(warm)), *warm, *files],
                             capture_output=True, text=True,
                             timeout=900)
    finally:
        os.unlink(fp.name)
    try:
        n, el, found, version = out.stdout.split()
        return int(n) / float(el), int(found), version
    except ValueError:
        print(f"sisimai failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        return None


class Stage:
    """One rung of the stage ladder (bench/_stages.py) as a server process."""

    def __init__(self, stage: str, keys_file: str, domain: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"bench-stage-{stage}-")
        self.port = free_port()
        # Output to a file: a pipe nobody reads could fill and stall the server.
        out_path = os.path.join(self.dir, "stage.out")
        with open(out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "_stages.py"), stage, str(self.port),
                 keys_file, domain, self.dir], stdout=out, stderr=subprocess.STDOUT)

        def said() -> str:
            with open(out_path, errors="replace") as fp:
                return fp.read()

        if not wait_for(lambda: "listening" in said() or self.proc.poll() is not None,
                        60, 0.05) or "listening" not in said():
            text = said()
            self.stop()
            raise RuntimeError(f"stage {stage} did not start: {text[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc, 30)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_stage(stage: str, files: list[str], keys_file: str, domain: str,
              connections: int, processes: int) -> dict[str, float]:
    """Send ``files`` to one stage alone; its accepted/s and CPU per message."""
    s = Stage(stage, keys_file, domain)
    try:
        # warm: first connections, imports, the SQLite file's first pages
        send_all(s.port, files[:256], min(8, connections))
        cpu0 = cpu_seconds(s.proc.pid)
        seconds, refused, _ = send_all(s.port, files, connections, processes)
        cpu, _ = cpu_between(cpu0, cpu_seconds(s.proc.pid), s.proc.pid)
    finally:
        s.stop()
    if refused:
        raise RuntimeError(f"stage {stage} refused {refused} of {len(files)} returns")
    return {"accepted": len(files) / seconds, "cpu": cpu / len(files) * 1e6}


def analysis_alone(files: list[str]) -> float:
    """Hurricane's analyzer on these returns in this process: messages/s, one core."""
    from hurricane.bounce.analyze import analyze
    raws = []
    for path in files:
        with open(path, "rb") as fp:
            raws.append(fp.read())
    for raw in raws[:200]:
        analyze(raw)
    t0 = time.process_time()
    for raw in raws:
        analyze(raw)
    return len(raws) / (time.process_time() - t0)


def stage_ladder(rounds: list[dict[str, Any]], med: Any) -> list[list[str]]:
    """Rows (stage, returns/s, ratio to Sisimai, server CPU per return) of the ladder."""
    def vs(key: str) -> str:
        """Median of the rounds' own ratios to Sisimai, as for the whole server."""
        ratios = [r[key] / r["sisimai"] for r in rounds if key in r and "sisimai" in r]
        return f"{statistics.median(ratios):.2f}" if ratios else "n/a"

    rows = [[stage, f"{med('stage:' + stage):.0f}", vs("stage:" + stage),
             f"{med('stage-cpu:' + stage):.0f}"] for stage in STAGES]
    rows.append(["whole server (recorded)", f"{med('recorded'):.0f}", vs("recorded"),
                 f"{med('server'):.0f} (+ {med('worker'):.0f} in the worker)"])
    rows.append(["analysis alone, one core", f"{med('analysis'):.0f}", vs("analysis"), "-"])
    return rows


def budget_line(med: Any, ladder: bool, rounds: list[dict[str, Any]]) -> str | None:
    """What 2x Sisimai allows in CPU per return on this machine, against what is used.

    Twice Sisimai's rate on ``os.cpu_count()`` cores leaves at most
    cores / (2 x rate) of CPU per return for every process together, and
    only if every core is busy all the time. With the ladder, the floor is
    the sum of the parts measured alone: stock Twisted's ESMTP discarding,
    the SQLite write the listener adds, the analyzer alone and the load
    generator, with nothing between them (no hand-off, correlation or
    recording).
    """
    rate = med("sisimai")
    if not rate == rate:  # NaN: Sisimai not measured
        return None
    cores = len(os.sched_getaffinity(0)) or 1  # the cores this run may use
    budget = cores * 1e6 / (2 * rate)
    server, worker, load = med("server"), med("worker"), med("loadgen")
    line = (f"CPU budget for 2x Sisimai on {cores} cores: {budget:.0f} µs per return for all "
            f"processes together, every core busy; the whole run used "
            f"{server + worker + load:.0f} (server {server:.0f} + analysis workers "
            f"{worker:.0f} + load generator {load:.0f})")
    if ladder and "analysis" in rounds[0]:
        smtp = med("stage-cpu:twisted")
        write = med("stage-cpu:listener-sqlite") - med("stage-cpu:listener")
        analysis = 1e6 / med("analysis")
        line += (f"; the parts alone already take {smtp + write + analysis + load:.0f} "
                 f"(stock Twisted ESMTP {smtp:.0f} + SQLite write {write:.0f} + analyzer "
                 f"{analysis:.0f} + load generator {load:.0f})")
    return line + " (sums of the medians over the rounds)."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 3,000 by default: with 1,000 the run lasts under a second and the
    # worker's start (~0.3 s, on the first return) and the ramp-up weigh
    # on the figure; sustained throughput is what a bounce flood meets.
    ap.add_argument("--bounces", type=int, default=3000, help="returns per round")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of Hurricane and Sisimai back to back, each on its own "
                         "returns (the order flips every round)")
    ap.add_argument("--connections", type=int, default=32,
                    help="concurrent SMTP sessions (remote MTAs returning mail)")
    ap.add_argument("--sender-processes", type=int, default=1,
                    help="load-generator processes sharing the sessions")
    ap.add_argument("--analysis-processes", type=int, default=None,
                    help="[bounce] analysis_processes (default: the server's default)")
    ap.add_argument("--profile", metavar="FILE",
                    help="run the server under cProfile, stats saved to FILE")
    ap.add_argument("--no-sisimai", action="store_true")
    ap.add_argument("--no-stages", action="store_true",
                    help="skip the stage ladder (each stage of the path alone)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    print(f"machine: {machine()}")
    work = tempfile.mkdtemp(prefix="bench-inbound-")
    dump = os.path.join(work, "dump")
    returns_dir = os.path.join(work, "returns")
    os.makedirs(returns_dir)
    sink = Sink(extra=["--dump-dir", dump])
    h = None
    poll = None
    have_sisimai = not args.no_sisimai and subprocess.run(
        ["perl", "-MSisimai", "-e1"], capture_output=True).returncode == 0
    #: per round: (files, accepted/s, recorded/s, server CPU, worker CPU, sisimai/s, found)
    rounds: list[dict[str, Any]] = []
    version = ""
    try:
        bounce: dict[str, Any] = {"listen": ["tcp:0:interface=127.0.0.1"],
                                  "max_connections_per_ip": max(100, args.connections)}
        if args.analysis_processes is not None:
            bounce["analysis_processes"] = args.analysis_processes
        h = Hurricane({"submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
                       "bounce": bounce,
                       "web": {"listen": []},
                       "delivery": {"poll_interval": 0.1},
                       "routes": {"*": f"127.0.0.1:{sink.port}"}},
                      profile=args.profile)
        total = args.bounces * args.rounds + WARM_UP
        _, unsent, _ = send_work(h.ports["submission"], mailing(total), 10)
        if unsent:
            raise RuntimeError(f"{unsent} messages of the mailing were not accepted")
        if not wait_for(lambda: sink.accepted() >= total, 600, 0.2):
            raise RuntimeError("the deliveries did not all reach the sink")
        build_returns(dump, returns_dir, total)
        every = sorted(os.path.join(returns_dir, f) for f in os.listdir(returns_dir)
                       if f.endswith(".eml"))
        warm = every[:WARM_UP]
        poll = Recorded(os.path.join(h.dir, "data"))
        # Warm-up, not timed: a running server has its analysis worker up
        # already; starting it (~0.3 s of a spawned interpreter) is not
        # part of the throughput of a bounce flood.
        warm_kinds = count_kinds(warm)
        warm_expected = sum(warm_kinds.get(k, 0) for k in ("dsn", "ndr", "arf"))
        send_all(h.ports["bounce"], warm, min(8, args.connections))
        if not wait_for(lambda: poll() >= warm_expected, 120, 0.01):
            raise RuntimeError("the warm-up returns were not all recorded")
        for r in range(args.rounds):
            files = every[WARM_UP + r * args.bounces:WARM_UP + (r + 1) * args.bounces]
            kinds = count_kinds(files)
            expected = kinds.get("dsn", 0) + kinds.get("ndr", 0) + kinds.get("arf", 0)
            one: dict[str, Any] = {"files": len(files), "kinds": kinds}
            print(f"-- round {r + 1}/{args.rounds}", flush=True)
            steps = ["hurricane", "sisimai"] if r % 2 == 0 else ["sisimai", "hurricane"]
            for step in steps:
                if step == "sisimai":
                    s = sisimai(files, warm) if have_sisimai else None
                    if s:
                        one["sisimai"], one["found"], version = s
                        print(f"sisimai {version}: {s[0]:.0f} messages/s analyzed (parse only,"
                              f" one core), {s[1]}/{len(files)} with a result", flush=True)
                    continue
                base = poll()
                cpu0 = cpu_seconds(h.proc.pid)
                reactor0 = reactor_thread_cpu(h.proc.pid)
                accept_s, refused, load_cpu = send_all(h.ports["bounce"], files,
                                                       args.connections, args.sender_processes)
                # the sender's clock started after its processes were ready
                t0 = time.monotonic() - accept_s
                ok = wait_for(lambda b=base, e=expected: poll() - b >= e, 600, 0.01)
                total_s = time.monotonic() - t0
                server_cpu, worker_cpu = cpu_between(cpu0, cpu_seconds(h.proc.pid), h.proc.pid)
                reactor_cpu = reactor_thread_cpu(h.proc.pid) - reactor0
                got = poll() - base
                one.update(accepted=len(files) / accept_s, recorded=len(files) / total_s,
                           server=server_cpu / len(files) * 1e6,
                           worker=worker_cpu / len(files) * 1e6,
                           reactor=reactor_cpu / len(files) * 1e6,
                           loadgen=load_cpu / len(files) * 1e6, ok=ok, refused=refused)
                print(f"hurricane: {len(files)} returns ({kinds}), refused {refused}; accepted "
                      f"{one['accepted']:.0f}/s, accepted+analyzed+recorded "
                      f"{one['recorded']:.0f}/s ({got}/{expected} bounced+complained"
                      f"{'' if ok else ', INCOMPLETE'}); CPU per return: server "
                      f"{one['server']:.0f} µs, analysis workers {one['worker']:.0f} µs, "
                      f"load generator {one['loadgen']:.0f} µs (server's reactor thread "
                      f"{one['reactor']:.0f} µs, its other threads: SQLite, analysis pool "
                      f"{one['server'] - one['reactor']:.0f} µs)", flush=True)
            if "sisimai" in one:
                one["ratio"] = one["recorded"] / one["sisimai"]
                print(f"round ratio hurricane/sisimai {one['ratio']:.2f}", flush=True)
            if not args.no_stages:
                # The same returns through each stage of the path alone:
                # where the per-message cost comes from (see bench/_stages.py).
                keys_file = os.path.join(h.dir, "data", "verp-keys.json")
                for stage in STAGES:
                    got = run_stage(stage, files, keys_file, BounceConfig().domain,
                                    args.connections, args.sender_processes)
                    one[f"stage:{stage}"], one[f"stage-cpu:{stage}"] = got["accepted"], got["cpu"]
                    print(f"stage {stage}: accepted {got['accepted']:.0f}/s, server CPU "
                          f"{got['cpu']:.0f} µs per return", flush=True)
                one["analysis"] = analysis_alone(files)
                print(f"analysis alone (in process, one core): {one['analysis']:.0f}/s",
                      flush=True)
            rounds.append(one)
        rss = peak_rss_mib(h.proc.pid)
    finally:
        if poll is not None:
            poll.close()
        if h is not None:
            h.stop(keep=bool(args.profile))
            if args.profile:
                print(f"profile: {args.profile} (server directory {h.dir})")
        sink.stop()

    def med(key: str) -> float:
        values = [r[key] for r in rounds if key in r]
        return statistics.median(values) if values else float("nan")

    ratios = [r["ratio"] for r in rounds if "ratio" in r]
    ratio = (f"{statistics.median(ratios):.2f}" + (f" ({min(ratios):.2f}-{max(ratios):.2f})"
                                                    if len(ratios) > 1 else "")
             if ratios else "n/a")
    complete = all(r["ok"] for r in rounds)
    print(f"-- medians over {len(rounds)} round(s): hurricane accepted {med('accepted'):.0f}/s, "
          f"accepted+analyzed+recorded {med('recorded'):.0f}/s"
          f"{'' if complete else ' (INCOMPLETE)'}, peak RSS {rss:.0f} MiB, CPU per return: "
          f"server {med('server'):.0f} µs, analysis workers {med('worker'):.0f} µs, "
          f"load generator {med('loadgen'):.0f} µs; "
          f"server's reactor thread {med('reactor'):.0f} µs; "
          f"sisimai {med('sisimai'):.0f}/s; ratio hurricane/sisimai {ratio}")
    shutil.rmtree(work, ignore_errors=True)
    ladder = stage_ladder(rounds, med) if not args.no_stages else []
    if ladder:
        print("-- stage ladder (medians; the same returns through each stage alone)")
        for row in ladder:
            print("   " + " | ".join(str(c) for c in row))
    budget = budget_line(med, bool(ladder), rounds)
    if budget:
        print("-- " + budget)
    if not args.no_append:
        kinds_all: dict[str, int] = {}
        for r in rounds:
            for k, v in r["kinds"].items():
                kinds_all[k] = kinds_all.get(k, 0) + v
        found = sum(r.get("found", 0) for r in rounds)
        text = append_results(
            "Inbound: returned messages accepted, analyzed, recorded", [
                "returns", "conc.", "H accepted/s", "H recorded/s", "H peak RSS MiB",
                "H CPU µs/return (server + workers)",
                "Sisimai analyzed/s", "ratio H recorded / Sisimai"],
            [[f"{len(rounds)} x {args.bounces}", args.connections, f"{med('accepted'):.0f}",
              f"{med('recorded'):.0f}" + ("" if complete else " (incomplete)"), f"{rss:.0f}",
              f"{med('server'):.0f} + {med('worker'):.0f}",
              f"{med('sisimai'):.0f}" if ratios else "n/a", ratio]],
            [f"Mix: {kinds_all} (built by hurricane.sink.returns from real deliveries).",
             f"{len(rounds)} round(s), each on its own {args.bounces} returns: Hurricane (one "
             "server, kept up) and Sisimai back to back, the order flipped every round; "
             "rates and CPU are medians, the ratio is the median of the rounds' own ratios "
             "(range in brackets).",
             "Hurricane: SMTP + durable write before 250 + analysis + recording "
             "(SQLite FULL); recorded/s: until every bounced and complained recipient "
             "shows its state, polled every 10 ms in the SQLite file (read-only, WAL) "
             "(auto-replies do not change a state and are not polled).",
             f"Load: {args.connections} concurrent SMTP sessions (conc.) from "
             f"{args.sender_processes} asyncio process(es), connections reused, "
             "MAIL/RCPT/DATA pipelined (the server offers PIPELINING).",
             (f"Sisimai {version}: parse only, timed inside Perl, after the same "
              f"{WARM_UP} warm-up returns untimed; "
              f"{found}/{sum(r['files'] for r in rounds if 'sisimai' in r)} messages "
              "gave a result." if ratios else "Sisimai: not measured.")])
        print(text)
        if ladder:
            print(append_results(
                "Inbound: where the cost per return comes from (stage ladder)",
                ["stage (each one the previous plus ...)", "returns/s", "vs Sisimai",
                 "server CPU µs/return"], ladder,
                ["The same returns, load generator and connections as the table above, in "
                 "the same run; each stage is a server of its own (bench/_stages.py). "
                 "Rates and CPU are medians over the rounds; a ratio is the median of the "
                 "rounds' own ratios to Sisimai.",
                 "twisted: stock twisted.mail ESMTP throwing every message away. "
                 "listener: Hurricane's bounce listener (framing, policy, VERP check, "
                 "Received line, \"stored\" log lines) over the memory store. "
                 "listener-sqlite: the same, 250 after the SQLite commit. whole server: "
                 "plus analysis (worker process), correlation and recording, until "
                 "recorded.",
                 "analysis alone: Hurricane's analyzer on the same returns in one process "
                 "(no SMTP, no store); the whole server runs it in a worker process, on "
                 "the other core."] + ([budget] if budget else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
