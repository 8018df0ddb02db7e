#!/usr/bin/env python3
"""Inbound throughput: returned messages accepted, analyzed and recorded, versus Sisimai.

    python bench/inbound.py [--bounces N] [--connections K] [--no-sisimai] [--no-append]

1. A real ``twistd -n hurricane`` (SQLite, fresh directory) delivers N
   messages (``smtp-source``) to ``hurricane sink --dump-dir``, so every
   message has a genuine signed VERP return path.
2. From the dumped messages the sink's own templates build N returns: 40 %
   RFC 3464 DSNs, 40 % free-text NDRs (Postfix, Exim, Sendmail, qmail,
   Exchange, Gmail styles), 10 % ARF complaints, 10 % auto-replies.
3. K smtplib sessions send them to the bounce listener (one message per
   transaction, connections reused). Reported: accepted/s (until the last
   250, each 250 given after a durable write) and recorded/s (until
   ``hurricane outcomes`` shows every bounced and complained recipient).
4. Sisimai (Debian libsisimai-perl) analyzes the same files, timed inside
   Perl (start-up and file reading excluded): messages/s on one core.

Hurricane's figure includes SMTP, the durable store write, analysis in a
worker thread and recording; Sisimai's is parsing only.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import (  # noqa: E402
    HURRICANE,
    Hurricane,
    Sink,
    append_results,
    machine,
    peak_rss_mib,
    smtp_source,
    wait_for,
)

PERL = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(clock);
my @data;
for my $f (@ARGV) {
    open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; push @data, scalar <$fh>; close $fh;
}
my $call = Sisimai->can('rise') ? 'rise' : 'make';
my $found = 0;
my $t0 = clock();
for my $d (@data) { my $v = Sisimai->$call(\$d, 'input' => 'string', 'vacation' => 1);
                    $found++ if $v && @$v; }
my $el = clock() - $t0;
printf "%d %.6f %d %s\n", scalar(@data), $el, $found, $Sisimai::VERSION;
"""

MIX = [("late", 40), ("ndr", 40), ("complain", 10), ("vacation", 10)]
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
        # one distinct recipient per delivery, as a real mailing would have
        rcpt = rcpt.replace("@", f"+{i}@")
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


def send_all(port: int, files: list[str], connections: int) -> tuple[float, int]:
    """Send every return with ``connections`` smtplib sessions; (seconds, refused)."""
    refused = [0]
    lock = threading.Lock()

    def worker(share: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
            s.ehlo("mx.bench.test")
            for path in share:
                with open(path[:-len(path.split(".", 1)[1])] + "env") as fp:
                    mail_from, rcpt = fp.read().splitlines()
                with open(path, "rb") as fp:
                    data = fp.read()
                try:
                    s.sendmail(mail_from, [rcpt], data)
                except smtplib.SMTPException:
                    with lock:
                        refused[0] += 1

    shares = [files[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(sh,)) for sh in shares if sh]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return time.monotonic() - t0, refused[0]


def recorded(config_file: str) -> int:
    """Recipients in state bounced or complained, per ``hurricane outcomes``."""
    out = subprocess.run([HURRICANE, "outcomes", "--config", config_file],
                         capture_output=True, text=True, timeout=120).stdout
    return len(re.findall(r'"state": "(?:bounced|complained)"', out))


def sisimai(files: list[str]) -> tuple[float, int, str] | None:
    """(messages/s, messages with a result, version), or None without Sisimai."""
    if subprocess.run(["perl", "-MSisimai", "-e1"], capture_output=True).returncode:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pl", delete=False) as fp:
        fp.write(PERL)
    try:
        out = subprocess.run(["perl", fp.name, *files], capture_output=True, text=True,
                             timeout=900)
    finally:
        os.unlink(fp.name)
    n, el, found, version = out.stdout.split()
    return int(n) / float(el), int(found), version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bounces", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--no-sisimai", action="store_true")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    work = tempfile.mkdtemp(prefix="bench-inbound-")
    dump = os.path.join(work, "dump")
    returns_dir = os.path.join(work, "returns")
    os.makedirs(returns_dir)
    sink = Sink(extra=["--dump-dir", dump])
    h = None
    try:
        h = Hurricane({"submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
                       "bounce": {"listen": ["tcp:0:interface=127.0.0.1"],
                                  "max_connections_per_ip": 100},
                       "web": {"listen": []},
                       "delivery": {"poll_interval": 0.1},
                       "routes": {"*": f"127.0.0.1:{sink.port}"}})
        smtp_source(h.ports["submission"], 10, args.bounces, size=3000)
        if not wait_for(lambda: sink.accepted() >= args.bounces, 300, 0.2):
            raise RuntimeError("the deliveries did not all reach the sink")
        kinds = build_returns(dump, returns_dir, args.bounces)
        expected = kinds.get("dsn", 0) + kinds.get("ndr", 0) + kinds.get("arf", 0)
        files = sorted(os.path.join(returns_dir, f) for f in os.listdir(returns_dir)
                       if f.endswith(".eml"))
        base = recorded(h.config_file)
        t0 = time.monotonic()
        accept_s, refused = send_all(h.ports["bounce"], files, args.connections)
        ok = wait_for(lambda: recorded(h.config_file) - base >= expected, 600, 0.5)
        total_s = time.monotonic() - t0
        got = recorded(h.config_file) - base
        rss = peak_rss_mib(h.proc.pid)
    finally:
        if h is not None:
            h.stop()
        sink.stop()
    acc_rate = len(files) / accept_s
    rec_rate = len(files) / total_s
    print(f"hurricane: {len(files)} returns ({kinds}), refused {refused}; accepted "
          f"{acc_rate:.0f}/s, accepted+analyzed+recorded {rec_rate:.0f}/s "
          f"({got}/{expected} bounced+complained{'' if ok else ', INCOMPLETE'}), "
          f"peak RSS {rss:.0f} MiB")
    s = None if args.no_sisimai else sisimai(files)
    if s:
        print(f"sisimai {s[2]}: {s[0]:.0f} messages/s analyzed (parse only, one core), "
              f"{s[1]}/{len(files)} with a result; ratio hurricane/sisimai "
              f"{rec_rate / s[0]:.2f}")
    else:
        print("sisimai: not measured")
    shutil.rmtree(work, ignore_errors=True)
    if not args.no_append:
        text = append_results(
            "Inbound: returned messages accepted, analyzed, recorded", [
                "returns", "conc.", "H accepted/s", "H recorded/s", "H peak RSS MiB",
                "Sisimai analyzed/s", "ratio H recorded / Sisimai"],
            [[len(files), args.connections, f"{acc_rate:.0f}", f"{rec_rate:.0f}",
              f"{rss:.0f}", f"{s[0]:.0f}" if s else "n/a",
              f"{rec_rate / s[0]:.2f}" if s else "n/a"]],
            [f"Mix: {kinds} (built by hurricane.sink.returns from real deliveries).",
             "Hurricane: SMTP + durable write before 250 + analysis + recording "
             "(SQLite FULL); recorded/s is measured by polling `hurricane outcomes` "
             "every 0.5 s (auto-replies do not change a state and are not polled).",
             f"Sisimai {s[2] if s else ''}: parse only, timed inside Perl; "
             f"{s[1] if s else 0}/{len(files)} messages gave a result."])
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
