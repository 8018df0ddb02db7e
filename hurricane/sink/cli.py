"""``hurricane sink``: run the smart sink until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from twisted.logger import Logger

from hurricane import sink as sink_package

if TYPE_CHECKING:
    from hurricane.cli import Subcommands
    from hurricane.reactors import IServerReactor
    from hurricane.sink.scenario import Scenario

log = Logger()

EPILOG = (sink_package.__doc__ or "").split("\n", 2)[-1]


def add_parser(subparsers: Subcommands) -> None:
    """Register ``hurricane sink``."""
    p = subparsers.add_parser(
        "sink", help="run the smart sink (a scriptable remote MX for tests and demos)",
        description="The smart sink: one process on loopback playing many remote MX "
        "hosts. The recipient address chooses the behaviour.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--listen", action="append", metavar="ENDPOINT",
                   help="endpoint string (repeatable); default tcp:2526:interface=127.0.0.1")
    p.add_argument("--scenario", metavar="FILE", help="scenario file (TOML); default: built-in")
    p.add_argument("--seed", help="seed of the mixes (overrides the file's)")
    p.add_argument("--bounce-to", metavar="HOST:PORT", default="127.0.0.1:2525",
                   help="Hurricane's bounce listener for asynchronous returns "
                   "(default 127.0.0.1:2525)")
    p.add_argument("--no-returns", action="store_true",
                   help="count asynchronous returns but do not send them")
    p.add_argument("--tls", choices=("off", "on", "fail"),
                   help="offer STARTTLS (trustme certificate), or offer it and fail "
                   "the handshake (overrides the file)")
    p.add_argument("--hostname", help="name in the greeting and in returns")
    p.add_argument("--dump-dir", metavar="DIR", help="write every accepted message here")
    p.add_argument("--stats-file", metavar="FILE",
                   help="rewrite the counters as JSON in FILE every --stats-interval s")
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="S")
    p.add_argument("--print-scenario", action="store_true",
                   help="print how the rules decide, then exit")
    p.set_defaults(func=cmd_sink)


def _scenario(args: argparse.Namespace) -> Scenario:
    import dataclasses

    from hurricane.cli import EXIT_USAGE, CommandError
    from hurricane.sink.scenario import ScenarioError, default_scenario, load_scenario

    try:
        sc = (load_scenario(args.scenario, seed=args.seed) if args.scenario
              else default_scenario(args.seed if args.seed is not None else 0))
    except ScenarioError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    if args.tls:
        sc = dataclasses.replace(sc, tls=args.tls)
    if args.hostname:
        sc = dataclasses.replace(sc, hostname=args.hostname)
    return sc


def cmd_sink(args: argparse.Namespace) -> int:
    """Run the sink; print the counters as JSON when it stops."""
    from hurricane.cli import EXIT_OK, EXIT_USAGE, CommandError
    from hurricane.config import parse_host_port

    scenario = _scenario(args)
    if args.print_scenario:
        for rule in scenario.rules:
            target = rule.behaviour or ", ".join(f"{n} {w:g}" for n, w in rule.mix)
            print(f"{rule.match:<24} {target}")
        return EXIT_OK
    try:
        host, port = parse_host_port(args.bounce_to)
    except ValueError as e:
        raise CommandError(f"--bounce-to: {e}", EXIT_USAGE) from None
    listen = args.listen or ["tcp:2526:interface=127.0.0.1"]

    from twisted.internet import defer, endpoints, task
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    from hurricane.sink.server import ReturnSender, SinkFactory, SinkStats, tls_context_for

    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(LogLevel.info)])],
        redirectStandardIO=False)
    stats = SinkStats()
    try:
        ctx = tls_context_for(scenario.hostname) if scenario.tls != "off" else None
    except RuntimeError as e:
        raise CommandError(str(e), EXIT_USAGE) from None

    async def main(reactor: IServerReactor) -> None:
        returns = None if args.no_returns else ReturnSender(
            reactor, host, port, stats, helo=scenario.hostname)
        factory = SinkFactory(scenario, reactor, returns=returns, dump_dir=args.dump_dir,
                              tls_context=ctx, stats=stats)
        ports = []
        for description in listen:
            ep = endpoints.serverFromString(reactor, description)
            p = await ep.listen(factory)
            ports.append(p)
            a = p.getHost()
            print(f"sink listening on {a.host}:{a.port}", flush=True)
            log.info("sink listening on {host}:{port}", host=a.host, port=a.port)
        if args.stats_file:
            loop = task.LoopingCall(factory.write_stats, args.stats_file)
            loop.clock = reactor
            loop.start(args.stats_interval)
        done: defer.Deferred[None] = defer.Deferred()

        def shutdown() -> None:
            factory.stop()
            if args.stats_file:
                factory.write_stats(args.stats_file)
            print(json.dumps(stats.as_dict(), sort_keys=True), flush=True)

        reactor.addSystemEventTrigger("before", "shutdown", shutdown)
        await done  # until the reactor stops (Ctrl-C, SIGTERM)

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit as e:
        return int(e.code or 0)
    return EXIT_OK
