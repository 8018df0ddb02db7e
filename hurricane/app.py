"""The composition root: every component built from the configuration.

``build_service`` creates the objects with explicit constructor arguments and
attaches them, in start order, to one :class:`HurricaneService`. ``tap.py``
calls it with the global reactor; tests and ``hurricane demo`` call it with
their own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from hurricane.config import Config
from hurricane.filemodes import ensure_private_dir
from hurricane.operations import Counters, Operations
from hurricane.reactors import IServerReactor, IStoreReactor
from hurricane.service import HurricaneService, ListenerService
from hurricane.store.interface import IOutcomeStore

if TYPE_CHECKING:
    from hurricane.credentials import SecretVerifier
    from hurricane.inbound.processor import BounceProcessor
    from hurricane.outbound.providers import ProviderGate
    from hurricane.outbound.queue import OutboundService

log = Logger()

_T = TypeVar("_T")


class StartupError(Exception):
    """The server cannot start with this configuration (printed without traceback)."""


def _preflight_store(config: Config, store: IOutcomeStore) -> None:
    """Fail fast, naming the URL, when the store cannot be reached at all.

    twistd cannot exit non-zero once the reactor runs, so the common mistakes
    (unwritable data directory, PostgreSQL down, wrong database) are caught
    here, synchronously, before the reactor starts.

    Args:
        config: gives the URL.
        store: the engine :func:`store_from_config` built; a SQLite store
            names its file (a relative URL is relative to ``data_dir``, which
            only the factory resolves).
    """
    from hurricane.store.factory import redact_url

    url = config.store_url
    if url.startswith("sqlite:"):
        import sqlite3

        from hurricane.store.sqlite import SqliteStore, prepare_database_files

        assert isinstance(store, SqliteStore)  # the factory's engine for sqlite: URLs
        try:
            # The file is created owner-only before SQLite ever opens it.
            prepare_database_files(store.path)
            sqlite3.connect(store.path, timeout=5).close()
        except (OSError, sqlite3.Error) as e:
            raise StartupError(f"cannot open store {redact_url(url)}: {e}") from None
    elif url.startswith(("postgresql:", "postgres:")):
        import psycopg2

        try:
            psycopg2.connect(url, connect_timeout=10).close()
        except psycopg2.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StartupError(f"cannot open store {redact_url(url)}: {first}") from None


def store_from_config(config: Config, reactor: IStoreReactor) -> IOutcomeStore:
    """The configured store engine, not yet opened.

    Raises:
        StoreError: for a URL or option the engines do not accept.
    """
    from hurricane.store.factory import create_store

    url = config.store_url
    options: dict[str, str | int | bool] = {}
    if url.startswith("sqlite:"):
        options["synchronous"] = config.store.sqlite_synchronous.upper()
    elif url.startswith(("postgresql:", "postgres:")):
        options["pool_size"] = config.store.pool_size
        options["prepared_statements"] = config.store.postgres_prepared_statements
    return create_store(url, reactor, data_dir=config.data_dir, **options)


def build_service(
    config: Config, reactor: IServerReactor, *, on_fatal: Callable[[str], None],
    preflight: bool = True,
) -> HurricaneService:
    """Build the whole service tree.

    Args:
        config: the validated configuration.
        reactor: the one reactor; each part gets it typed by what it needs.
        on_fatal: called when asynchronous start-up fails.
        preflight: check synchronously that the store is reachable.

    Raises:
        StartupError: for problems found before the reactor runs.
    """
    from hurricane.store.interface import StoreError
    from hurricane.verp import codec_from_config

    try:
        # Every message, returned mail, address and key lives here: 0700,
        # tightened (with a warning) when an existing one is wider.
        ensure_private_dir(config.data_dir)
    except OSError as e:
        raise StartupError(f"cannot make data_dir {config.data_dir} private: "
                           f"{e.strerror}") from None
    try:
        store = store_from_config(config, reactor)
    except StoreError as e:
        raise StartupError(str(e)) from None
    if preflight:
        _preflight_store(config, store)
    try:
        codec = codec_from_config(config)
    except (OSError, ValueError) as e:
        raise StartupError(f"VERP keys: {e}") from None

    root = HurricaneService(store, on_fatal, config)
    root.codec = codec
    root.reactor = reactor
    _build_components(root, config, reactor)
    return root


def add_listeners(root: HurricaneService, kind: str, descriptions: Sequence[str],
                  factory: IProtocolFactory, reactor: IServerReactor) -> None:
    """Attach one :class:`ListenerService` per endpoint string."""
    for description in descriptions:
        endpoint = endpoints.serverFromString(reactor, description)
        ListenerService(kind, description, endpoint, factory).setServiceParent(root)


class ThreadPoolService(Service):
    """A thread pool for CPU-bound work kept off the reactor thread.

    DKIM signing (pure Python), password hashing and bounce analysis run here.
    Started before the workers that use it, stopped after them.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str, max_threads: int) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)
        self.setName(name)

    def startService(self) -> None:
        """Start the threads."""
        Service.startService(self)
        self.pool.start()

    def stopService(self) -> None:
        """Join the threads (work in flight finishes first)."""
        Service.stopService(self)
        self.pool.stop()

    def run(self, work: Callable[[], _T]) -> Deferred[_T]:
        """Run ``work`` in the pool; a Deferred fires on the reactor thread."""
        return deferToThreadPool(self.reactor, self.pool, work)


def _build_components(root: HurricaneService, config: Config, reactor: IServerReactor) -> None:
    """Workers first (they start after the store), listeners last."""
    from hurricane.bounce.classify import ReplyClassifier
    from hurricane.credentials import SecretVerifier
    from hurricane.outbound.connector import Connector
    from hurricane.outbound.dialer import Dialer
    from hurricane.outbound.dkim import DkimSigner, threadpool_runner
    from hurricane.outbound.mx import MXResolver
    from hurricane.outbound.queue import OutboundService, OutboundSettings
    from hurricane.resolver import ResolverService
    from hurricane.unsubscribe import Unsubscriber, bulk_headers_from_config, codec_from_config

    store = root.store
    codec = root.codec
    assert codec is not None  # build_service set it
    hostname = config.server.hostname

    try:
        classifier = ReplyClassifier.load(config.bounce.rules_files)
    except (OSError, ValueError) as e:
        raise StartupError(f"[bounce] rules_files: {e}") from None
    root.classifier = classifier

    work = ThreadPoolService(reactor, "hurricane-work", max_threads=4)
    work.setServiceParent(root)
    # Password hashing gets a pool of its own: a flood of wrong passwords
    # (each pbkdf2 ~40 ms) then waits for its threads instead of taking the
    # pool that signs DKIM and analyzes bounces, and never the reactor. Half
    # the cores at most (pbkdf2 releases the GIL, so each thread can take a
    # whole core): the reactor keeps the other half.
    auth = ThreadPoolService(reactor, "hurricane-auth",
                             max_threads=max(1, (os.cpu_count() or 2) // 2))
    auth.setServiceParent(root)
    verifier = SecretVerifier(auth.run)
    root.verifier = verifier

    try:
        dkim = (DkimSigner.from_config(config.delivery.dkim,
                                       threadpool_runner(reactor, work.pool))
                if config.delivery.dkim else None)
    except (OSError, ValueError) as e:
        raise StartupError(f"[delivery] dkim: {e}") from None

    processor = _build_processor(root, config, reactor, work.pool)
    try:
        dns = ResolverService(reactor)
    except OSError as e:
        raise StartupError(f"cannot read /etc/resolv.conf: {e.strerror}") from None
    dns.setServiceParent(root)
    resolver = MXResolver(
        dns.resolver, reactor, config.routes, config.delivery.mx_cache_seconds,
    )
    root.resolver = resolver
    connector = Connector(reactor, config.delivery.timeouts,
                          bind_address=config.delivery.bind_address)
    from hurricane.outbound.mtasts import txt_lookup
    from hurricane.outbound.pools import transport_services
    from hurricane.outbound.warmup import mx_provider
    pools, sts, transport = transport_services(config.delivery, reactor,
                                               txt_lookup(dns.resolver), store)
    for service in transport:  # issue 21: warm-up first uses, MTA-STS refresh
        service.setServiceParent(root)
    gate = _build_gate(config, reactor)
    providers = gate.limiter.providers
    dialer = Dialer(resolver, connector, hostname, config.delivery.tls_policy, pools=pools,
                    sts=sts, provider_of=lambda domain, mx: providers.warmup_name(
                        domain, mx, mx_provider))
    unsubscribe_codec = codec_from_config(config)
    root.unsubscriber = Unsubscriber(unsubscribe_codec, store, reactor)
    headers = bulk_headers_from_config(config, dkim, unsubscribe_codec)
    outbound = OutboundService(
        store, dialer, codec, classifier,
        dataclasses.replace(OutboundSettings.for_server(config), stream_headers=headers),
        reactor, dkim,
    )
    outbound.use_gate(gate)
    store.complaint_global_streams = frozenset(
        s.name for s in config.stream_set if s.complaint_global)
    outbound.setServiceParent(root)
    root.outbound = outbound
    from hurricane.tlsrpt import tlsrpt_service
    for service in tlsrpt_service(config, store, reactor, txt_lookup(dns.resolver),
                                  outbound.wake):
        service.setServiceParent(root)
    _build_policy(root, config, reactor, outbound, gate)
    _build_listeners(root, config, reactor, outbound, processor, verifier)


def _build_listeners(root: HurricaneService, config: Config, reactor: IServerReactor,
                     outbound: OutboundService, processor: BounceProcessor,
                     verifier: SecretVerifier) -> None:
    """Submission and bounce factories, feeds, operations, then the listeners."""
    from hurricane.inbound.server import build_bounce_factory
    from hurricane.submission.server import build_submission_factory

    store = root.store
    codec = root.codec
    assert codec is not None  # build_service set it
    hostname = config.server.hostname
    try:
        submission = build_submission_factory(
            config.submission, store, hostname, reactor, on_enqueued=outbound.wake,
            verifier=verifier,
        )
        submission.streams = frozenset(config.stream_set.names())
        bounce = build_bounce_factory(
            config.bounce, codec, store, hostname, reactor, on_stored=processor.submit,
        )
        bounce.unsubscriber = root.unsubscriber
    except (OSError, ValueError) as e:
        raise StartupError(str(e)) from None
    _build_feeds(root, config, reactor)
    _build_policy_feeds(root, config, reactor)
    operations = root.operations = _build_operations(root, reactor, outbound, processor)
    add_listeners(root, "submission", config.submission.listen, submission, reactor)
    add_listeners(root, "bounce", config.bounce.listen, bounce, reactor)
    _build_web_and_admin(root, config, reactor, outbound, operations)


def _build_gate(config: Config, reactor: IServerReactor) -> ProviderGate:
    """The provider budgets of the destination pool (issue 19)."""
    from hurricane.outbound.providers import ProviderGate
    from hurricane.policy.providers import ProviderLimiter, ProviderMap

    return ProviderGate(ProviderLimiter(ProviderMap(config.delivery), config.delivery.adaptive),
                        reactor)


def _build_policy(root: HurricaneService, config: Config, reactor: IServerReactor,
                  outbound: OutboundService, gate: ProviderGate) -> None:
    """The policy loop (shared provider state, late outcomes, mailing breakers),
    on an SQL store; with the memory store the budgets stay this process's own."""
    from hurricane.policy.service import PolicyService, PolicySettings
    from hurricane.store.policy import policy_store

    pstore = policy_store(root.store)
    if pstore is None:
        return
    policy = PolicyService(pstore, outbound, gate, PolicySettings(config.node_id,
                                                                  config.delivery), reactor)
    gate.on_action = policy.action
    policy.setServiceParent(root)
    root.policy = policy


def _build_policy_feeds(root: HurricaneService, config: Config,
                        reactor: IServerReactor) -> None:
    """Policy events to the accounting log and to the webhooks that take them."""
    from hurricane.accounting import CursorFile
    from hurricane.policy.feeds import PolicyFeed, accounting_handler, webhook_handler
    from hurricane.store.policy import policy_store

    pstore = policy_store(root.store)
    if pstore is None:
        return
    cursors = os.path.join(config.data_dir, "cursors")
    try:
        if root.accounting is not None:
            PolicyFeed("policy-accounting", pstore, reactor,
                       CursorFile(os.path.join(cursors, "policy-accounting.json")),
                       accounting_handler(root.accounting)).setServiceParent(root)
        for endpoint in root.webhooks.endpoints() if root.webhooks is not None else []:
            handler = webhook_handler(endpoint)
            if handler is not None:
                name = str(endpoint.name).split(":", 1)[-1]
                PolicyFeed(f"policy-{endpoint.name}", pstore, reactor,
                           CursorFile(os.path.join(cursors, f"policy-webhook-{name}.json")),
                           handler).setServiceParent(root)
    except (OSError, ValueError) as e:
        raise StartupError(str(e)) from None


def _build_processor(root: HurricaneService, config: Config, reactor: IServerReactor,
                     pool: ThreadPool) -> BounceProcessor:
    """The bounce processor (and the retention of returned mail), children of ``root``."""
    from hurricane.bounce.analyze import AnalysisLimits
    from hurricane.inbound.executor import build_executor
    from hurricane.inbound.processor import BounceProcessor, ProcessorConfig
    from hurricane.inbound.retention import BounceRetention

    store, codec, classifier = root.store, root.codec, root.classifier
    assert codec is not None and classifier is not None  # built before
    b = config.bounce
    limits = AnalysisLimits(
        max_bytes=b.max_message_size, max_depth=b.analysis_max_depth,
        max_parts=b.analysis_max_parts, cpu_seconds=b.analysis_cpu_seconds,
    )
    # Analysis in worker processes keeps it off the GIL of the reactor, which
    # serves SMTP and the store; started on the first analysis, stopped with
    # the processor. analysis_processes = 0: in the shared thread pool.
    executor = build_executor(reactor, processes=b.analysis_processes, threadpool=pool,
                              limits=limits, classifier=classifier, rules_files=b.rules_files)
    # Four batches in flight keep every stage busy (load, analysis in the
    # worker, correlation, recording): bench/inbound.py, 3,000 returns,
    # recorded/s 1,475-1,521 with two, 1,600-1,621 with four. A batch beside
    # others in flight waits for eight messages: batches of one or two, as
    # returns arrive, cost ~1 ms of CPU each (see ProcessorConfig.min_batch).
    processor = BounceProcessor(store, codec, reactor, executor,
                                ProcessorConfig(concurrency=4, min_batch=8))
    processor.setServiceParent(root)
    root.processor = processor
    if b.retention > 0:
        retention = BounceRetention(store, reactor, b.retention)
        retention.setServiceParent(root)
        root.retention = retention
    return processor


def _build_operations(root: HurricaneService, reactor: IServerReactor,
                      outbound: OutboundService, processor: BounceProcessor) -> Operations:
    """The one Operations of the process, with every component's counters for stats()."""
    counters: dict[str, Counters] = {"outbound": outbound, "processor": processor}
    if root.accounting is not None:
        counters["accounting"] = root.accounting
    if root.webhooks is not None:
        counters["webhooks"] = root.webhooks
    if root.unsubscriber is not None:
        counters["unsubscribe"] = root.unsubscriber
    return Operations(root.store, reactor, outbound, processor=processor, counters=counters,
                      limiter=outbound.gate.limiter if outbound.gate is not None else None,
                      streams=root.config.stream_set)


def _build_feeds(root: HurricaneService, config: Config, reactor: IServerReactor) -> None:
    """The accounting log and webhooks: followers of the event feed."""
    from hurricane.accounting import build_accounting_service
    from hurricane.webhooks import build_webhooks_service

    try:
        accounting = build_accounting_service(
            config.accounting, root.store, reactor, config.data_dir, node_id=config.node_id)
        hooks = build_webhooks_service(config.webhooks, root.store, reactor, config.data_dir)
    except (OSError, ValueError) as e:
        raise StartupError(str(e)) from None
    if accounting is not None:
        accounting.setServiceParent(root)
        root.accounting = accounting
    if hooks is not None:
        hooks.setServiceParent(root)
        root.webhooks = hooks


def _build_web_and_admin(root: HurricaneService, config: Config, reactor: IServerReactor,
                         outbound: OutboundService, operations: Operations) -> None:
    """The web report/API/metrics site and the SSH manhole (listeners, started last)."""
    from hurricane.admin.manhole import build_manhole_service
    from hurricane.report.web import build_web_site

    try:
        site = build_web_site(config, root.store, reactor, on_enqueued=outbound.wake,
                              operations=operations, codec=root.codec,
                              verifier=root.verifier, unsubscriber=root.unsubscriber)
        admin = build_manhole_service(config, root, reactor, operations=operations,
                                      verifier=root.verifier)
    except (OSError, ValueError) as e:
        raise StartupError(str(e)) from None
    root.site = site
    add_listeners(root, "web", config.web.listen, site, reactor)
    if config.unsubscribe.listen and root.unsubscriber is not None:
        from hurricane.report.unsubscribe import build_unsubscribe_site

        add_listeners(root, "unsubscribe", config.unsubscribe.listen,
                      build_unsubscribe_site(site, root.unsubscriber, reactor), reactor)
    if admin is not None:
        admin.setServiceParent(root)
