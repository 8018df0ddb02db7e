"""One-click unsubscribe (RFC 8058): how fast ``POST /u/TOKEN`` answers on a live server.

Starts ``hurricane sink`` and ``twistd -n hurricane`` (a bulk stream, the web
listener on loopback), submits ``--messages`` newsletters (one recipient
each), waits until the sink has them, then POSTs ``List-Unsubscribe=One-Click``
to each recipient's link, one at a time over one keep-alive connection, and
times every answer; then as many forged tokens (refused by the signature,
before the store). Issue 20's target: a POST answers in under 50 ms.

    python bench/unsubscribe.py --messages 200 [--stores sqlite,postgres]

Everything binds to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import (  # noqa: E402
    HURRICANE,
    LISTENING,
    TWISTD,
    Sink,
    append_results,
    free_port,
    fresh_postgres_db,
    postgres_dsn,
    stop_process,
    toml_config,
    wait_for,
)

DOMAIN = "bounces.bench.test"


def submit(port: int, count: int) -> None:
    """``count`` newsletters, one recipient each, over one SMTP session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        for i in range(count):
            msg = EmailMessage()
            msg["From"] = "news@shop.test"
            msg["To"] = f"reader{i}@x.test"
            msg["Subject"] = f"Issue {i}"
            msg["X-Hurricane-Stream"] = "news"
            msg["X-Hurricane-Mailing-Id"] = "bench-1"
            msg.set_content("hello\n")
            s.send_message(msg)


def delivery_ids(config_file: str) -> list[int]:
    """The delivery ids of the delivered newsletters."""
    out = subprocess.run([HURRICANE, "outcomes", "--config", config_file, "--stream", "news"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return [r["delivery_id"] for r in map(json.loads, out.splitlines())
            if r["state"] == "delivered"]


def post_all(port: int, paths: list[str]) -> tuple[list[float], list[int]]:
    """POST the one-click form to each path; (milliseconds, statuses)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, codes = [], []
    body = b"List-Unsubscribe=One-Click"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        for path in paths:
            t0 = time.perf_counter()
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            resp.read()
            times.append((time.perf_counter() - t0) * 1000)
            codes.append(resp.status)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    finally:
        conn.close()
    return times, codes


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def start(config: dict[str, object], work: str) -> tuple[subprocess.Popen[bytes], dict[str, int],
                                                          str]:
    """twistd with ``config`` plus a bulk stream ``news``; its process, ports and config file."""
    path = toml_config(config, os.path.join(work, "hurricane.toml"))
    with open(path, "a") as fp:  # an array of tables, which write_toml has not
        fp.write('\n[[streams]]\nname = "news"\nkind = "bulk"\n')
    log_path = os.path.join(work, "twistd.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "--logfile", log_path, "hurricane",
                             "--config", path], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    ports: dict[str, int] = {}

    def ready() -> bool:
        with open(log_path, errors="replace") as f:
            ports.update({k: int(v) for k, v in LISTENING.findall(f.read())})
        return "submission" in ports or proc.poll() is not None

    wait_for(ready, 60, 0.1)
    if "submission" not in ports:
        with open(log_path, errors="replace") as f:
            raise RuntimeError("hurricane did not start:\n" + f.read()[-3000:])
    return proc, ports, path


def run(store: str, url: str, messages: int) -> list[object]:
    """One store's row: POST latencies of real and forged tokens."""
    from hurricane.unsubscribe import UnsubscribeCodec
    from hurricane.verp import load_keys

    sink = Sink()
    work = tempfile.mkdtemp(prefix="bench-unsubscribe-")
    web = free_port()
    config: dict[str, object] = {
        "server": {"data_dir": os.path.join(work, "data")},
        "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "bounce": {"listen": ["tcp:0:interface=127.0.0.1"], "domain": DOMAIN},
        "web": {"listen": [f"tcp:{web}:interface=127.0.0.1"]},
        "delivery": {"poll_interval": 0.2},
        "routes": {"*": f"127.0.0.1:{sink.port}"},
        "unsubscribe": {"base_url": f"http://127.0.0.1:{web}"},
    }
    if url:
        config["store"] = {"url": url}
    proc, ports, config_file = start(config, work)
    try:
        submit(ports["submission"], messages)
        if not wait_for(lambda: sink.accepted() >= messages, 300, 0.2):
            raise RuntimeError(f"the sink got {sink.accepted()} of {messages}")
        ids = delivery_ids(config_file)
        codec = UnsubscribeCodec(DOMAIN, load_keys(os.path.join(work, "data",
                                                                "verp-keys.json")))
        tokens = [codec.encode(i, "news") for i in ids]
        real, codes = post_all(web, [f"/u/{t}" for t in tokens])
        forged_tokens = [t[:5] + ("b" if t[5] == "a" else "a") + t[6:] for t in tokens]
        forged, forged_codes = post_all(web, [f"/u/{t}" for t in forged_tokens])
        listed = subprocess.run([HURRICANE, "suppression", "list", "--config", config_file,
                                 "--scope", "stream:news"], capture_output=True, text=True,
                                timeout=120, check=True).stdout.splitlines()
    finally:
        stop_process(proc, 60)
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    ok = sum(c == 200 for c in codes)
    refused = sum(c == 404 for c in forged_codes)
    return [store, len(tokens), f"{statistics.median(real):.1f}",
            f"{percentile(real, 95):.1f}", f"{max(real):.1f}", f"{ok}/{len(tokens)}",
            len(listed), f"{statistics.median(forged):.1f}", f"{percentile(forged, 95):.1f}",
            f"{refused}/{len(forged_tokens)}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--stores", default="sqlite")
    args = parser.parse_args()
    messages = max(1, min(args.messages, 5000))
    rows = []
    for store in args.stores.split(","):
        url, drop = "", None
        if store == "postgres":
            dsn = postgres_dsn()
            if not dsn:
                print("postgres skipped: HURRICANE_TEST_POSTGRES is unset")
                continue
            url, drop = fresh_postgres_db(dsn)
        try:
            rows.append(run(store, url, messages))
        finally:
            if drop is not None:
                drop()
    header = ["store", "POSTs", "p50 ms", "p95 ms", "max ms", "200", "stream entries",
              "forged p50 ms", "forged p95 ms", "forged 404"]
    for row in rows:
        print(" | ".join(str(c) for c in row))
    if rows:
        append_results("One-click unsubscribe: POST /u/TOKEN on a live server", header, rows, [
            "One POST after another over one keep-alive connection, after the newsletters "
            "were delivered; each answer is timed by the client (loopback).",
            "A real POST verifies the token, then records the event and the stream entry "
            "in one transaction; a forged token (one MAC character changed) is refused by "
            "its signature before the store is read. Target (issue 20): under 50 ms.",
        ])


if __name__ == "__main__":
    main()
