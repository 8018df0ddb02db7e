"""Tests of hurricane.admin.manhole: host key, namespace helpers, and real SSH logins."""

from __future__ import annotations

import os
import shutil
import stat
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.internet import defer, protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from hurricane.admin.manhole import (
    HOST_KEY_NAME,
    AuthorizedKeysFile,
    ConsoleInterpreter,
    ManholeConfigError,
    build_manhole_service,
    ensure_host_key,
    make_namespace,
)
from hurricane.config import AdminConfig, Config, ServerConfig
from hurricane.model import AttemptResult, NewMessage, NewRecipient, State
from hurricane.operations import InvalidRequest, Operations
from hurricane.service import HurricaneService
from hurricane.store.memory import MemoryStore
from tests.helpers import T0, populate, run, temp_path


class FakeOutbound:
    """The scheduler's console surface: stats() and wake()."""

    def __init__(self) -> None:
        self.woken = 0

    def stats(self) -> dict[str, Any]:
        """Fixed counters."""
        return {"in_flight": 3, "destinations": {}}

    def wake(self) -> None:
        """Count the wake-ups."""
        self.woken += 1


class FakeProcessor:
    """The bounce pipeline's console surface: stats() and replay()."""

    def __init__(self) -> None:
        self.replayed: list[int] = []

    def stats(self) -> dict[str, Any]:
        """Fixed counters."""
        return {"received": 7}

    def replay(self, bounce_id: int) -> Deferred[str]:
        """Record the id."""
        self.replayed.append(bounce_id)
        return defer.succeed(f"replayed {bounce_id}")


def make_root(store: MemoryStore, config: Config | None = None,
              clock: Clock | None = None) -> HurricaneService:
    """A root service (not started) whose operations drive fake workers."""
    root = HurricaneService(store, on_fatal=lambda msg: None, config=config)
    outbound, processor = FakeOutbound(), FakeProcessor()
    root.operations = Operations(store, clock or Clock(), outbound, processor=processor,
                                 counters={"outbound": outbound, "processor": processor})
    return root


def build_console(config: Config, root: HurricaneService, reactor: Any) -> Any:
    """build_manhole_service with the root's operations."""
    assert root.operations is not None
    return build_manhole_service(config, root, reactor, operations=root.operations)


def write_key(path: str) -> str:
    """Write a new ed25519 OpenSSH private key (0600); return its public line."""
    private = ed25519.Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fp:
        fp.write(private.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    return public.decode("ascii") + " test@hurricane\n"


class HostKeyTests(SynchronousTestCase):
    """The host key in the data directory."""

    def test_generated_private(self) -> None:
        """The host key is generated once, as ed25519, with mode 0600."""
        path = os.path.join(temp_path(self), HOST_KEY_NAME)
        key = ensure_host_key(path)
        self.assertEqual(key.sshType(), b"ssh-ed25519")
        self.assertTrue(key.isPublic() is False)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        again = ensure_host_key(path)
        self.assertEqual(again.fingerprint(), key.fingerprint())

    def test_mode_repaired(self) -> None:
        """A host key readable by others is made 0600 again."""
        path = os.path.join(temp_path(self), HOST_KEY_NAME)
        ensure_host_key(path)
        os.chmod(path, 0o644)
        ensure_host_key(path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)


class AuthorizedKeysTests(SynchronousTestCase):
    """The authorized_keys key database."""

    def test_any_or_listed_user(self) -> None:
        """Keys apply to any name, or only to the listed names; the file is re-read."""
        directory = temp_path(self)
        os.makedirs(directory)
        path = os.path.join(directory, "authorized_keys")
        with open(path, "w") as fp:
            fp.write("# comment\n" + write_key(os.path.join(directory, "k")))
        self.assertEqual(len(AuthorizedKeysFile(path).getAuthorizedKeys(b"anyone")), 1)
        listed = AuthorizedKeysFile(path, ["ops"])
        self.assertEqual(len(listed.getAuthorizedKeys(b"ops")), 1)
        self.assertEqual(listed.getAuthorizedKeys(b"root"), [])
        with open(path, "a") as fp:
            fp.write(write_key(os.path.join(directory, "k2")))
        self.assertEqual(len(listed.getAuthorizedKeys(b"ops")), 2)
        os.remove(path)
        self.assertEqual(listed.getAuthorizedKeys(b"ops"), [])
        self.flushLoggedErrors()

    def test_build_refuses(self) -> None:
        """Enabled with no authorized_keys (and no passwords), the console refuses to build."""
        directory = temp_path(self)
        store = MemoryStore()
        config = Config(server=ServerConfig(data_dir=directory),
                        admin=AdminConfig(enabled=True))
        self.assertRaises(ManholeConfigError, build_console, config, make_root(store), Clock())
        config = Config(server=ServerConfig(data_dir=directory),
                        admin=AdminConfig(enabled=True, authorized_keys="/nonexistent/keys"))
        self.assertRaises(ManholeConfigError, build_console, config, make_root(store), Clock())
        self.assertIsNone(build_console(Config(), make_root(store), Clock()))


class Output:
    """Collects interpreter output."""

    def __init__(self) -> None:
        self.text = ""

    def addOutput(self, data: str, isAsync: bool | None = None) -> None:
        """Keep it."""
        self.text += data + ("\n" if isAsync else "")


class NamespaceTests(SynchronousTestCase):
    """The console namespace and its helpers, over a MemoryStore."""

    def setUp(self) -> None:
        self.store = MemoryStore()
        self.ids = run(self, populate(self.store))
        self.clock = Clock()
        self.clock.advance(T0 + 1000)
        self.root = make_root(self.store, clock=self.clock)
        assert self.root.operations is not None
        self.operations = self.root.operations
        self.ns = make_namespace(self.root, self.operations)

    def test_names(self) -> None:
        """The namespace exposes the live objects and the helpers."""
        for name in ("service", "store", "outbound", "processor", "codec", "classifier",
                     "config", "reactor", "operations", "stats", "find", "retry", "release",
                     "suppress", "unsuppress", "replay"):
            self.assertIn(name, self.ns)
        self.assertIs(self.ns["service"], self.root)
        self.assertIs(self.ns["operations"], self.operations)
        self.assertIs(self.ns["config"], self.root.config)
        self.assertIsNot(make_namespace(self.root, self.operations), self.ns)

    def test_stats(self) -> None:
        """stats() gathers the scheduler, the processor and the queue depth."""
        found = self.successResultOf(self.ns["stats"]())
        self.assertEqual(found["outbound"]["in_flight"], 3)
        self.assertEqual(found["processor"]["received"], 7)
        self.assertIn("queue_depth", found)

    def test_find(self) -> None:
        """find() lists a recipient's deliveries."""
        [found] = self.successResultOf(self.ns["find"]("OK@example.org"))
        self.assertEqual(found["state"], "bounced")
        self.assertEqual(found["reason"], "mailboxfull")

    def test_retry(self) -> None:
        """retry() makes deferred deliveries due now and wakes the scheduler."""
        store = MemoryStore()
        run(self, populate(store))
        run(self, store.enqueue(NewMessage(sender="a@b.example",
                                           recipients=(NewRecipient("x@y.example"),),
                                           body=b"x"), T0))
        delivery = run(self, store.find_deliveries(recipient="x@y.example"))[0]
        run(self, store.record_attempts([AttemptResult(delivery_id=delivery.delivery_id,
                                                       state=State.deferred,
                                                       at=T0 + 1, code=451,
                                                       next_attempt_at=T0 + 9999)]))
        root = make_root(store, clock=self.clock)
        assert root.operations is not None
        ns = make_namespace(root, root.operations)
        self.assertEqual(self.successResultOf(ns["retry"](delivery.queue_id)), 1)
        self.assertEqual(root.operations.outbound.woken, 1)  # type: ignore[union-attr]
        after = run(self, store.get_delivery(delivery.delivery_id))
        assert after is not None
        self.assertEqual(after.next_attempt_at, T0 + 1000)

    def test_suppress_unsuppress_replay(self) -> None:
        """suppress(), unsuppress() and replay() reach the store and the processor."""
        self.assertTrue(self.successResultOf(self.ns["suppress"]("z@example.org")))
        entry = run(self, self.store.get_suppression("z@example.org"))
        assert entry is not None
        self.assertEqual((entry.reason, entry.source), ("operator", "operator"))
        self.assertTrue(self.successResultOf(self.ns["unsuppress"]("z@example.org")))
        self.assertFalse(self.successResultOf(self.ns["unsuppress"]("z@example.org")))
        self.assertEqual(self.successResultOf(self.ns["replay"](4)), "replayed 4")

    def test_scoped_suppression(self) -> None:
        """suppress(..., scope=) adds a stream entry; suppressions() lists it; unsuppress
        with the scope removes it, and a scope that is not one is refused."""
        self.assertTrue(self.successResultOf(
            self.ns["suppress"]("Z@example.org", scope="stream:transactional")))
        self.assertIsNone(run(self, self.store.get_suppression("z@example.org")))
        listed = self.successResultOf(self.ns["suppressions"]("z@example.org"))
        self.assertEqual([(e["scope"], e["address"]) for e in listed],
                         [("stream:transactional", "z@example.org")])
        self.failureResultOf(self.ns["suppress"]("z@example.org", scope="stream"),
                             InvalidRequest)
        self.assertTrue(self.successResultOf(
            self.ns["unsuppress"]("z@example.org", scope="stream:transactional")))
        self.assertEqual(self.successResultOf(self.ns["suppressions"]("z@example.org")), [])

    def test_same_refusals_as_the_other_adapters(self) -> None:
        """A malformed address fails the helper with the operations' own error."""
        failure = self.failureResultOf(self.ns["suppress"]("not an address"), InvalidRequest)
        self.assertEqual(failure.value.field, "address")
        self.assertIsNone(run(self, self.store.get_suppression("not an address")))
        out = Output()
        interp = ConsoleInterpreter(out, self.ns, "tester")
        interp.push(b"suppress('bad')")
        self.assertIn("InvalidRequest: address: address must be fully qualified", out.text)
        self.assertEqual(interp.errors, 1)

    def test_interpreter_deferreds(self) -> None:
        """Results already there print at once; later ones print when they fire."""
        out = Output()
        interp = ConsoleInterpreter(out, self.ns, "tester")
        interp.push(b"unsuppress('nobody@example.org')")
        self.assertEqual(out.text, "False")
        waiting: Deferred[int] = Deferred()
        self.ns["waiting"] = waiting
        out.text = ""
        interp.push(b"waiting")
        self.assertEqual(out.text, "<Deferred #2: waiting>")
        waiting.callback(42)
        self.assertEqual(out.text, "<Deferred #2: waiting>Deferred #2: 42\n")
        self.assertEqual(interp.pending, {})
        out.text = ""
        interp.push(b"1/0")
        self.assertIn("ZeroDivisionError", out.text)
        self.assertEqual(interp.errors, 1)


class _Collect(protocol.ProcessProtocol):
    """Feeds stdin, collects stdout and stderr, fires with (out, err, exit code)."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.done: Deferred[tuple[bytes, bytes, int]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback((self.out, self.err, code if code is not None else -1))


class ManholeSSHTests(TestCase):
    """A real OpenSSH client logs in to the manhole on 127.0.0.1 (port 0)."""

    timeout = 60

    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        ssh = shutil.which("ssh")
        if ssh is None:
            if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
                self.fail("ssh (Debian openssh-client) is missing and HURRICANE_REQUIRE_PEERS=1")
            raise SkipTest("the OpenSSH client (Debian openssh-client) is not installed")
        self.ssh = ssh
        from twisted.internet import reactor

        self.reactor = reactor
        self.dir = temp_path(self)
        os.makedirs(self.dir)
        self.key = os.path.join(self.dir, "id_ed25519")
        self.wrong_key = os.path.join(self.dir, "id_wrong")
        authorized = os.path.join(self.dir, "authorized_keys")
        with open(authorized, "w") as fp:
            fp.write(write_key(self.key))
        write_key(self.wrong_key)
        self.store = MemoryStore()
        self.config = Config(
            server=ServerConfig(data_dir=os.path.join(self.dir, "data")),
            admin=AdminConfig(enabled=True, listen="tcp:0:interface=127.0.0.1",
                              authorized_keys=authorized))
        self.root = make_root(self.store, self.config, clock=reactor)
        service = build_console(self.config, self.root, reactor)
        assert service is not None
        self.service = service
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await populate(self.store)
        self.service.startService()
        port = await self.service.listen()
        self.port = port.getHost().port  # type: ignore[attr-defined]
        self.addCleanup(self.service.stopService)

    def run_ssh(self, stdin: bytes, key: str | None = None, *extra: str,
                user: str = "ops", command: str | None = None,
                ) -> Deferred[tuple[bytes, bytes, int]]:
        """Run the OpenSSH client against the manhole."""
        proto = _Collect(stdin)
        args = [self.ssh, "-F", "/dev/null", "-i", key or self.key, "-p", str(self.port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20", *extra, f"{user}@127.0.0.1"]
        if command is not None:
            args.append(command)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir}
        self.reactor.spawnProcess(proto, self.ssh, args, env=env)
        return proto.done

    @defer.inlineCallbacks
    def test_script_on_stdin(self) -> Any:
        """Python piped on stdin (no PTY) runs in the live process; stats() prints."""
        out, err, code = yield self.run_ssh(
            b"print(1+1)\nstats()\nfind('ok@example.org')[0] if False else 6*7\n"
            b"for i in range(2):\n    print('loop', i)\nx = 5\nx + 1\n", None, "-T")
        text = out.decode()
        self.assertEqual(code, 0, (out, err))
        self.assertIn("2\n", text)
        self.assertIn("'queue_depth'", text)
        self.assertIn("'in_flight': 3", text)
        self.assertIn("42", text)
        self.assertIn("loop 1\n6\n", text)  # a block ends without a blank line
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(
            self.config.data_dir, HOST_KEY_NAME)).st_mode), 0o600)

    @defer.inlineCallbacks
    def test_exec_command_and_exit_status(self) -> Any:
        """``ssh host 'expr'`` evaluates it; an exception makes the exit status 1."""
        out, err, code = yield self.run_ssh(b"", None, "-T",
                                            command="suppress('x@example.org')")
        self.assertEqual((out, code), (b"True\n", 0), err)
        entry = run(self, self.store.get_suppression("x@example.org"))
        assert entry is not None
        self.assertEqual(entry.reason, "operator")
        out, err, code = yield self.run_ssh(b"", None, "-T", command="1/0")
        self.assertEqual(code, 1)
        self.assertIn(b"ZeroDivisionError", out)

    @defer.inlineCallbacks
    def test_wrong_key_refused(self) -> Any:
        """A key that is not in authorized_keys is refused: ssh exits 255."""
        out, err, code = yield self.run_ssh(b"print(1)\n", self.wrong_key, "-T")
        self.assertEqual(code, 255)
        self.assertNotIn(b"1", out)

    @defer.inlineCallbacks
    def test_pty_console(self) -> Any:
        """With a forced PTY the colored console runs, evaluates and exits on ^D."""
        out, err, code = yield self.run_ssh(b"print(40+2)\r\x04", None, "-tt")
        self.assertIn(b"42", out, err)
        self.assertEqual(code, 0)


class PasswordTests(TestCase):
    """Password login exists only when configured, and checks hashes off-thread."""

    def test_no_password_by_default(self) -> None:
        """Without passwords the SSH server offers public keys only."""
        from twisted.cred.credentials import ISSHPrivateKey, IUsernamePassword

        from hurricane.admin.manhole import build_manhole_factory

        directory = temp_path(self)
        key = ensure_host_key(os.path.join(directory, HOST_KEY_NAME))
        factory = build_manhole_factory(dict, Clock(), host_key=key,
                                        authorized_keys="/dev/null")
        offered = factory.portal.listCredentialsInterfaces()
        self.assertIn(ISSHPrivateKey, offered)
        self.assertNotIn(IUsernamePassword, offered)

    @defer.inlineCallbacks
    def test_hashed_passwords(self) -> Any:
        """A configured hash admits its password only."""
        from twisted.cred.credentials import UsernamePassword
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet import reactor

        from hurricane.admin.manhole import HashedPasswordChecker
        from hurricane.credentials import SecretVerifier, threadpool_runner
        from hurricane.passwords import hash_password

        verifier = SecretVerifier(threadpool_runner(reactor, reactor.getThreadPool()))
        checker = HashedPasswordChecker({"ops": hash_password("pw", iterations=1000)},
                                        verifier)
        name = yield checker.requestAvatarId(UsernamePassword(b"ops", b"pw"))
        self.assertEqual(name, b"ops")
        for user, password in ((b"ops", b"wrong"), (b"root", b"pw")):
            with self.assertRaises(UnauthorizedLogin):
                yield checker.requestAvatarId(UsernamePassword(user, password))
