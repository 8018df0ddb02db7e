"""The ``hurricane`` command as a user runs it: exit codes, output, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.report.helpers import HOSTILE_TEXTS, check_csv_cells


def run(*args: str, cwd: str | None = None, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "hurricane.cli", *args], capture_output=True, text=True,
        timeout=120, cwd=cwd, env=env, input=stdin,
    )


def make_config(extra: str = "") -> str:
    d = tempfile.mkdtemp()
    path = os.path.join(d, "h.toml")
    with open(path, "w") as fp:
        fp.write(f'[server]\ndata_dir = "{d}/data"\n[bounce]\ndomain = "bounce.example.com"\n'
                 + extra)
    return path


def first_start_keys(config: str) -> str:
    """Make the VERP keys file as the server's first start does; return its path."""
    from hurricane.config import load_config
    from hurricane.verp import load_or_create_keys

    path = load_config(config).verp_keys_file
    load_or_create_keys(path)
    return path


class VerpCommandTests(SynchronousTestCase):
    """``hurricane verp encode|decode`` as DESIGN.md specifies them."""

    def test_round_trip(self) -> None:
        """encode prints an address that decode turns back into the same identifiers."""
        config = make_config()
        first_start_keys(config)
        enc = run("verp", "encode", "--config", config, "--delivery-id", "12345",
                  "--mailing-id", "Spring-Sale-26", "--message-id", "ab12-cd34")
        self.assertEqual(enc.returncode, 0, enc.stderr)
        address = enc.stdout.strip()
        self.assertTrue(address.endswith("@bounce.example.com"))
        dec = run("verp", "decode", "--config", config, address)
        self.assertEqual(dec.returncode, 0, dec.stderr)
        data = json.loads(dec.stdout)
        self.assertEqual(data["delivery_id"], 12345)
        self.assertEqual(data["mailing_id"], "spring-sale-26")
        self.assertEqual(data["message_id"], "ab12-cd34")
        self.assertEqual(data["key_id"], 0)
        self.assertRegex(data["issued"], r"^\d{4}-\d\d-\d\d$")

    def test_no_keys_refused(self) -> None:
        """Without the server's keys file, encode and decode exit 2 naming the path and
        create nothing: a key made there would sign tokens the server never checks."""
        config = make_config()
        keys = os.path.join(os.path.dirname(config), "data", "verp-keys.json")
        for args in (["encode", "--delivery-id", "5"], ["decode", "x@bounce.example.com"]):
            r = run("verp", *args, "--config", config)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(f"no VERP keys at {keys}", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertFalse(os.path.exists(os.path.dirname(keys)))

    def test_tampered_refused(self) -> None:
        """A changed character or another server's key makes decode exit 1 with the reason."""
        config = make_config()
        first_start_keys(config)
        address = run("verp", "encode", "--config", config, "--delivery-id", "7"
                      ).stdout.strip()
        i = 5
        forged = address[:i] + ("a" if address[i] != "a" else "b") + address[i + 1:]
        dec = run("verp", "decode", "--config", config, forged)
        self.assertEqual(dec.returncode, 1)
        self.assertIn("rejected: bad signature", dec.stdout)
        other = make_config()  # different data dir, different key
        first_start_keys(other)
        self.assertEqual(run("verp", "decode", "--config", other, address).returncode, 1)
        garbage = run("verp", "decode", "--config", config, "not-an-address")
        self.assertEqual(garbage.returncode, 1)
        self.assertIn("rejected", garbage.stdout)

    def test_bad_identifier(self) -> None:
        """Identifiers outside [0-9A-Za-z-] are a usage error, not a traceback."""
        config = make_config()
        first_start_keys(config)
        r = run("verp", "encode", "--config", config, "--delivery-id", "1",
                "--mailing-id", "no spaces")
        self.assertEqual(r.returncode, 2)
        self.assertNotIn("Traceback", r.stderr)
        self.assertIn("mailing id", r.stderr)


class CheckConfigTests(SynchronousTestCase):
    """``hurricane check-config`` reports mistakes in one line."""

    def test_misspelt_key(self) -> None:
        """A misspelt key exits 2 with one line naming the file and the key."""
        config = make_config("[delivery]\nmax_agee = 5\n")
        r = run("check-config", "--config", config)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertIn(config, r.stderr)
        self.assertIn("[delivery] max_agee", r.stderr)

    def test_ok(self) -> None:
        """A good file prints its listeners and exits 0."""
        r = run("check-config", "--config", make_config())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK", r.stdout)
        self.assertIn("tcp:2525:interface=127.0.0.1", r.stdout)

    def test_missing_files(self) -> None:
        """TLS files that do not exist: exit 2, one line per key naming the key and the
        path, nothing on stdout (no "OK")."""
        d = tempfile.mkdtemp()
        config = make_config(f'[submission]\ntls_certificate = "{d}/c.pem"\n'
                             f'tls_key = "{d}/k.pem"\n')
        r = run("check-config", "--config", config)
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 2, r.stderr)
        self.assertIn(f"[submission] tls_certificate: {d}/c.pem: no such file", lines[0])
        self.assertIn(f"[submission] tls_key: {d}/k.pem: no such file", lines[1])

    def test_unusable_file_content(self) -> None:
        """Files that exist but that the server could not load (a certificate that is
        not PEM, a users_file line without a hash) are errors naming the key."""
        d = tempfile.mkdtemp()
        for name, text in (("c.pem", "not a certificate\n"), ("k.pem", "nor a key\n"),
                           ("users", "alice\n")):
            with open(os.path.join(d, name), "w") as fp:
                fp.write(text)
        config = make_config(f'[submission]\ntls_certificate = "{d}/c.pem"\n'
                             f'tls_key = "{d}/k.pem"\nusers_file = "{d}/users"\n')
        r = run("check-config", "--config", config)
        self.assertEqual(r.returncode, 2, r.stdout)
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 2, r.stderr)
        self.assertIn("[submission] tls_certificate: ", lines[0])
        self.assertIn(f"{d}/c.pem: no PEM certificate found", lines[0])
        self.assertIn(f"[submission] users_file: {d}/users:1: expected name:hash", lines[1])

    def test_notes_and_connect(self) -> None:
        """A fresh data_dir is a note ("created at the first start"); --connect then
        says the database does not exist yet, and after migrate gives its version;
        neither creates anything."""
        from hurricane.store.migrate import latest_version

        config = make_config()
        data = os.path.join(os.path.dirname(config), "data")
        r = run("check-config", "--config", config, "--connect")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"note          [server] data_dir {data}: does not exist yet", r.stdout)
        self.assertIn("no database yet", r.stdout)
        self.assertFalse(os.path.exists(data))
        self.assertEqual(run("migrate", "--config", config).returncode, 0)
        r = run("check-config", "--config", config, "--connect")
        self.assertEqual(r.returncode, 0, r.stderr)
        n = latest_version()
        self.assertIn(f"OK, schema version {n} of {n}, up to date", r.stdout)

    def test_connect_postgres_changes_nothing(self) -> None:
        """--connect on an empty PostgreSQL database reports version 0 and the migrations
        to apply, and applies none; migrate then says "0 -> N"."""
        from hurricane.store.migrate import latest_version
        from tests.e2e.helpers import postgres_url

        url = postgres_url(self)
        config = make_config(f'[store]\nurl = "{url}"\n')
        n = latest_version()
        for _ in range(2):
            r = run("check-config", "--config", config, "--connect")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"{url}: OK, schema version 0 of {n}, {n} migration(s) to apply",
                          r.stdout)
        r = run("migrate", "--config", config)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[-1], f"{url}: schema version 0 -> {n}")

    def test_help(self) -> None:
        """Every subcommand documents --config."""
        for cmd in (["migrate"], ["check-config"], ["verp", "encode"], ["verp", "decode"],
                    ["outcomes"], ["suppression", "add"], ["retry"]):
            r = run(*cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("--config", r.stdout)


class StoreCommandTests(SynchronousTestCase):
    """migrate, suppression and outcomes against a real SQLite file."""

    def test_migrate_then_suppression(self) -> None:
        """migrate reports the schema version; suppression add/list/remove round-trips."""
        config = make_config()
        r = run("migrate", "--config", config)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("schema version", r.stdout)
        again = run("migrate", "--config", config)
        self.assertNotIn("applied", again.stdout)
        self.assertEqual(run("suppression", "add", "--config", config, "Bob@Example.COM",
                             "--reason", "userunknown").returncode, 0)
        listed = run("suppression", "list", "--config", config)
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        self.assertEqual([(x["address"], x["reason"]) for x in rows],
                         [("bob@example.com", "userunknown")])
        self.assertEqual(run("suppression", "remove", "--config", config,
                             "bob@example.com").returncode, 0)
        self.assertEqual(run("suppression", "list", "--config", config).stdout, "")
        self.assertEqual(run("suppression", "remove", "--config", config,
                             "bob@example.com").returncode, 1)
        out = run("outcomes", "--config", config, "--format", "csv")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.startswith("queue_id,delivery_id,recipient,state"))

    def test_operations_refuse_like_the_web(self) -> None:
        """suppression add checks the address as the form and the API do; retry needs a
        filter; both exit 2 with the operations' message and change nothing."""
        config = make_config()
        self.assertEqual(run("migrate", "--config", config).returncode, 0)
        r = run("suppression", "add", "--config", config, "not an address")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("address: invalid address 'not an address'", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(run("suppression", "list", "--config", config).stdout, "")
        r = run("retry", "--config", config)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("give a domain, a queue id or a delivery id", r.stderr)
        r = run("retry", "--config", config, "--domain", "nowhere.test")
        self.assertEqual((r.returncode, r.stdout), (0, "0 deliveries are due now\n"), r.stderr)

    def test_migrate_says_what_it_did(self) -> None:
        """A new SQLite file: "created", each migration, "0 -> N"; again: "already at N"."""
        from hurricane.store.migrate import latest_version, load_migrations
        from hurricane.store.sql import SQLITE

        config = make_config()
        path = os.path.join(os.path.dirname(config), "data", "hurricane.db")
        n = latest_version()
        r = run("migrate", "--config", config)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], f"created {path}")
        # One line per migration, numbered 1..n without a gap.
        self.assertEqual(len(load_migrations(SQLITE)), n)
        self.assertEqual(len([x for x in lines if x.startswith("applied 0")]), n)
        self.assertEqual(lines[-1], f"sqlite://{path}: schema version 0 -> {n}")
        r = run("migrate", "--config", config)
        self.assertEqual(r.stdout, f"sqlite://{path}: already at schema version {n}, "
                                   "nothing to apply\n")

    def test_data_commands_refuse_a_missing_database(self) -> None:
        """outcomes, suppression and retry in a directory without data exit 2 naming the
        database path, and create no ./hurricane-data."""
        cwd = tempfile.mkdtemp()
        path = os.path.join(cwd, "hurricane-data", "hurricane.db")
        for args in (["outcomes"], ["suppression", "list"], ["suppression", "add", "a@b.test"],
                     ["retry", "--domain", "b.test"]):
            r = run(*args, cwd=cwd)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(f"no database at {path}", r.stderr)
            self.assertIn("no --config", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertEqual(os.listdir(cwd), [])

    def test_store_error_names_the_url_once(self) -> None:
        """A store that cannot be opened: one line, "cannot open store URL" once."""
        config = make_config('[store]\nurl = "postgresql://u@127.0.0.1:1/nodb"\n')
        r = run("migrate", "--config", config)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertEqual(r.stderr.count("postgresql://u@127.0.0.1:1/nodb"), 1, r.stderr)
        self.assertTrue(r.stderr.startswith("hurricane migrate: cannot open store "), r.stderr)

    def test_unreachable_store(self) -> None:
        """A PostgreSQL URL that cannot be reached names the URL without its password."""
        config = make_config('[store]\nurl = "postgresql://u:sekrit@127.0.0.1:1/nodb"\n')
        r = run("migrate", "--config", config)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("127.0.0.1:1/nodb", r.stderr)
        self.assertNotIn("sekrit", r.stderr)
        self.assertNotIn("Traceback", r.stderr)

    def test_passwd(self) -> None:
        """passwd --stdin prints a hash that verifies."""
        from hurricane.passwords import verify_password

        r = run("passwd", "--stdin", stdin="hunter2\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(verify_password("hunter2", r.stdout.strip()))
        self.assertFalse(verify_password("hunter3", r.stdout.strip()))

    def test_passwd_token(self) -> None:
        """passwd --token makes a random token and prints its sha256 hash; --stdin hashes a
        long enough one and refuses a short one."""
        from hurricane.passwords import hash_token

        r = run("passwd", "--token")
        self.assertEqual(r.returncode, 0, r.stderr)
        token_line, hash_line = r.stdout.splitlines()
        token = token_line.removeprefix("token: ")
        self.assertGreaterEqual(len(token), 43)
        self.assertEqual(hash_line.removeprefix("hash:").strip(), hash_token(token))
        r = run("passwd", "--token", "--stdin", stdin="x" * 30 + "\n")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, hash_token("x" * 30)))
        r = run("passwd", "--token", "--stdin", stdin="short\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("at least 24", r.stderr)

class OutcomesCsvTests(TestCase):
    """``hurricane outcomes --format csv`` writes the web export's formula-safe cells."""

    async def _hostile(self) -> None:
        from hurricane.config import load_config
        from hurricane.store.sqlite import SqliteStore
        from tests.report.helpers import store_hostile

        config = make_config()
        path = load_config(config).store_url.split("sqlite://", 1)[1]
        store = SqliteStore(path, reactor)
        await store.open()
        try:
            await store_hostile(store)
        finally:
            await store.close()
        env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
        # Bytes: text=True would read a CR inside a quoted cell as a line end.
        out = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "hurricane.cli", "outcomes", "--config", config,
             "--format", "csv"], capture_output=True, timeout=120, env=env)
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout.decode("utf-8")
        records = check_csv_cells(self, text)
        self.assertEqual(len(records), len(HOSTILE_TEXTS))
        self.assertTrue(text.startswith("queue_id,delivery_id,recipient,state"))

    def test_hostile_text(self) -> Deferred[None]:
        """The same hostile reply texts as the web test never start a cell as a formula;
        booleans are true/false as on the web."""
        return Deferred.fromCoroutine(self._hostile())


class RetryCommandTests(TestCase):
    """``hurricane retry`` maps its options onto Operations.retry over the configured store."""

    async def _retry(self) -> None:
        from hurricane.config import load_config
        from hurricane.model import AttemptResult, NewMessage, NewRecipient, State
        from hurricane.store.sqlite import SqliteStore

        config = make_config()
        path = load_config(config).store_url.split("sqlite://", 1)[1]
        store = SqliteStore(path, reactor)
        await store.open()
        try:
            result = await store.enqueue(NewMessage(
                sender="a@b.test", recipients=(NewRecipient("x@later.test"),), body=b"x"), 1.0)
            delivery_id = result.recipients[0].delivery_id
            await store.record_attempts([AttemptResult(
                delivery_id=delivery_id, state=State.deferred, at=2.0, code=451,
                next_attempt_at=4e9)])
        finally:
            await store.close()
        env = {k: v for k, v in os.environ.items() if k != "HURRICANE_CONFIG"}
        out = await threads.deferToThread(
            subprocess.run, [sys.executable, "-m", "hurricane.cli", "retry", "--config", config,
                             "--domain", "LATER.test"],
            capture_output=True, text=True, timeout=120, env=env)
        self.assertEqual((out.returncode, out.stdout), (0, "1 deliveries are due now\n"),
                         out.stderr)
        store = SqliteStore(path, reactor)
        await store.open()
        try:
            delivery = await store.get_delivery(delivery_id)
        finally:
            await store.close()
        assert delivery is not None and delivery.next_attempt_at is not None
        self.assertLess(delivery.next_attempt_at, 4e9)

    def test_retry_by_domain(self) -> Deferred[None]:
        """A deferred delivery of the domain (in any case) is due now after the command."""
        return Deferred.fromCoroutine(self._retry())


class CheckConfigPoolTests(SynchronousTestCase):
    """check-config refuses a sending pool address this host does not have."""

    def test_pool_addresses(self) -> None:
        pool = ('[delivery]\npool = "p"\n[[delivery.pools]]\nname = "p"\n'
                'addresses = ["127.0.0.2", "{}"]\n')
        r = run("check-config", "--config", make_config(pool.format("127.0.0.3")))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("check-config", "--config", make_config(pool.format("192.0.2.77")))
        self.assertEqual(r.returncode, 2)
        self.assertIn("[delivery] pools[0] addresses: 192.0.2.77 is not an address of this "
                      "host", r.stderr)
