"""The ``hurricane`` console command and its subcommands.

Every subcommand takes ``--config FILE`` (default: ``$HURRICANE_CONFIG``, else
the built-in defaults, the same ones ``twistd -n hurricane`` uses). Errors
print one line and exit non-zero, without a traceback: 2 for a usage or
configuration error, 1 for a failed operation.
"""

from __future__ import annotations

import functools
import gc
import importlib
import json
import os
import sys
import types
from collections.abc import Awaitable, Callable, Sequence

from hurricane import __version__

TYPE_CHECKING = False   # (typing costs ~4 ms to import; mypy reads this as typing's)
if TYPE_CHECKING:
    import argparse
    from typing import Any, Protocol, TextIO

    from hurricane.config import Config
    from hurricane.operations import Operations
    from hurricane.reactors import IStoreReactor
    from hurricane.store.interface import IOutcomeStore
    from hurricane.verp import VerpCodec

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A subcommand failed; the message is printed, the code is the exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", "-c", metavar="FILE", default=os.environ.get("HURRICANE_CONFIG"),
        help="configuration file (TOML); default $HURRICANE_CONFIG, else built-in defaults",
    )


def _config(args: argparse.Namespace) -> Config:
    # imported here: ``hurricane analyze`` must not pay for the configuration modules
    from hurricane.config import ConfigError, load_config
    try:
        return load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e), EXIT_USAGE) from None


def _store_message(error: Exception, shown_url: str) -> str:
    """One line for a store error, naming the URL once.

    The store's own messages already start with "cannot open store URL:";
    libpq's run over several lines ("Connection refused" then "Is the server
    running..."): joined with "; " so that the error stays one line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines) or type(error).__name__
    return text if shown_url in text else f"store {shown_url}: {text}"


def _missing_database(config: Config, path: str) -> CommandError:
    """The error of a data command pointed at a SQLite database that does not exist."""
    if config.store.url:
        where = f"[store] url in {config.source}"
    elif config.source:
        where = f"[server] data_dir = {config.server.data_dir!r} in {config.source}"
    else:
        where = (f"no --config: the built-in data_dir {config.server.data_dir!r}, "
                 "relative to the current directory")
    return CommandError(
        f"no database at {path} ({where}); run this where the server keeps its data, or "
        "give the server's --config ('hurricane migrate' creates an empty database)",
        EXIT_USAGE)


def _run_store(config: Config,
               work: Callable[[IOutcomeStore, IStoreReactor], Awaitable[int]], *,
               create: bool = False, migrate: bool = True) -> int:
    """Open the configured store, run ``work(store, reactor)`` in a reactor, close,
    return its code.

    Args:
        config: names the store.
        work: what to do with the open store.
        create: a SQLite database that does not exist yet may be created
            (``migrate``); otherwise its absence is an error naming the path,
            so that a command run in the wrong directory (or without the
            server's --config) does not answer from a new, empty database.
        migrate: apply pending migrations when opening.
    """
    from twisted.internet import defer, task

    from hurricane.app import store_from_config
    from hurricane.store.factory import redact_url
    from hurricane.store.interface import StoreError

    shown = redact_url(config.store_url)
    result: dict[str, int] = {}
    errors: list[CommandError] = []

    async def main(reactor: IStoreReactor) -> None:
        try:
            store = store_from_config(config, reactor)
        except StoreError as e:
            errors.append(CommandError(str(e), EXIT_USAGE))
            return
        path = _sqlite_path(store)
        if path is not None and not create and not os.path.exists(path):
            errors.append(_missing_database(config, path))
            return
        try:
            await store.open(migrate=migrate)
        except StoreError as e:
            errors.append(CommandError(_store_message(e, shown)))
            return
        try:
            result["code"] = await work(store, reactor)
        except CommandError as e:
            errors.append(e)
        except StoreError as e:
            errors.append(CommandError(_store_message(e, shown)))
        finally:
            await store.close()

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor)))
    except SystemExit:
        pass  # react always exits; the outcome is in result / errors
    if errors:
        raise errors[0]
    return result.get("code", EXIT_FAILED)


def _sqlite_path(store: IOutcomeStore) -> str | None:
    """The database file of a SQLite store, else None."""
    from hurricane.store.sqlite import SqliteStore

    return store.path if isinstance(store, SqliteStore) else None


def _sqlite_path_of(config: Config) -> str | None:
    """The database file of a SQLite store URL (None for others or a malformed URL,
    which opening the store reports)."""
    from hurricane.store.factory import sqlite_file
    from hurricane.store.interface import StoreConfigError

    try:
        return sqlite_file(config.store_url, config.data_dir)
    except StoreConfigError:
        return None


# -- check-config ----------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration and the files it names; print what it amounts to."""
    config = _config(args)
    from hurricane.config import check_paths
    from hurricane.store.factory import redact_url

    report = check_paths(config)
    errors = [str(e) for e in report.errors]
    if not errors:
        # The files exist: now read them as the server will at start.
        errors = _check_file_contents(config)
    if not errors and config.delivery.pools:
        from hurricane.outbound.pools import unbindable
        errors = unbindable(config.delivery.pools)
    if errors:
        for line in errors:
            print(f"hurricane check-config: {line}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    print(f"{config.source or '(built-in defaults)'}: OK", file=out)
    print(f"  hostname      {config.server.hostname}", file=out)
    print(f"  data_dir      {config.data_dir}", file=out)
    print(f"  store         {redact_url(config.store_url)}", file=out)
    print(f"  bounce domain {config.bounce.domain}", file=out)
    for name in ("submission", "bounce", "web"):
        for ep in getattr(config, name).listen:
            print(f"  listen        {name:<10} {ep}", file=out)
    if config.admin.enabled:
        print(f"  listen        {'admin':<10} {config.admin.listen}", file=out)
    for dom, target in config.routes.items():
        print(f"  route         {dom} -> {target}", file=out)
    for note in report.notes:
        print(f"  note          {note}", file=out)
    if args.connect:
        return _check_store(config, out)
    return EXIT_OK


def _check_file_contents(config: Config) -> list[str]:
    """Load the files the server loads at start (TLS, users, DKIM, rules, webhook
    secrets) with the server's own loaders; one line per problem, naming the key."""
    from hurricane.config import ConfigError

    problems: list[str] = []

    def check(key: tuple[str, ...], load: Callable[[], object]) -> None:
        try:
            load()
        except (OSError, ValueError) as e:
            problems.append(str(ConfigError(str(e), key, config.source)))

    for section in ("submission", "bounce"):
        block = getattr(config, section)
        if block.tls_certificate:
            from hurricane.smtpd.tls import tls_context_from_files

            check((section, "tls_certificate"), functools.partial(
                tls_context_from_files, block.tls_certificate, block.tls_key))
    if config.submission.users_file:
        from hurricane.submission.auth import load_users

        check(("submission", "users_file"), lambda: load_users(config.submission))
    for i, rules in enumerate(config.bounce.rules_files):
        from hurricane.bounce.classify import ReplyClassifier

        check(("bounce", f"rules_files[{i}]"), functools.partial(ReplyClassifier.load, [rules]))
    for i, entry in enumerate(config.delivery.dkim):
        from hurricane.outbound.dkim import DkimKey

        check(("delivery", f"dkim[{i}]", "key_file"), functools.partial(DkimKey.from_config,
                                                                         entry))
    for i, hook in enumerate(config.webhooks):
        if hook.secret_file:
            from hurricane.webhooks import load_secret

            check((f"webhooks[{i}]", "secret_file"), functools.partial(load_secret, hook))
    return problems


def _check_store(config: Config, out: TextIO) -> int:
    """``check-config --connect``: open the store without changing it; print its
    schema version against the one this version of Hurricane needs."""
    from hurricane.store.factory import redact_url
    from hurricane.store.migrate import latest_version

    shown = redact_url(config.store_url)
    latest = latest_version()
    path = _sqlite_path_of(config)
    if path is not None and not os.path.exists(path):
        print(f"  connect       {shown}: no database yet (made at the first start or by "
              f"'hurricane migrate', at schema version {latest})", file=out)
        return EXIT_OK

    async def work(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        del reactor
        version = await store.schema_version()
        if version == latest:
            state = "up to date"
        elif version < latest:
            state = (f"{latest - version} migration(s) to apply: run 'hurricane migrate' "
                     "(start-up applies them too)")
        else:
            state = f"newer than this version of Hurricane ({latest}): upgrade it"
        print(f"  connect       {shown}: OK, schema version {version} of {latest}, {state}",
              file=out)
        return EXIT_OK

    # migrate=False: a check must not change the database it checks.
    return _run_store(config, work, migrate=False)


# -- migrate -----------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations and say what was done."""
    config = _config(args)
    from hurricane.store.factory import redact_url

    shown = redact_url(config.store_url)
    created: list[str] = []

    async def work(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        del reactor
        before = await store.schema_version()
        applied = await store.migrate()
        after = await store.schema_version()
        for path in created:
            print(f"created {path}")
        for name in applied:
            print(f"applied {name}")
        if applied:
            print(f"{shown}: schema version {before} -> {after}")
        else:
            print(f"{shown}: already at schema version {after}, nothing to apply")
        return EXIT_OK

    path = _sqlite_path_of(config)
    if path is not None and not os.path.exists(path):
        created.append(path)
    # Opened without migrating, so that the version before is the database's own.
    return _run_store(config, work, create=True, migrate=False)


# -- verp ------------------------------------------------------------------------------


def _codec(config: Config) -> VerpCodec:
    from hurricane.verp import codec_from_config

    path = config.verp_keys_file
    if not os.path.exists(path):
        # A key made here would sign (or check) tokens the server knows nothing of.
        where = f"--config {config.source}" if config.source else (
            f"no --config: the built-in data_dir {config.server.data_dir!r}, relative to "
            "the current directory")
        raise CommandError(f"no VERP keys at {path} ({where}); the server makes them at its "
                           "first start: run this where the server keeps its data, or give "
                           "the server's --config", EXIT_USAGE)
    try:
        return codec_from_config(config)
    except (OSError, ValueError) as e:
        raise CommandError(str(e)) from None


def cmd_verp_encode(args: argparse.Namespace) -> int:
    """Print the return path of a delivery."""
    codec = _codec(_config(args))
    try:
        print(codec.encode(args.delivery_id, args.mailing_id, args.message_id))
    except ValueError as e:
        raise CommandError(str(e), EXIT_USAGE) from None
    return EXIT_OK


def cmd_verp_decode(args: argparse.Namespace) -> int:
    """Verify a return path and print what it carries as JSON."""
    from hurricane.verp import VerpRejection

    codec = _codec(_config(args))
    token = codec.decode(args.address)
    if isinstance(token, VerpRejection):
        print(f"rejected: {token.reason}")
        return EXIT_FAILED
    print(json.dumps(token.as_dict(), sort_keys=True))
    return EXIT_OK


def cmd_verp_rotate(args: argparse.Namespace) -> int:
    """Add a new signing key (old keys keep verifying until retired)."""
    config = _config(args)
    from hurricane.verp import rotate_keys

    try:
        key = rotate_keys(config.verp_keys_file, args.retire_older_than)
    except (OSError, ValueError) as e:
        raise CommandError(str(e)) from None
    print(f"new signing key {key.key_id} in {config.verp_keys_file}")
    return EXIT_OK


# -- outcomes ------------------------------------------------------------------------


def cmd_outcomes(args: argparse.Namespace) -> int:
    """Print one record per (message, recipient)."""
    config = _config(args)
    from hurricane.model import Outcome
    from hurricane.report.csvexport import CsvWriter

    out: TextIO = sys.stdout

    async def work(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        del reactor
        writer = None
        if args.format == "csv":
            # The web export's writer: the same cells, formula-safe, times in
            # ISO 8601 UTC, from either path (text in returned mail is the
            # sender's to choose).
            writer = CsvWriter(out, Outcome.FIELDS)
        after = 0
        while True:
            page = await store.outcomes(
                after, 1000, state=args.state, mailing_id=args.mailing_id,
                stream=args.stream,
            )
            for record in page:
                row = record.as_dict()
                if writer is not None:
                    writer.writerow(row.values())
                else:
                    out.write(json.dumps(row) + "\n")
            if len(page) < 1000:
                return EXIT_OK
            after = page[-1].delivery_id

    return _run_store(config, work)


# -- suppression -------------------------------------------------------------------


def _operations(config: Config, work: Callable[[Operations], Awaitable[int]]) -> int:
    """Run ``work`` with the operations on the configured store (see :func:`_run_store`).

    No scheduler runs in this process: mail made due here is found by the
    server's scheduler at its next poll.
    """
    from hurricane.operations import InvalidRequest, Operations

    async def with_operations(store: IOutcomeStore, reactor: IStoreReactor) -> int:
        try:
            return await work(Operations(store, reactor, streams=config.stream_set))
        except InvalidRequest as e:
            raise CommandError(e.message, EXIT_USAGE) from None

    return _run_store(config, with_operations)


def cmd_suppression(args: argparse.Namespace) -> int:
    """List, add or remove suppressed addresses."""
    config = _config(args)

    if args.action in ("add", "remove") and not args.address:
        raise CommandError(f"suppression {args.action} needs an ADDRESS", EXIT_USAGE)

    async def work(operations: Operations) -> int:
        scope = getattr(args, "scope", None)
        if args.action == "list":
            after: tuple[str, str] | None = None
            while True:
                page = await operations.list_suppressions(scope, after, 1000)
                for s in page:
                    print(json.dumps({
                        "address": s.address, "scope": s.scope, "reason": s.reason,
                        "source": s.source, "created_at": s.created_at, "note": s.note,
                        "event_id": s.event_id, "expires_at": s.expires_at,
                    }))
                if len(page) < 1000:
                    return EXIT_OK
                after = (page[-1].scope, page[-1].address)
        if args.action == "add":
            expires = None if args.expires_days is None else \
                operations.clock.seconds() + args.expires_days * 86400.0
            added = await operations.suppress_scoped(args.address, scope, args.reason,
                                                     args.note, expires)
            print(("added " if added.changed else "already suppressed ")
                  + f"{added.address} ({added.scope})")
            return EXIT_OK
        removed = await operations.unsuppress_scoped(args.address, scope)
        print(("removed " if removed.changed else "not suppressed ")
              + f"{removed.address} ({removed.scope})")
        return EXIT_OK if removed.changed else EXIT_FAILED

    return _operations(config, work)


def cmd_retry(args: argparse.Namespace) -> int:
    """Make deferred deliveries due now (by message, domain or delivery)."""
    config = _config(args)

    async def work(operations: Operations) -> int:
        count = await operations.retry(queue_id=args.queue_id, domain=args.domain,
                                       delivery_id=args.delivery_id)
        print(f"{count} deliveries are due now")
        return EXIT_OK

    return _operations(config, work)


# -- passwd ----------------------------------------------------------------------------


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print a hash of a password, or make an API token and print it with its hash."""
    from hurricane.passwords import MIN_TOKEN_LENGTH, generate_token, hash_password, hash_token

    if args.token:
        # A token gets a fast hash, which is only safe for a secret nobody
        # can guess: make one, or insist on a long one from the operator.
        if not args.stdin:
            token = generate_token()
            print(f"token: {token}")
            print(f"hash:  {hash_token(token)}")
            return EXIT_OK
        token = sys.stdin.readline().rstrip("\n")
        if len(token) < MIN_TOKEN_LENGTH:
            raise CommandError(f"a token needs at least {MIN_TOKEN_LENGTH} random characters "
                               "(run without --stdin to have one made)", EXIT_USAGE)
        print(hash_token(token))
        return EXIT_OK
    if args.stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        import getpass  # (here: termios and the rest are of no use to other commands)
        secret = getpass.getpass("password: ")
        if getpass.getpass("again: ") != secret:
            raise CommandError("the two entries differ", EXIT_USAGE)
    if not secret:
        raise CommandError("empty password", EXIT_USAGE)
    print(hash_password(secret))
    return EXIT_OK


# -- the parser --------------------------------------------------------------------


if TYPE_CHECKING:
    class _Subcommands(Protocol):
        """What ``ArgumentParser.add_subparsers()`` returns, as far as we use it."""

        def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
            """A parser for subcommand ``name``."""

    #: The same, for the ``add_parser(subparsers)`` of the modules with commands of their own.
    Subcommands = _Subcommands


def _add_data_parsers(sub: _Subcommands) -> None:
    """``outcomes``, ``suppression`` and ``retry``: the commands on the store's data."""
    p = sub.add_parser("outcomes", help="print one record per (message, recipient)",
                       description="Print one outcome record per (message, recipient).")
    _add_config(p)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--state", help="only this state (delivered, bounced, ...)")
    p.add_argument("--mailing-id", help="only this mailing")
    p.add_argument("--stream", help="only this message stream (transactional, ...)")
    p.set_defaults(func=cmd_outcomes)

    supp = sub.add_parser("suppression", help="list, add or remove suppressed addresses",
                          description="The suppression list: addresses Hurricane will not "
                          "send to.")
    ssub = supp.add_subparsers(dest="action", metavar="ACTION")
    ssub.required = True
    scope_help = ("global (default), stream:NAME (one stream), mailing:ID (one mailing) or "
                  "domain (ADDRESS is then a domain: every address of it)")
    p = ssub.add_parser("list", help="print the list as JSON lines",
                        description="Print every suppression entry as a JSON line, with "
                        "its scope: the global list first, then stream, mailing and domain "
                        "entries.")
    _add_config(p)
    p.add_argument("--scope", help="only this scope: " + scope_help)
    p.set_defaults(func=cmd_suppression, address=None)
    p = ssub.add_parser("add", help="suppress an address",
                        description="Add ADDRESS to the suppression list (of one scope).")
    _add_config(p)
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--scope", help=scope_help)
    p.add_argument("--reason", default="operator", help="reason recorded (default operator)")
    p.add_argument("--note", help="free text recorded with the entry")
    p.add_argument("--expires-days", type=float, metavar="DAYS",
                   help="the entry stops matching after DAYS (not for global)")
    p.set_defaults(func=cmd_suppression)
    p = ssub.add_parser("remove", help="stop suppressing an address",
                        description="Remove ADDRESS's entry of one scope (default global); "
                        "'--scope domain example.com' lifts a domain suppressed after it "
                        "failed to resolve.")
    _add_config(p)
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--scope", help=scope_help)
    p.set_defaults(func=cmd_suppression)

    p = sub.add_parser("retry", help="make deferred deliveries due now",
                       description="Make deferred deliveries due now: those of a message "
                       "(--queue-id), of a destination domain (--domain) or one delivery "
                       "(--delivery-id); every given filter must match. The server's "
                       "scheduler sends them at its next poll.")
    _add_config(p)
    p.add_argument("--queue-id", metavar="ID")
    p.add_argument("--domain", metavar="DOMAIN")
    p.add_argument("--delivery-id", type=int, metavar="N")
    p.set_defaults(func=cmd_retry)


def build_parser() -> argparse.ArgumentParser:
    """The ``hurricane`` argument parser with every subcommand."""
    # (imported here: ``hurricane analyze`` reads its arguments without argparse)
    import argparse

    parser = argparse.ArgumentParser(
        prog="hurricane",
        description="Hurricane mail server tools. Run the server with: twistd -n hurricane "
        "[--config FILE]",
    )
    parser.add_argument("--version", action="version", version=f"hurricane {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("check-config", help="validate a configuration file",
                       description="Validate the configuration and the files it names (TLS "
                       "certificates and keys, users_file, DKIM keys, rule files, webhook "
                       "secrets, authorized_keys, data_dir), as the user running it, and "
                       "print what it amounts to. Run it as the server's user.")
    _add_config(p)
    p.add_argument("--connect", action="store_true",
                   help="also open the store (without changing it) and print its schema "
                   "version")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("migrate", help="apply pending database migrations",
                       description="Apply pending schema migrations to the configured store "
                       "(start-up applies them too).")
    _add_config(p)
    p.set_defaults(func=cmd_migrate)

    verp = sub.add_parser("verp", help="encode, decode and rotate VERP return paths",
                          description="Signed VERP return paths.")
    vsub = verp.add_subparsers(dest="verp_command", metavar="ACTION")
    vsub.required = True
    p = vsub.add_parser("encode", help="print the return path of a delivery",
                        description="Print the signed return-path address of a delivery.")
    _add_config(p)
    p.add_argument("--delivery-id", type=int, required=True, metavar="N")
    p.add_argument("--mailing-id", metavar="X", help="application mailing id ([0-9A-Za-z-])")
    p.add_argument("--message-id", metavar="Y", help="application message id ([0-9A-Za-z-])")
    p.set_defaults(func=cmd_verp_encode)
    p = vsub.add_parser("decode", help="verify a return path and print its contents as JSON",
                        description="Verify ADDRESS; print delivery_id, mailing_id, message_id, "
                        "key_id and issued as JSON and exit 0, or print why it is refused "
                        "and exit 1.")
    _add_config(p)
    p.add_argument("address", metavar="ADDRESS")
    p.set_defaults(func=cmd_verp_decode)
    p = vsub.add_parser("rotate", help="add a new signing key",
                        description="Add a new VERP signing key. Older keys still verify "
                        "until retired.")
    _add_config(p)
    p.add_argument("--retire-older-than", type=float, metavar="DAYS",
                   help="retire keys created more than DAYS days ago")
    p.set_defaults(func=cmd_verp_rotate)

    from hurricane.bounce import cli as bounce_cli
    bounce_cli.add_parser(sub)

    _add_data_parsers(sub)

    p = sub.add_parser("passwd", help="hash a password or make an API token",
                       description="Print a pbkdf2_sha256 hash of a password for "
                       "[submission.users], [web.users] or [admin.passwords]; with --token, "
                       "make a random API token and print it with its sha256 hash for "
                       "[web.tokens].")
    p.add_argument("--stdin", action="store_true", help="read the secret from standard input")
    p.add_argument("--token", action="store_true",
                   help="an API token: make one (or hash one read with --stdin, at least "
                        "24 characters) with a fast sha256 hash")
    p.set_defaults(func=cmd_passwd)

    for _name, module in (("sink", "hurricane.sink.cli"), ("demo", "hurricane.demo"),
                          ("tlsrpt", "hurricane.tlsrpt"),
                          ("providers", "hurricane.policy.cli")):
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)
    return parser


class _DeferredModule(types.ModuleType):
    """A module imported when one of its attributes is first read (see _defer_import)."""

    def __getattr__(self, name: str) -> object:
        real = sys.modules.get(self.__name__)
        if real is self or real is None:
            del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, name)


#: Modules that ``hurricane analyze`` imports without using them, imported when
#: something reads from them (see _defer_import): dataclasses imports inspect
#: (and with it ast, dis, tokenize, linecache: ~7 ms, a tenth of the command's
#: start-up) for one call the analyzer's classes never make (a signature for a
#: class without a docstring); email.utils, which flufl.bounce's reading
#: imports, imports socket, random, datetime and calendar (~5 ms) for writing
#: messages (Message-IDs, dates), never for parsing them.
_ANALYZE_DEFERS = ("inspect", "socket", "random", "datetime", "calendar")


def _defer_import(name: str) -> None:
    """Import module ``name`` only when something reads one of its attributes."""
    if name not in sys.modules:
        sys.modules[name] = _DeferredModule(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hurricane`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["analyze"]:
        # The analyzer alone needs no configuration, store, reactor or web modules,
        # and is often run on a few files, where start-up is most of the time:
        # go straight to it, without building every subcommand's parser.
        if argv is None:
            for name in _ANALYZE_DEFERS:
                _defer_import(name)
        from hurricane.bounce import cli as bounce_cli
        if argv is None:
            # What is loaded now lives as long as the process: the collector need
            # not walk it again at each full collection. An analysis leaves few
            # reference cycles behind: a young collection every 50,000 allocations
            # rather than 700 keeps the memory bounded all the same.
            gc.freeze()
            gc.set_threshold(50_000, 20, 20)
        status = bounce_cli.main(args_list)
        return status
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        code: int = args.func(args)
    except CommandError as e:
        print(f"hurricane {args.command}: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    # Run the imported module's main: the subcommands added by other modules
    # (providers, mailing) import hurricane.cli, and their CommandError must be
    # the class main() catches, not a second copy under __main__.
    from hurricane.cli import main as _main

    sys.exit(_main())
