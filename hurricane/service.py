"""The service tree: store first, then workers, then listeners; stop in reverse.

``HurricaneService`` is the one ``MultiService`` that twistd runs. It opens
(and migrates) the store before any child starts, starts its children in the
order they were added, and stops them in reverse order, waiting for each,
before it closes the store (Buildbot's ``AsyncMultiService`` does the same).
Listeners bind in ``startService``, never in ``privilegedStartService``, so no
connection is accepted before the store is ready; port 25 in production comes
from ``CAP_NET_BIND_SERVICE`` (see ``etc/hurricane.service``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from hurricane.config import Config
from hurricane.store.interface import IOutcomeStore

if TYPE_CHECKING:
    # Types only: the parts import this module (ListenerService), not the reverse.
    from hurricane.accounting import AccountingService
    from hurricane.bounce.classify import ReplyClassifier
    from hurricane.credentials import SecretVerifier
    from hurricane.inbound.processor import BounceProcessor
    from hurricane.inbound.retention import BounceRetention
    from hurricane.operations import Operations
    from hurricane.outbound.mx import MXResolver
    from hurricane.outbound.queue import OutboundService
    from hurricane.policy.service import PolicyService
    from hurricane.reactors import IServerReactor
    from hurricane.report.web import HurricaneSite
    from hurricane.unsubscribe import Unsubscriber
    from hurricane.verp import VerpCodec
    from hurricane.webhooks import WebhooksService

log = Logger()


class ListenerService(Service):
    """Listens on one endpoint and logs the address it got.

    Args:
        kind: what listens (``submission``, ``bounce``, ``web``, ``admin``).
        description: the endpoint string from the configuration.
        endpoint: the parsed endpoint.
        factory: the protocol factory to serve.
    """

    def __init__(
        self, kind: str, description: str, endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
    ) -> None:
        self.kind = kind
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self.setName(f"{kind}:{description}")

    def privilegedStartService(self) -> None:
        """Bind nothing before the store is open (see the module docstring)."""

    async def listen(self) -> IListeningPort:
        """Start listening; log one structured line with the bound address."""
        self.port = await self.endpoint.listen(self.factory)
        address = self.port.getHost()
        log.info(
            "{kind} listening on {host}:{port} ({description})",
            kind=self.kind,
            host=getattr(address, "host", str(address)),
            port=getattr(address, "port", ""),
            description=self.description,
            listener=self.kind,
        )
        return self.port

    def startService(self) -> None:
        """Mark running; :class:`HurricaneService` awaits :meth:`listen`."""
        Service.startService(self)

    def stopService(self) -> defer.Deferred[object] | None:
        """Stop listening; existing connections are left to finish."""
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None


class HurricaneService(MultiService):
    """The root of the service tree.

    The parts :func:`hurricane.app.build_service` makes are typed attributes
    (for the admin console and the tests); each is None in a tree built
    without it (a test's bare root, or a part the configuration turns off:
    ``retention``, ``accounting``, ``webhooks``).

    Args:
        store: opened first, closed last.
        on_fatal: called with a message when start-up fails (twistd stops the
            reactor and exits non-zero); tests pass a recorder.
        config: the configuration the tree was built from.
    """

    def __init__(self, store: IOutcomeStore, on_fatal: Callable[[str], None],
                 config: Config | None = None) -> None:
        super().__init__()
        self.store = store
        self.on_fatal = on_fatal
        self.config = config if config is not None else Config()
        self.started: defer.Deferred[None] | None = None
        self.stopped: defer.Deferred[None] | None = None
        #: twistd's text log observer, set on the application (see setServiceParent).
        self.log_observer: ILogObserver | None = None
        self.reactor: IServerReactor | None = None
        self.codec: VerpCodec | None = None
        self.verifier: SecretVerifier | None = None
        self.classifier: ReplyClassifier | None = None
        self.processor: BounceProcessor | None = None
        #: Records one-click and mailto unsubscribes (issue 20).
        self.unsubscriber: Unsubscriber | None = None
        self.retention: BounceRetention | None = None
        self.resolver: MXResolver | None = None
        self.outbound: OutboundService | None = None
        #: Closed-loop delivery (issue 19): None on the memory store.
        self.policy: PolicyService | None = None
        self.accounting: AccountingService | None = None
        self.webhooks: WebhooksService | None = None
        #: Every operator action (the console, the report's forms and the API use it).
        self.operations: Operations | None = None
        self.site: HurricaneSite | None = None

    def setServiceParent(self, parent: IServiceCollection) -> None:
        """Join ``parent``; under twistd, also give its application our log observer.

        twistd creates the application, adds this service to it, then starts
        logging with the application's ``ILogObserver`` component when it has
        one (``twisted.application.app.AppLogger.start``).
        """
        super().setServiceParent(parent)
        if self.log_observer is not None and isinstance(parent, Componentized) \
                and parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, self.log_observer)

    def privilegedStartService(self) -> None:
        """Nothing binds early; see :class:`ListenerService`."""

    def startService(self) -> None:
        """Open the store, then start children in order; ``started`` fires when done."""
        Service.startService(self)
        self.started = defer.Deferred.fromCoroutine(self._start())
        self.started.addErrback(self._start_failed)

    async def _start(self) -> None:
        log.info("opening store {url}", url=self.store.url)
        await self.store.open()
        for child in list(self):
            if not self.running:  # stopped while starting
                return
            result = child.startService()
            if isinstance(result, defer.Deferred):
                await result
            if isinstance(child, ListenerService):
                await child.listen()
        log.info("hurricane started")

    def _start_failed(self, failure: Failure) -> None:
        log.failure("start-up failed", failure)
        self.on_fatal(f"start-up failed: {failure.getErrorMessage()}")

    def stopService(self) -> defer.Deferred[None]:
        """Stop children in reverse order, waiting for each, then close the store."""
        self.stopped = defer.Deferred.fromCoroutine(self._stop())
        return self.stopped

    async def _stop(self) -> None:
        Service.stopService(self)
        if self.started is not None and not self.started.called:
            # let a start in progress reach a resting point first
            try:
                await self.started
            except Exception:  # already reported by _start_failed
                pass
        for child in reversed(list(self)):
            if not child.running:
                continue
            try:
                result = child.stopService()
                if isinstance(result, defer.Deferred):
                    await result
            except Exception:
                log.failure("stopping {name} failed", name=child.name)
        await self.store.close()
        log.info("hurricane stopped")
