#!/usr/bin/env python3
"""Logins under attack: SMTP greetings during wrong tokens, user-name timing, big POSTs.

    python bench/auth.py [--tokens 20] [--wrong 40] [--tree DIR] [--no-append]

Starts a real ``twistd -n hurricane`` (SQLite, every listener on 127.0.0.1)
whose ``[web.tokens]`` holds ``--tokens`` API tokens hashed with pbkdf2 at
200,000 iterations (the form older configurations have: the worst case, as a
wrong token must be tried against each) and one ``[web.users]`` user, then
measures three things (issue 23, items 4 and 5):

1. **Greeting latency**: a probe connects to the submission port every
   20 ms and times the ``220`` greeting, first with the server idle, then
   while ``--wrong`` requests with wrong bearer tokens arrive on the web
   listener at once. The greeting is answered by the reactor thread, so its
   latency is how long that thread is held.
2. **User-name timing**: 20 HTTP basic logins with an unknown user name and
   20 with the known user and a wrong password, alternating (a second
   server with ``max_auth_failures`` raised so that the failure limit does
   not answer first); the medians should match.
3. **A 50 MB POST without credentials**: the client sends the headers only
   and waits; the answer's status and how long it took. Every socket and
   every wait is bounded.

``--tree DIR`` runs the server from another checkout (``PYTHONPATH=DIR``), to
compare with the code before a change (``git archive main | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import statistics
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import ROOT, Hurricane, append_results, free_port, wait_for  # noqa: E402

sys.path.insert(0, ROOT)

from hurricane.passwords import hash_password  # noqa: E402

#: False with --tree: an older server does not know [web] max_auth_failures.
NEW_KEYS = True
WEB_LISTENING = re.compile(r"web listening on 127\.0\.0\.1:(\d+)")


def greeting_ms(port: int, timeout: float = 5.0) -> float:
    """Milliseconds from connect() to the end of the 220 line."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        elapsed = (time.monotonic() - t0) * 1000
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    if not data.startswith(b"220"):
        raise RuntimeError(f"no greeting: {data[:100]!r}")
    return elapsed


def probe(port: int, stop: threading.Event, out: list[float], limit: int = 1000) -> None:
    """Time a greeting every 20 ms until ``stop`` (at most ``limit`` of them; a
    greeting that does not come within 5 s counts as 5,000 ms)."""
    while not stop.is_set() and len(out) < limit:
        try:
            out.append(greeting_ms(port))
        except TimeoutError:
            out.append(5000.0)  # no greeting within the 5 s timeout: counted as 5 s
        time.sleep(0.02)


def http(port: int, request: bytes, timeout: float = 30.0) -> tuple[int, float]:
    """Send a raw request; (status, seconds until the status line arrived)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - t0
    parts = data.split(b" ", 2)
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), elapsed


def get(path: str, authorization: str) -> bytes:
    """A GET request with an Authorization header, closing the connection."""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: {authorization}\r\n\r\n").encode()


def start(tokens: int, max_auth_failures: int) -> Hurricane:
    """A server with ``tokens`` pbkdf2 tokens and one user."""
    token_hashes = {f"app{i}": hash_password(f"token-{i}-{os.urandom(8).hex()}")
                    for i in range(tokens)}
    return Hurricane({
        "submission": {"listen": [f"tcp:{free_port()}:interface=127.0.0.1"]},
        "bounce": {"domain": "bounces.bench.test",
                   "listen": [f"tcp:{free_port()}:interface=127.0.0.1"]},
        "web": {"listen": [f"tcp:{free_port()}:interface=127.0.0.1"],
                "tokens": token_hashes, "users": {"ops": hash_password("right")},
                **({"max_auth_failures": max_auth_failures} if NEW_KEYS else {})},
    })


def web_port(server: Hurricane) -> int:
    """The web listener's port, from the server's log (waits up to 30 s)."""
    found: list[str] = []

    def listening() -> bool:
        with open(server.log_path, errors="replace") as fp:
            found[:] = WEB_LISTENING.findall(fp.read())
        return bool(found)

    if not wait_for(listening, 30, 0.1):
        raise RuntimeError("the web listener did not start")
    return int(found[0])


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def phase_greetings(tokens: int, wrong: int) -> dict[str, Any]:
    """Greeting latency idle and while ``wrong`` wrong tokens arrive."""
    server = start(tokens, max_auth_failures=10)
    try:
        smtp, web = server.ports["submission"], web_port(server)
        idle: list[float] = []
        stop = threading.Event()
        probe_thread = threading.Thread(target=probe, args=(smtp, stop, idle, 50))
        probe_thread.start()
        probe_thread.join(30)
        stop.set()
        loaded: list[float] = []
        stop = threading.Event()
        probe_thread = threading.Thread(target=probe, args=(smtp, stop, loaded))
        probe_thread.start()
        time.sleep(0.1)
        codes: list[int] = []
        lock = threading.Lock()

        def attack(i: int) -> None:
            code, _ = http(web, get("/api/v1/summary", f"Bearer wrong-{i}"), timeout=120)
            with lock:
                codes.append(code)

        t0 = time.monotonic()
        attackers = [threading.Thread(target=attack, args=(i,)) for i in range(wrong)]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join(180)
        attack_s = time.monotonic() - t0
        time.sleep(0.2)
        stop.set()
        probe_thread.join(30)
    finally:
        server.stop()
    return {"idle": idle, "loaded": loaded, "codes": codes, "attack_s": attack_s}


def phase_users(rounds: int) -> dict[str, list[float]]:
    """Seconds per basic login: unknown user vs known user with a wrong password."""
    server = start(0, max_auth_failures=10_000)
    times: dict[str, list[float]] = {"unknown": [], "known": []}
    try:
        web = web_port(server)
        for i in range(rounds):
            for kind, name in (("unknown", f"ghost{i}"), ("known", "ops")):
                value = base64.b64encode(f"{name}:wrong-{i}".encode()).decode()
                code, elapsed = http(web, get("/", f"Basic {value}"))
                if code != 401:
                    raise RuntimeError(f"expected 401, got {code}")
                times[kind].append(elapsed)
    finally:
        server.stop()
    return times


def phase_big_post() -> tuple[int, float]:
    """(status, seconds) for the headers of a 50 MB POST without credentials."""
    server = start(1, max_auth_failures=10)
    try:
        web = web_port(server)
        return http(web, b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
                    timeout=10)
    except TimeoutError:
        return 0, 10.0
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=20, help="pbkdf2 tokens configured")
    ap.add_argument("--wrong", type=int, default=40, help="wrong tokens sent at once")
    ap.add_argument("--tree", help="run the server from this checkout (PYTHONPATH)")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    if args.tree:
        global NEW_KEYS
        NEW_KEYS = False
        os.environ["PYTHONPATH"] = os.path.abspath(args.tree)
    g = phase_greetings(args.tokens, args.wrong)
    users = phase_users(20)
    status, post_s = phase_big_post()
    rows = [
        ["SMTP greeting, idle (ms): median / max",
         f"{statistics.median(g['idle']):.1f} / {max(g['idle']):.1f}"],
        [f"SMTP greeting during {args.wrong} wrong tokens (ms): median / p99 / max "
         f"({len(g['loaded'])} probes)",
         f"{statistics.median(g['loaded']):.1f} / {percentile(g['loaded'], 99):.1f} / "
         f"{max(g['loaded']):.1f}"],
        ["web answers to the wrong tokens",
         ", ".join(f"{c}: {g['codes'].count(c)}" for c in sorted(set(g["codes"])))
         + f" in {g['attack_s']:.2f} s"],
        ["basic login, unknown user (ms): median / min / max",
         f"{statistics.median(users['unknown']) * 1000:.1f} / "
         f"{min(users['unknown']) * 1000:.1f} / {max(users['unknown']) * 1000:.1f}"],
        ["basic login, known user, wrong password (ms): median / min / max",
         f"{statistics.median(users['known']) * 1000:.1f} / "
         f"{min(users['known']) * 1000:.1f} / {max(users['known']) * 1000:.1f}"],
        ["50 MB POST without credentials, headers only: status / ms",
         f"{status or 'no answer'} / {post_s * 1000:.1f}"],
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if not args.no_append:
        title = "Logins under attack" + (f" (server from {args.tree})" if args.tree else "")
        append_results(title, ["measure", "value"], rows, [
            f"{args.tokens} API tokens hashed with pbkdf2 (200,000 iterations) and one "
            "[web.users] user; every listener on 127.0.0.1.",
            "The greeting is answered by the reactor thread: its latency is how long "
            "that thread is held by other work.",
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
