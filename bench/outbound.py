#!/usr/bin/env python3
"""Outbound throughput: submission -> relay -> sink, Hurricane versus Postfix.

    python bench/outbound.py [--messages N] [--concurrency 1,10,50] [--stores sqlite,postgres]
                             [--rounds 3] [--no-postfix] [--profile] [--no-append]

Load generator for both: Postfix's ``smtp-source -s K -m N -l 5000`` (one
recipient per message). Relays:

- Hurricane: a real ``twistd -n hurricane`` on a fresh data directory (SQLite,
  ``synchronous = FULL``, or a fresh PostgreSQL database from
  ``HURRICANE_TEST_POSTGRES``), ``[routes] "*"`` pointing at the sink;
- Postfix: a throwaway instance (its own config, queue and data directories
  under /tmp, no chroot, inet_interfaces 127.0.0.1, a high smtpd port,
  relayhost the sink), started and stopped with ``postfix -c DIR``.

The sink is ``hurricane sink`` (a separate process, returns off) for both, so
the far end costs the same. Reported: acceptance rate (messages / time for
smtp-source to finish), end-to-end delivered rate (messages / time until the
sink counted them all), Hurricane's peak RSS, and the ratio to Postfix.
This machine's speed moves by tens of percent within minutes, so each
configuration runs ``--rounds`` times with Postfix and Hurricane back to back
at the same concurrency, in alternating order; the ratio reported is the
median of the pairs' own ratios.
``--profile`` runs Hurricane under cProfile for the first configuration and
prints the top functions. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    Hurricane,
    Sink,
    append_results,
    cpu_between,
    cpu_seconds,
    free_port,
    fresh_postgres_db,
    machine,
    peak_rss_mib,
    postgres_dsn,
    smtp_source,
    wait_for,
)


class PostfixRelay:
    """A throwaway Postfix relaying everything from 127.0.0.1 to the sink."""

    def __init__(self, sink_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-postfix-")
        os.chmod(self.dir, 0o755)  # the postfix user must reach data/ and queue/
        self.etc = os.path.join(self.dir, "etc")
        os.makedirs(self.etc)
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        self.port = free_port()
        shutil.copy("/etc/postfix/master.cf", os.path.join(self.etc, "master.cf"))
        with open(os.path.join(self.etc, "main.cf"), "w") as fp:
            fp.write("compatibility_level = 3.6\n")
        settings = {
            "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "postfix.bench.test",
            "mydestination": "",
            "local_recipient_maps": "",
            "relayhost": f"[127.0.0.1]:{sink_port}",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "maillog_file_prefixes": self.dir,
            "maillog_file": os.path.join(self.dir, "maillog"),
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "default_process_limit": "100",
            "smtp_destination_concurrency_limit": "20",
            "alias_maps": "", "alias_database": "",
            "message_size_limit": "52428800",
        }
        self.postconf(["-e", *(f"{k}={v}" for k, v in settings.items())])
        # the smtpd on a high port; no chroot anywhere; log to a file (postlogd)
        self.postconf(["-M#", "smtp/inet"])
        self.postconf(["-M", f"127.0.0.1:{self.port}/inet=127.0.0.1:{self.port} inet n - n - - "
                       "smtpd"])
        self.postconf(["-F", "*/*/chroot = n"])
        out = subprocess.run(["postfix", "-c", self.etc, "start"], capture_output=True,
                             text=True, timeout=60)
        if out.returncode:
            log = ""
            try:
                with open(os.path.join(self.dir, "maillog")) as fp:
                    log = fp.read()[-1000:]
            except OSError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"postfix start failed: {out.stdout}{out.stderr}{log}")
        if not wait_for(self._listening, 20, 0.1):
            raise RuntimeError(f"postfix did not listen on 127.0.0.1:{self.port}")

    def master_pid(self) -> int:
        """The pid of this instance's master (its processes descend from it)."""
        with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as fp:
            return int(fp.read().split()[0])

    def postconf(self, args: list[str]) -> None:
        subprocess.run(["postconf", "-c", self.etc, *args], check=True, capture_output=True,
                       timeout=30)

    def _listening(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5):
                return True
        except OSError:
            return False

    def flush(self) -> None:
        """Drop whatever is still queued, so that it cannot reach the sink in a later run."""
        subprocess.run(["postsuper", "-c", self.etc, "-d", "ALL"], capture_output=True,
                       timeout=60)

    def stop(self) -> None:
        """postfix stop, then remove the directory."""
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True, timeout=60)
        time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(port: int, sink: Sink, sessions: int, messages: int,
            timeout: float) -> tuple[float, float, bool]:
    """(accept rate, delivered rate, complete) for one smtp-source run against ``port``."""
    base = sink.accepted()
    t0 = time.monotonic()
    accept_s = smtp_source(port, sessions, messages, timeout=timeout)
    done = wait_for(lambda: sink.accepted() - base >= messages,
                    max(1.0, timeout - accept_s), 0.05)
    total = time.monotonic() - t0
    got = sink.accepted() - base
    return messages / accept_s, got / total, done


def hurricane_config(sink_port: int, store_url: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"hostname": "hurricane.bench.test", "node_id": "bench"},
        "submission": {"listen": ["tcp:0:interface=127.0.0.1:backlog=1024"],
                       "max_connections_per_ip": 200, "max_connections": 400},
        "bounce": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "web": {"listen": []},
        "delivery": {"poll_interval": 0.1, "max_connections_per_destination": 20,
                     "first_retry": 5.0},
        "routes": {"*": f"127.0.0.1:{sink_port}"},
    }
    if store_url:
        cfg["store"] = {"url": store_url}
    return cfg


def print_profile(path: str, limit: int = 15) -> list[str]:
    """The top functions by own time in a cProfile dump, as lines."""
    import io

    buf = io.StringIO()
    st = pstats.Stats(path, stream=buf)
    st.sort_stats("tottime").print_stats(limit)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls"))
    return lines[start:start + limit + 1]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Runs:
    """Every run of one relay at one concurrency: (accept, delivered, CPU µs/msg, RSS)."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float, float, float]] = []
        self.complete = True

    def add(self, acc: float, dlv: float, cpu: float, rss: float, ok: bool) -> None:
        self.runs.append((acc, dlv, cpu, rss))
        self.complete = self.complete and ok

    def median(self, i: int) -> float:
        return _median([r[i] for r in self.runs])


def paired_ratios(h: Runs, p: Runs, i: int) -> list[float]:
    """Hurricane over Postfix, run by run: each pair ran back to back in one round."""
    return [a[i] / b[i] for a, b in zip(h.runs, p.runs, strict=False) if b[i]]


def ratio_text(ratios: list[float]) -> str:
    """The median ratio, with the range when there are several rounds."""
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{_median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,10,50")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of every configuration, Postfix and Hurricane interleaved")
    ap.add_argument("--no-postfix", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile Hurricane in one more run (SQLite, concurrency 10 at most)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    ap.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    levels = [int(x) for x in args.concurrency.split(",")]
    stores = [s for s in args.stores.split(",") if s]
    if "postgres" in stores and not postgres_dsn():
        print("postgres: skipped (set HURRICANE_TEST_POSTGRES)")
        stores.remove("postgres")
    print(f"machine: {machine()}")
    sink = Sink()
    rows: list[list[Any]] = []
    profile_lines: list[str] = []
    notes = [f"{args.messages} messages of 5000 octets, one recipient each, per run; "
             "smtp-source is the load generator; the sink is `hurricane sink` "
             "(returns off) for both relays.",
             f"{args.rounds} round(s): in each, every concurrency level runs Postfix, "
             "then Hurricane on each store (the order reversed every other round), so a "
             "pair meets nearly the same machine; rates and CPU are medians over the "
             "rounds, a ratio is the median of the rounds' own ratios (range in "
             "brackets).",
             "CPU µs/msg: user + system time during the run over the messages: Hurricane's "
             "twistd process (every thread); Postfix's master and every process under it "
             "(smtpd, cleanup, qmgr, smtp...), the reaped ones included."]
    postfix: dict[int, Runs] = {k: Runs() for k in levels}
    hurricane: dict[tuple[str, int], Runs] = {(st, k): Runs() for st in stores for k in levels}
    pf: PostfixRelay | None = None
    try:
        if not args.no_postfix:
            try:
                pf = PostfixRelay(sink.port)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"postfix: could not start a throwaway instance: {e}")
                notes.append(f"Postfix relay could not be started: {e}")

        def run_postfix(k: int) -> None:
            assert pf is not None
            master = pf.master_pid()
            cpu0 = cpu_seconds(master)
            acc, dlv, ok = measure(pf.port, sink, k, args.messages, args.timeout)
            own, rest = cpu_between(cpu0, cpu_seconds(master), master)
            pcpu = (own + rest) / args.messages * 1e6
            postfix[k].add(acc, dlv, pcpu, float("nan"), ok)
            if not ok:
                # Postfix stays up between runs: mail it still holds would
                # reach the shared sink during the next (Hurricane) run.
                pf.flush()
            print(f"postfix   c={k:<3} accept {acc:8.0f} msg/s  delivered "
                  f"{dlv:8.0f} msg/s  CPU {pcpu:.0f} µs/msg (all its processes)"
                  f"{'' if ok else '  (INCOMPLETE)'}", flush=True)

        def run_hurricane(store: str, k: int, prof: str | None = None) -> tuple[Any, ...]:
            drop = None
            url = ""
            if store == "postgres":
                url, drop = fresh_postgres_db(postgres_dsn())
            h = Hurricane(hurricane_config(sink.port, url), profile=prof)
            try:
                cpu0 = cpu_seconds(h.proc.pid)
                acc, dlv, ok = measure(h.ports["submission"], sink, k, args.messages,
                                       args.timeout)
                cpu, _ = cpu_between(cpu0, cpu_seconds(h.proc.pid), h.proc.pid)
                rss = peak_rss_mib(h.proc.pid)
            finally:
                h.stop()
                if drop:
                    drop()
            per = cpu / args.messages * 1e6
            print(f"hurricane {store:<8} c={k:<3} accept {acc:8.0f} msg/s  delivered "
                  f"{dlv:8.0f} msg/s  peak RSS {rss:.0f} MiB  CPU {per:.0f} µs/msg"
                  f"{'' if ok else '  (INCOMPLETE)'}{'  (cProfile)' if prof else ''}",
                  flush=True)
            return acc, dlv, per, rss, ok

        for r in range(args.rounds):
            print(f"-- round {r + 1}/{args.rounds}", flush=True)
            for k in levels:
                relays: list[tuple[str, str]] = [("postfix", "")] if pf else []
                relays += [("hurricane", st) for st in stores]
                if r % 2:
                    relays.reverse()
                for kind, store in relays:
                    if kind == "postfix":
                        run_postfix(k)
                    else:
                        hurricane[(store, k)].add(*run_hurricane(store, k))
        if args.profile:
            k = min(max(levels), 10)
            prof = os.path.join(tempfile.gettempdir(), f"hurricane-outbound-{os.getpid()}.prof")
            acc, dlv, per, rss, ok = run_hurricane("sqlite", k, prof)
            if os.path.exists(prof):
                profile_lines = print_profile(prof)
                print("\n".join(profile_lines))
                os.unlink(prof)
            rows.append(["sqlite (cProfile)", k, f"{acc:.0f}", f"{dlv:.0f}", f"{rss:.0f}",
                         f"{per:.0f}", "", "", "", "", ""])
    finally:
        if pf is not None:
            pf.stop()
        sink.stop()
    print("-- medians")
    summary: list[list[Any]] = []
    for store in stores:
        for k in levels:
            h, p = hurricane[(store, k)], postfix[k]
            acc_r, dlv_r = paired_ratios(h, p, 0), paired_ratios(h, p, 1)
            row = [store, k, f"{h.median(0):.0f}", f"{h.median(1):.0f}",
                   f"{max(r[3] for r in h.runs):.0f}" if h.runs else "n/a",
                   f"{h.median(2):.0f}",
                   f"{p.median(0):.0f}", f"{p.median(1):.0f}", f"{p.median(2):.0f}",
                   ratio_text(acc_r),
                   ratio_text(dlv_r) + ("" if h.complete and p.complete else " (incomplete)")]
            summary.append(row)
            print(f"hurricane {store:<8} c={k:<3} delivered {h.median(1):6.0f} msg/s, CPU "
                  f"{h.median(2):5.0f} µs/msg | postfix delivered {p.median(1):6.0f} msg/s, "
                  f"CPU {p.median(2):5.0f} µs/msg | ratio accept {ratio_text(acc_r)}, "
                  f"delivered {ratio_text(dlv_r)}")
    rows = summary + rows
    if not args.no_append and rows:
        header = ["store", "conc.", "H accept msg/s", "H delivered msg/s", "H peak RSS MiB",
                  "H CPU µs/msg", "Postfix accept msg/s", "Postfix delivered msg/s",
                  "Postfix CPU µs/msg", "accept ratio H/P",
                  "delivered ratio H/P"]
        if profile_lines:
            notes.append("The cProfile row ran under the profiler (slower, not comparable); "
                         "where the time goes is in the profile section below.")
        text = append_results("Outbound: submission -> relay -> sink", header, rows, notes)
        if profile_lines:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"),
                      "a") as fp:
                fp.write("### Where the time goes (cProfile of Hurricane, the cProfile row above, "
                         "top 15 by own time)\n\n```\n" + "\n".join(profile_lines) +
                         "\n```\n\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
