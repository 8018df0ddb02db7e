"""The SSH manhole: a Python console inside the running server.

Off unless ``[admin] enabled = true``; listens on ``[admin] listen``
(``tcp:8022:interface=127.0.0.1`` by default). SSH only, never telnet.

Logging in:
    public keys from an OpenSSH ``authorized_keys`` file (``[admin]
    authorized_keys``), re-read at each login so a key added or removed takes
    effect at once. Any user name is accepted with an authorized key unless
    ``[admin] usernames`` lists the allowed ones. Passwords are refused unless
    ``[admin.passwords]`` maps names to hashes made by ``hurricane passwd``
    (:mod:`hurricane.passwords`); they are then checked off the reactor thread.

Host key:
    ``<data_dir>/admin_ssh_host_ed25519_key`` (or ``[admin] host_key``),
    generated as an OpenSSH ed25519 private key with mode 0600 on first start.

The console:
    each connection gets a fresh namespace built from the live root service
    (Buildbot's ``makeNamespace``): ``service`` (the root), ``store``,
    ``outbound``, ``processor``, ``codec``, ``classifier``, ``config``,
    ``reactor``, ``operations`` and the helpers below, each a call of
    :class:`~hurricane.operations.Operations` (what the web report, the API
    and the ``hurricane`` command do too). Helpers return Deferreds; the
    console prints each result when it fires.

    ``stats()``                   scheduler, bounce processor and feed counters, queue depth
    ``find(address, limit=20)``   the deliveries of a recipient, newest first
    ``events(delivery_id)``       the events of one delivery
    ``retry(queue_id)``           make a message's deferred recipients due now
    ``release(node_id)``          give back the leases of a node that died
    ``suppress(address, reason="operator", note=None, scope=None)``
                                  scope: global (None), "stream:NAME", "mailing:ID", "domain"
    ``unsuppress(address, scope=None)``
    ``suppressions(address=None, scope=None)``  entries naming an address, or a page of all
    ``replay(bounce_id)``         re-analyze a stored returned message (after a rule change)
    ``providers()``               provider limits as they adapted, recent actions (issue 19)
    ``release_mailing(mailing_id)``  send a held mailing's recipients (breaker stays off)
    ``cancel_mailing(mailing_id)``   cancel a held mailing's recipients (final)
    ``help()``                    this list

Two ways to use it:
    interactive (``ssh -p 8022 ops@127.0.0.1``): with a terminal, a colored
    line editor with history (``twisted.conch.manhole.ColoredManhole``);
    scripted, with no terminal (``echo 'stats()' | ssh -T ...`` or ``ssh ...
    'stats()'``): a plain line interpreter without prompts, which waits for
    pending Deferreds after the end of input, then exits with status 0, or 1
    when a statement raised. Every statement is logged with the user name.
"""

from __future__ import annotations

import os
import pprint
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Protocol, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser, ISession
from twisted.conch.ssh import keys, session
from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, endpoints, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import components
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from hurricane.config import Config
from hurricane.credentials import PasswordBook, SecretVerifier, VerifierBusy, threadpool_runner
from hurricane.filemodes import make_dirs, tighten
from hurricane.model import Delivery, Event
from hurricane.operations import Operations
from hurricane.reactors import IConsoleReactor
from hurricane.service import HurricaneService, ListenerService

__all__ = [
    "AuthorizedKeysFile",
    "ConsoleInterpreter",
    "ConsoleRealm",
    "ConsoleSession",
    "LineConsole",
    "ManholeFactory",
    "HashedPasswordChecker",
    "ManholeConfigError",
    "build_manhole_factory",
    "build_manhole_service",
    "ensure_host_key",
    "make_namespace",
]

log = Logger()

_T = TypeVar("_T")

HOST_KEY_NAME = "admin_ssh_host_ed25519_key"

#: Seconds a scripted session waits for pending Deferreds after its input ended.
SCRIPT_WAIT = 60.0

HELP = __doc__.split("The console:", 1)[1].split("Two ways", 1)[0] if __doc__ else ""


class ManholeConfigError(ValueError):
    """The console cannot start with this configuration (names the key)."""


# -- host key -------------------------------------------------------------------


def ensure_host_key(path: str) -> keys.Key:
    """Load the SSH host key, generating an ed25519 key (mode 0600) on first use.

    A key file readable by others is made private again (and logged).

    Raises:
        OSError: the file cannot be written or read.
        keys.BadKeyError: the file is not a private key.
    """
    if not os.path.exists(path):
        make_dirs(os.path.dirname(os.path.abspath(path)))
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        log.info("generated the admin console host key {path}", path=path)
    tighten(path)
    key: keys.Key = keys.Key.fromFile(path)
    log.info("admin console host key {fingerprint}",
             fingerprint=key.fingerprint(keys.FingerprintFormats.SHA256_BASE64))
    return key


# -- authentication -------------------------------------------------------------


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys of one OpenSSH ``authorized_keys`` file, for any (or listed) user names.

    Read at each login: edits take effect without a restart. Options before a
    key (``from=...``) are not supported; such lines are skipped and logged.

    Args:
        path: the file.
        usernames: the names that may log in; empty accepts any name.
    """

    def __init__(self, path: str, usernames: Collection[str] = ()) -> None:
        self.path = path
        self.usernames = frozenset(usernames)

    def getAuthorizedKeys(self, username: bytes) -> list[keys.Key]:
        """The keys that may log in as ``username``."""
        name = username.decode("utf-8", "replace")
        if self.usernames and name not in self.usernames:
            log.info("admin console: user {user} is not allowed", user=name)
            return []
        try:
            with open(self.path, "rb") as fp:
                return list(readAuthorizedKeyFile(fp))
        except OSError as e:
            log.error("cannot read {path}: {error}", path=self.path, error=e.strerror)
            return []


@implementer(ICredentialsChecker)
class HashedPasswordChecker:
    """User names and passwords checked against :mod:`hurricane.passwords` hashes.

    The hash (PBKDF2, about 40 ms) runs in the verifier's thread pool, and an
    unknown name costs a dummy hash of the same cost, so timing does not tell
    names apart (:class:`~hurricane.credentials.PasswordBook`).

    Args:
        users: name -> hash.
        verifier: the process's verifier (its thread pool).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: Mapping[str, str], verifier: SecretVerifier) -> None:
        self.users = dict(users)
        self.book = PasswordBook(users, verifier)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes | tuple[()]]:
        """The user name when the password matches, else UnauthorizedLogin."""
        username = credentials.username
        name = username.decode("utf-8", "replace") if isinstance(username, bytes) else username
        secret = credentials.password
        password = secret.decode("utf-8", "replace") if isinstance(secret, bytes) else secret

        def checked(ok: bool) -> bytes | tuple[()]:
            if ok:
                return name.encode("utf-8")
            raise cred_error.UnauthorizedLogin("bad user name or password")

        def busy(failure: Failure) -> bytes | tuple[()]:
            failure.trap(VerifierBusy)
            raise cred_error.UnauthorizedLogin("too many logins being checked; try again")

        return self.book.check(name, password).addCallbacks(checked, busy)


# -- the namespace --------------------------------------------------------------


#: A console's globals.
Namespace = dict[str, object]


def _delivery_summary(delivery: Delivery) -> dict[str, object]:
    fields = ("delivery_id", "queue_id", "recipient", "state", "reason", "hard", "code",
              "status", "text", "attempts", "remote_host", "mailing_id", "message_id",
              "updated_at")
    summary = {name: getattr(delivery, name, None) for name in fields}
    summary["state"] = getattr(summary["state"], "value", summary["state"])
    return summary


def make_namespace(root: HurricaneService, operations: Operations) -> Namespace:
    """A fresh console namespace over the live service tree.

    Args:
        root: the running root service (its parts are exposed by name).
        operations: what the helpers do.
    """
    def later(coro: Coroutine[Deferred[object], object, _T]) -> Deferred[_T]:
        return Deferred.fromCoroutine(coro)

    def stats() -> Deferred[dict[str, object]]:
        """Scheduler, bounce processor, accounting and webhook counters, queue depth."""
        return later(operations.stats())

    def find(address: str, limit: int = 20) -> Deferred[list[dict[str, object]]]:
        """The deliveries of one recipient address, newest first."""
        async def search() -> list[dict[str, object]]:
            return [_delivery_summary(d) for d in await operations.find(address, limit=limit)]
        return later(search())

    def events(delivery_id: int) -> Deferred[list[Event]]:
        """Every event of one delivery, in order."""
        return later(operations.events(delivery_id))

    def retry(queue_id: str) -> Deferred[int]:
        """Make the deferred recipients of a message due now; return how many."""
        return later(operations.retry(queue_id=queue_id))

    def release(node_id: str) -> Deferred[int]:
        """Give back every lease a (dead) node holds; return how many."""
        return later(operations.release(node_id))

    def suppress(address: str, reason: str = "operator",
                 note: str | None = None, scope: str | None = None) -> Deferred[bool]:
        """Add an address to the suppression list (of one scope); False if it was there."""
        async def add() -> bool:
            return (await operations.suppress_scoped(address, scope, reason, note)).changed
        return later(add())

    def unsuppress(address: str, scope: str | None = None) -> Deferred[bool]:
        """Remove an address's entry of one scope; False if it was not there."""
        async def remove() -> bool:
            return (await operations.unsuppress_scoped(address, scope)).changed
        return later(remove())

    def suppressions(address: str | None = None,
                     scope: str | None = None) -> Deferred[list[dict[str, object]]]:
        """The entries naming an address (its domain's too), or the first 100 entries."""
        async def entries() -> list[dict[str, object]]:
            found = (await operations.suppression_entries(address) if address is not None
                     else await operations.list_suppressions(scope, None, 100))
            return [e.as_dict() for e in found]
        return later(entries())

    def replay(bounce_id: int) -> Deferred[object]:
        """Analyze a stored returned message again (after a rule change)."""
        return later(operations.replay(bounce_id))

    def providers() -> Deferred[list[dict[str, object]]]:
        """Provider budgets: configured and current limits, recent actions."""
        return later(operations.providers())

    def release_mailing(mailing_id: str) -> Deferred[int]:
        """Send a held mailing's recipients; return how many."""
        return later(operations.release_mailing(mailing_id, "console"))

    def cancel_mailing(mailing_id: str) -> Deferred[int]:
        """Cancel a held mailing's recipients; return how many."""
        return later(operations.cancel_mailing(mailing_id, "console"))

    def help() -> None:  # noqa: A001 - the console's own help
        """Print the helpers."""
        print(HELP.rstrip())

    return {
        "service": root,
        "store": root.store,
        "outbound": root.outbound,
        "processor": root.processor,
        "codec": root.codec,
        "classifier": root.classifier,
        "config": root.config,
        "reactor": root.reactor,
        "operations": operations,
        "stats": stats,
        "find": find,
        "events": events,
        "retry": retry,
        "release": release,
        "suppress": suppress,
        "unsuppress": unsuppress,
        "suppressions": suppressions,
        "replay": replay,
        "providers": providers,
        "release_mailing": release_mailing,
        "cancel_mailing": cancel_mailing,
        "help": help,
    }


# -- the interpreter ------------------------------------------------------------


class _Output(Protocol):
    """Where an interpreter's output goes (a console protocol)."""

    def addOutput(self, data: str, isAsync: bool | None = None) -> None:  # noqa: N802, N803
        """Show ``data``."""


class ConsoleInterpreter(manhole.ManholeInterpreter):
    """ManholeInterpreter that pretty-prints, prints fired Deferreds' results at
    once, counts errors (the exit status of scripts) and logs every statement.

    Args:
        handler: has ``addOutput(text, isAsync)``.
        namespace: the console's globals.
        user: for the audit log.
    """

    def __init__(self, handler: _Output, namespace: Namespace, user: str) -> None:
        super().__init__(handler, namespace)
        self.user = user
        self.errors = 0
        self.pending: dict[int, Deferred[object]] = {}
        self._count = 0

    def runsource(self, source: str, filename: str = "<console>",
                  symbol: str = "single") -> bool:
        """Compile and run one statement; log it when it is complete."""
        more: bool = super().runsource(source, filename, symbol)
        if not more and source.strip():
            log.info("admin console {user}: {source}", user=self.user, source=source)
        return more

    def showtraceback(self) -> None:
        """Count the error, then print it."""
        self.errors += 1
        super().showtraceback()

    def showsyntaxerror(self, filename: str | None = None, **kwargs: object) -> None:
        """Count the error, then print it."""
        self.errors += 1
        super().showsyntaxerror(filename, **kwargs)

    def displayhook(self, obj: object) -> None:
        """Show a value; a Deferred's result is shown when it fires."""
        self.locals["_"] = obj
        if isinstance(obj, Deferred):
            self._count += 1
            number = self._count
            self.pending[number] = obj
            self._displaying = number  # a result that is already there prints in line
            try:
                obj.addCallbacks(self._fired, self._failed, callbackArgs=(number,),
                                 errbackArgs=(number,))
            finally:
                self._displaying = None
            if number in self.pending:
                self.write(f"<Deferred #{number}: waiting>")
        elif obj is not None:
            self.write(pprint.pformat(obj, width=100, sort_dicts=False))

    _displaying: int | None = None

    def _fired(self, result: object, number: int) -> object:
        self.pending.pop(number, None)
        text = pprint.pformat(result, width=100, sort_dicts=False)
        if self._displaying == number:
            self.write(text)
        else:
            self.write(f"Deferred #{number}: {text}", True)
        return result

    def _failed(self, failure: Failure, number: int) -> None:
        self.pending.pop(number, None)
        self.errors += 1
        text = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        if self._displaying == number:
            self.write(text)
        else:
            self.write(f"Deferred #{number} failed: {text}", True)
        return None  # handled: printed, never "Unhandled error in Deferred"


class ColoredConsole(manhole.ColoredManhole):
    """The interactive console (with a terminal), using :class:`ConsoleInterpreter`."""

    def __init__(self, namespace: Namespace, user: str) -> None:
        super().__init__(namespace)
        self.user = user

    def connectionMade(self) -> None:
        """Set up the line editor, then replace the interpreter with ours."""
        super().connectionMade()
        namespace = cast(Namespace, self.namespace)  # a dict, set by Manhole.__init__
        self.interpreter = ConsoleInterpreter(self, namespace, self.user)
        self.terminal.write(b"Hurricane admin console; help() lists the helpers.")
        self.terminal.nextLine()
        self.terminal.write(self.ps[self.pn])


class SessionProcess(Protocol):
    """What the consoles ask of the SSH session's process protocol
    (conch's ``SSHSessionProcessProtocol``): a connection to our console,
    its output, and the exit status."""

    def makeConnection(self, transport: LineConsole) -> None: ...  # noqa: N802

    def outReceived(self, data: bytes) -> None: ...  # noqa: N802

    def processEnded(self, reason: Failure) -> None: ...  # noqa: N802


_BLOCK_CONTINUATIONS = (b"else", b"elif", b"except", b"finally", b"case")


class LineConsole:
    """The scripted console (no terminal): lines in, plain text out, no prompts.

    It is the *transport* of the SSH session's process protocol: what the
    client sends arrives in :meth:`write`; output goes to ``outReceived``.

    Args:
        process: the SSH session's process protocol.
        namespace: the console's globals.
        user: for the audit log.
        clock: bounds the wait for pending Deferreds at the end.
    """

    def __init__(self, process: SessionProcess, namespace: Namespace, user: str,
                 clock: IReactorTime) -> None:
        self.process = process
        self.clock = clock
        self.interpreter = ConsoleInterpreter(self, namespace, user)
        self._buffer = b""
        self._at_line_start = True
        self._finishing = False
        self._done = False

    # -- the transport the process protocol sees -----------------------------

    def write(self, data: bytes) -> None:
        """Input from the client: run each complete line."""
        if self._finishing:
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.push(line.rstrip(b"\r"))

    def writeSequence(self, seq: list[bytes]) -> None:
        """Input from the client."""
        self.write(b"".join(seq))

    def loseConnection(self) -> None:
        """The channel is going away."""
        self._done = True

    def getPeer(self) -> None:
        """Unused; part of the transport interface."""
        return None

    def getHost(self) -> None:
        """Unused; part of the transport interface."""
        return None

    # -- running -------------------------------------------------------------

    def push(self, line: bytes) -> None:
        """Run one line (or add it to an unfinished block).

        A script needs no blank line after a block, as in a file: an
        unindented line after ``for ...:`` ends the block first (unless it
        continues it: ``else``, ``elif``, ``except``, ``finally``).
        """
        buffered = self.interpreter.buffer
        if (buffered and line.strip() and not line[:1].isspace()
                and buffered[0].split(b"#", 1)[0].rstrip().endswith(b":")
                and not line.lstrip().startswith(_BLOCK_CONTINUATIONS)):
            self.interpreter.push(b"")
            if not self._at_line_start:
                self._emit("\n")
        self.interpreter.push(line)
        if not self._at_line_start:
            self._emit("\n")

    def addOutput(self, data: str | bytes, isAsync: bool | None = None) -> None:
        """Output from the interpreter (``print``, results, tracebacks)."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if isAsync and not self._at_line_start:
            self._emit("\n")
        self._emit(text)
        if isAsync and not self._at_line_start:
            self._emit("\n")

    def _emit(self, text: str) -> None:
        if not text or self._done:
            return
        self._at_line_start = text.endswith("\n")
        self.process.outReceived(text.encode("utf-8"))

    def finish(self) -> None:
        """End of input: run what is left, wait for pending results, then exit."""
        if self._finishing:
            return
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self.push(line.rstrip(b"\r"))
        self._finishing = True
        if self.interpreter.buffer:  # close an unfinished block
            self.push(b"")
        pending = list(self.interpreter.pending.values())
        if not pending:
            self._exit()
            return
        waiting: Deferred[list[tuple[bool, object]]] = defer.DeferredList(
            pending, consumeErrors=True)
        waiting.addTimeout(SCRIPT_WAIT, self.clock)
        waiting.addBoth(lambda _: self._exit())

    def _exit(self) -> None:
        if self._done:
            return
        status = 1 if self.interpreter.errors else 0
        self.process.processEnded(Failure(error.ProcessTerminated(exitCode=status))
                                  if status else Failure(error.ProcessDone(0)))
        self._done = True


# -- SSH session and realm ------------------------------------------------------


class _TerminalTransport(manhole_ssh.TerminalSessionTransport):
    """Conch's terminal glue, but leaving the console (^D) sends exit status 0.

    Conch's own closes the channel without a status, and OpenSSH then exits 255.
    """

    def __init__(self, proto: SessionProcess, chained: insults.ServerProtocol,
                 avatar: IConchUser, width: int,
                 height: int) -> None:
        super().__init__(proto, chained, avatar, width, height)
        ended: list[bool] = []

        def lose_connection() -> None:
            if not ended:
                ended.append(True)
                proto.processEnded(Failure(error.ProcessDone(0)))

        chained.transport.loseConnection = lose_connection  # type: ignore[method-assign,union-attr]


@implementer(ISession)
class ConsoleSession(components.Adapter):
    """One SSH session: the colored console with a PTY, the line console without.

    Args:
        original: the avatar's Componentized.
        namespace_factory: makes a fresh namespace.
        clock: for the line console.
        user: the authenticated name.
    """

    def __init__(self, original: components.Componentized,
                 namespace_factory: Callable[[], Namespace],
                 clock: IReactorTime, user: str) -> None:
        super().__init__(original)
        self.namespace_factory = namespace_factory
        self.clock = clock
        self.user = user
        self.window: tuple[int, int] | None = None  # (rows, columns)
        self.terminal: insults.ServerProtocol | None = None
        self.console: LineConsole | None = None

    def getPty(self, term: bytes, windowSize: Sequence[int], attrs: object) -> None:
        """A terminal was requested: the shell will be the colored console."""
        self.window = (windowSize[0], windowSize[1])

    def openShell(self, proto: SessionProcess) -> None:
        """Start the console on the session."""
        namespace = self.namespace_factory()
        if self.window is None:
            self._line_console(proto, namespace)
            return
        rows, columns = self.window
        self.terminal = insults.ServerProtocol(ColoredConsole, namespace, self.user)
        _TerminalTransport(proto, self.terminal, IConchUser(self.original), columns, rows)

    def execCommand(self, proto: SessionProcess, command: bytes) -> None:
        """``ssh host 'expression'``: run it in a line console, then exit."""
        console = self._line_console(proto, self.namespace_factory())
        console.write(command + b"\n")
        console.finish()

    def _line_console(self, proto: SessionProcess, namespace: Namespace) -> LineConsole:
        self.console = LineConsole(proto, namespace, self.user, self.clock)
        proto.makeConnection(self.console)
        return self.console

    def windowChanged(self, newWindowSize: Sequence[int]) -> None:
        """Resize the line editor."""
        if self.terminal is not None and self.terminal.terminalProtocol is not None:
            self.terminal.terminalProtocol.terminalSize(newWindowSize[1], newWindowSize[0])

    def eofReceived(self) -> None:
        """End of the client's input: a line console finishes and exits."""
        if self.console is not None:
            self.console.finish()

    def closed(self) -> None:
        """The session closed."""
        if self.console is not None:
            self.console.loseConnection()


@implementer(IRealm)
class ConsoleRealm:
    """Gives each login an SSH avatar whose sessions run the console.

    Args:
        namespace_factory: makes a fresh namespace per session.
        clock: for the line console.
    """

    def __init__(self, namespace_factory: Callable[[], Namespace],
                 clock: IReactorTime) -> None:
        self.namespace_factory = namespace_factory
        self.clock = clock

    def requestAvatar(self, avatarId: bytes | tuple[()], mind: object,
                      *interfaces: type[Interface]) -> tuple[type[Interface], object,
                                                             Callable[[], None]]:
        """An IConchUser with the console session."""
        if IConchUser not in interfaces:
            raise NotImplementedError("only SSH users")
        user = avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) \
            else str(avatarId)
        comp = components.Componentized()
        avatar = manhole_ssh.TerminalUser(comp, avatarId)
        avatar.channelLookup[b"session"] = session.SSHSession
        comp.setComponent(IConchUser, avatar)
        comp.setComponent(ISession, ConsoleSession(comp, self.namespace_factory, self.clock,
                                                   user))
        log.info("admin console login: {user}", user=user)

        def logout() -> None:
            log.info("admin console logout: {user}", user=user)

        return IConchUser, avatar, logout


# -- builders -------------------------------------------------------------------


class ManholeFactory(manhole_ssh.ConchFactory):
    """The SSH server factory: one host key, the console portal."""

    def __init__(self, portal: Portal, host_key: keys.Key) -> None:
        super().__init__(portal)
        # conch annotates the private keys as bytes; SSHFactory takes Key objects too
        self.privateKeys = {host_key.sshType(): host_key}  # type: ignore[dict-item]
        self.publicKeys = {host_key.sshType(): host_key.public()}


def build_manhole_factory(
    namespace_factory: Callable[[], Namespace], reactor: IConsoleReactor, *,
    host_key: keys.Key,
    authorized_keys: str = "", usernames: Collection[str] = (),
    passwords: Mapping[str, str] | None = None, verifier: SecretVerifier | None = None,
) -> ManholeFactory:
    """The SSH factory of the console, without configuration or listener.

    Args:
        namespace_factory: makes a fresh namespace per session.
        reactor: times the scripts; its thread pool checks passwords when no
            verifier is given.
        host_key: the server's private key.
        authorized_keys: an OpenSSH authorized_keys file ("" = no key login).
        usernames: names allowed to log in with a key; empty allows any.
        passwords: name -> hurricane.passwords hash; None or empty = no
            password login (the SSH server does not even offer it).
        verifier: checks the passwords (the server's, on its thread pool);
            None makes one on the reactor's thread pool.
    """
    checkers: list[ICredentialsChecker] = []
    if authorized_keys:
        checkers.append(SSHPublicKeyChecker(AuthorizedKeysFile(authorized_keys, usernames)))
    if passwords:
        if verifier is None:
            verifier = SecretVerifier(threadpool_runner(reactor, reactor.getThreadPool()))
        checkers.append(HashedPasswordChecker(passwords, verifier))
    portal = Portal(ConsoleRealm(namespace_factory, reactor), checkers)
    return ManholeFactory(portal, host_key)


def _is_loopback(description: str) -> bool:
    for part in description.split(":"):
        if part.startswith("interface="):
            host = part.split("=", 1)[1].strip("[]")
            return host.startswith("127.") or host in ("::1", "localhost") \
                or host.replace("\\", "") == "::1"
    return description.startswith("unix:")


def build_manhole_service(config: Config, root: HurricaneService, reactor: IConsoleReactor,
                          *, operations: Operations,
                          verifier: SecretVerifier | None = None) -> ListenerService | None:
    """The admin console's listener, or None when ``[admin] enabled`` is false.

    Returns a :class:`~hurricane.service.ListenerService` (kind ``admin``): add it
    to the root like the other listeners; it binds after the store is open.
    The host key is generated and the authorized_keys file checked here,
    before the reactor runs.

    Args:
        config: reads ``[admin]`` (enabled, listen, authorized_keys, and when
            the lead adds them: usernames, passwords, host_key) and ``data_dir``.
        root: the root service; its parts are in the namespace.
        reactor: listens, times the scripts (and checks passwords without a verifier).
        operations: what the console's helpers do.
        verifier: checks passwords (the server's, on its pool); None uses
            the reactor's thread pool.

    Raises:
        ManholeConfigError: no way to log in, or an unreadable authorized_keys.
        OSError: the host key cannot be written.
    """
    admin = config.admin
    if not admin.enabled:
        return None
    usernames = tuple(getattr(admin, "usernames", ()) or ())
    passwords = dict(getattr(admin, "passwords", {}) or {})
    authorized_keys = admin.authorized_keys
    if not authorized_keys and not passwords:
        raise ManholeConfigError(
            "[admin] authorized_keys: required when the console is enabled "
            "(password login needs [admin.passwords])")
    if authorized_keys and not os.access(authorized_keys, os.R_OK):
        raise ManholeConfigError(f"[admin] authorized_keys: cannot read {authorized_keys}")
    host_key_path = getattr(admin, "host_key", "") or os.path.join(config.data_dir,
                                                                   HOST_KEY_NAME)
    host_key = ensure_host_key(host_key_path)
    if not _is_loopback(admin.listen):
        log.warn("the admin console listens on {listen}, not only on loopback",
                 listen=admin.listen)
    factory = build_manhole_factory(
        lambda: make_namespace(root, operations), reactor, host_key=host_key,
        authorized_keys=authorized_keys, usernames=usernames, passwords=passwords,
        verifier=verifier)
    endpoint = endpoints.serverFromString(reactor, admin.listen)
    return ListenerService("admin", admin.listen, endpoint, factory)

