"""twistd glue: ``twistd -n hurricane [--config FILE]``.

The only module that imports the global reactor: everything below it gets the
reactor (or the narrow interface it needs) as a constructor argument.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import IO, cast

from twisted.application.service import IService
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import usage

from hurricane.config import Config, ConfigError, load_config
from hurricane.reactors import IRunningReactor
from hurricane.textlog import twistd_observer

log = Logger()

#: The signals that stop the server cleanly (exit status 0).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_Handler = Callable[[int, FrameType | None], None]


class Options(usage.Options):
    """Command-line options of the twistd plugin."""

    synopsis = "[--config FILE]"
    longdesc = (
        "Run Hurricane: ESMTP submission, delivery with VERP return paths, the bounce "
        "receiver and the reports, in one process. Without --config it runs on built-in "
        "defaults: SQLite in ./hurricane-data/, every listener on 127.0.0.1."
    )
    optParameters = [
        ["config", "c", os.environ.get("HURRICANE_CONFIG"),
         "Configuration file (TOML); default $HURRICANE_CONFIG, else built-in defaults."],
    ]

    config: Config

    def postOptions(self) -> None:
        """Load and validate the configuration; a bad one is a usage error naming the key."""
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    """Build the service tree from the configuration."""
    from twisted.internet import reactor as global_reactor

    from hurricane.app import StartupError, build_service
    from hurricane.reactors import server_reactor

    reactor = server_reactor(global_reactor)

    def on_fatal(message: str) -> None:
        _fatal(reactor, message)

    stop_cleanly_on_signals(reactor)

    if options.config.server.json_log:
        _add_json_log(options.config.server.json_log, options.config.data_dir)
    try:
        service = build_service(options.config, reactor, on_fatal=on_fatal)
    except StartupError as e:
        # Printed without a traceback; twistd has not daemonized yet.
        sys.stderr.write(f"hurricane: {e}\n")
        raise SystemExit(1) from None
    # The same text log lines as twistd's, for less CPU a line (textlog.py);
    # --syslog and --logger stay twistd's.
    service.log_observer = twistd_observer(getattr(options, "parent", None))
    return service


def stop_cleanly_on_signals(
    reactor: IRunningReactor, signals: Sequence[int] = STOP_SIGNALS,
    install: Callable[[int, _Handler], object] = signal.signal,
) -> None:
    """Make SIGTERM and SIGINT stop the reactor, and the process exit 0 afterwards.

    The reactor's own handlers stop it and record the signal, and twistd
    re-raises that signal once the reactor has stopped, so a clean SIGTERM
    stop would exit 143. A stop that went through every service's
    ``stopService`` is a clean stop: exit 0, as operators and systemd
    expect. Once the reactor runs (its handlers are installed during
    start-up), ours replace them for these signals: they stop the reactor
    the same way, from the reactor thread, and record nothing. Only public
    names are used; upstream, the fix would be a twistd option for the exit
    status of a signalled clean stop (the ticket to file: "twistd: let an
    application exit 0 after a clean SIGTERM shutdown without touching the
    reactor's private exit-signal attribute").

    Args:
        reactor: the reactor to stop.
        signals: the signals that stop it.
        install: sets a signal handler (``signal.signal``; tests record).
    """
    def stop() -> None:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # a second signal while stopping

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received {signal}, shutting down", signal=signal.Signals(signum).name)
        reactor.callFromThread(stop)

    def install_all() -> None:
        for signum in signals:
            install(signum, handler)

    reactor.callWhenRunning(install_all)


def _fatal(reactor: IReactorCore, message: str) -> None:
    """Stop the reactor and make the process exit non-zero once it has stopped."""
    sys.stderr.write(f"hurricane: {message}\n")

    def exit_nonzero() -> None:
        sys.stderr.flush()
        os._exit(1)

    reactor.addSystemEventTrigger("after", "shutdown", exit_nonzero)
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


def _add_json_log(path: str, data_dir: str) -> None:
    """Also write every log event as a JSON line to ``path`` (rotated at 100 MB).

    twistd's own ``--logger`` can replace the whole log; this keeps the
    human-readable log on stdout and adds a machine-readable copy. In the
    data directory it is owner-only like everything there
    (:mod:`hurricane.filemodes`); elsewhere the operator's umask decides.
    """
    from twisted.logger import globalLogPublisher
    from twisted.python.logfile import LogFile

    from hurricane.filemodes import PRIVATE_FILE_MODE, is_inside, make_dirs
    from hurricane.textlog import json_observer

    directory = os.path.dirname(os.path.abspath(path))
    private = is_inside(path, data_dir)
    try:
        if private:
            make_dirs(directory)
        else:
            os.makedirs(directory, exist_ok=True)
        logfile = LogFile(os.path.basename(path), directory, rotateLength=100_000_000,
                          maxRotatedFiles=10,
                          defaultMode=PRIVATE_FILE_MODE if private else None)
    except OSError as e:
        sys.stderr.write(f"hurricane: [server] json_log: cannot open {path}: {e.strerror}\n")
        raise SystemExit(1) from None
    # Plain JSON lines (no RFC 7464 record separator): what log shippers
    # expect, with the rendered message in log_text (textlog.json_observer).
    # A LogFile is file-like (write, flush): all the observer uses.
    globalLogPublisher.addObserver(json_observer(cast(IO[str], logfile)))
