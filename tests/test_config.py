"""Tests for configuration loading and validation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import Config, ConfigError, load_config, parse_host_port
from hurricane.outcome import SqliteSync, TlsPolicy

REPO = Path(__file__).resolve().parents[1]


def write(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as fp:
        fp.write(text)
    return path


class ConfigErrorTests(SynchronousTestCase):
    """Every mistake names the file, the key path and what was expected."""

    def assertError(self, text: str, *fragments: str) -> ConfigError:
        path = write(text)
        e = self.assertRaises(ConfigError, load_config, path)
        message = str(e)
        self.assertIn(path, message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return e

    def test_misspelt_key(self) -> None:
        """An unknown key is named with its section."""
        self.assertError("[delivery]\nmax_agee = 10\n", "[delivery] max_agee", "unknown key")

    def test_unknown_section(self) -> None:
        """An unknown section is named."""
        self.assertError("[deliveri]\nmax_age = 10\n", "[deliveri]", "unknown section")

    def test_wrong_type(self) -> None:
        """A string where a number belongs names the key and the expected type."""
        self.assertError('[delivery]\nmax_age = "3 days"\n', "[delivery] max_age",
                         "expected a number")
        self.assertError('[submission]\nlisten = "tcp:25"\n', "[submission] listen",
                         "expected a list")

    def test_bad_endpoint(self) -> None:
        """A listener that is not a Twisted endpoint string is refused at load time."""
        self.assertError('[bounce]\nlisten = ["tcpp:25"]\n', "[bounce] listen[0]",
                         "bad endpoint")

    def test_nested_tables(self) -> None:
        """Keys of nested tables are named with their full path."""
        self.assertError("[delivery.timeouts]\nconect = 1\n", "[delivery] timeouts.conect")
        self.assertError('[delivery.tls_policy.domains]\n"a.example" = "always"\n',
                         "[delivery] tls_policy.domains.a.example")

    def test_bad_route(self) -> None:
        """A route target must be host:port."""
        self.assertError('[routes]\n"example.test" = "127.0.0.1:notaport"\n',
                         '[routes] "example.test"', "port")

    def test_cross_field(self) -> None:
        """Values that contradict each other are refused."""
        self.assertError("[delivery]\nfirst_retry = 600\nmax_retry_interval = 60\n",
                         "[delivery] max_retry_interval")
        self.assertError('[delivery]\nverp = "sometimes"\n', "[delivery] verp")
        self.assertError('[submission]\ntrusted_networks = ["10.0.0.0/33"]\n',
                         "trusted_networks[0]")

    def test_secret_hashes(self) -> None:
        """Tokens need a token hash, passwords a pbkdf2 one; the entry is named."""
        self.assertError('[web.tokens]\napp = "s3cret"\n', "[web] tokens.app",
                         "hurricane passwd --token")
        self.assertError('[web.users]\nops = "sha256$' + "0" * 64 + '"\n', "[web] users.ops",
                         "for API tokens only")
        self.assertError('[submission.users]\napp = "pbkdf2_sha256$10$AAAA$AAAA"\n',
                         "[submission] users.app", "iterations 1000-10000000")
        self.assertError("[web]\nmax_auth_failures = 0\n", "[web] max_auth_failures")
        self.assertError("[web]\nauth_block_seconds = 0\n", "[web] auth_block_seconds")
        from hurricane.passwords import generate_token, hash_password, hash_token

        path = write(f'[web.tokens]\nnew = "{hash_token(generate_token())}"\n'
                     f'old = "{hash_password("t", iterations=1000)}"\n')
        self.assertEqual(set(load_config(path).web.tokens), {"new", "old"})

    def test_returned_mail_limits(self) -> None:
        """The postmaster cap is at least 1; retention is 0 or at least a day, in seconds."""
        self.assertError("[bounce]\nmax_postmaster_recipients = 0\n",
                         "[bounce] max_postmaster_recipients", ">= 1")
        self.assertError("[bounce]\nretention = 90\n", "[bounce] retention", "86400")
        self.assertError('[bounce]\nretention = "90d"\n', "[bounce] retention",
                         "expected a number")
        self.assertEqual(load_config(write("[bounce]\nretention = 0\n")).bounce.retention, 0)
        self.assertEqual(Config().bounce.retention, 90 * 86400)

    def test_vocabulary_values(self) -> None:
        """A TLS policy or a SQLite level outside its vocabulary names the key and the words."""
        self.assertError('[delivery.tls_policy]\ndefault = "Require"\n',
                         "[delivery] tls_policy.default",
                         "expected one of none, opportunistic, require, verify")
        self.assertError('[store]\nsqlite_synchronous = "sometimes"\n',
                         "[store] sqlite_synchronous", "expected one of OFF, NORMAL, FULL, EXTRA")
        self.assertError('[store]\nsqlite_synchronous = 1\n', "[store] sqlite_synchronous")

    def test_invalid_toml_and_missing_file(self) -> None:
        """Broken TOML and a missing file are clear errors too."""
        self.assertError("[server\n", "not valid TOML")
        e = self.assertRaises(ConfigError, load_config, "/nonexistent/h.toml")
        self.assertIn("/nonexistent/h.toml", str(e))


class ConfigDefaultsTests(SynchronousTestCase):
    """Without a file the server runs on safe defaults."""

    def test_defaults(self) -> None:
        """Defaults: SQLite in ./hurricane-data, loopback listeners on high ports."""
        c = Config()
        self.assertTrue(c.store_url.startswith("sqlite:///"))
        self.assertTrue(c.store_url.endswith("hurricane-data/hurricane.db"))
        for name in ("submission", "bounce", "web"):
            for ep in getattr(c, name).listen:
                self.assertIn("interface=127.0.0.1", ep)
                self.assertGreater(int(ep.split(":")[1]), 1024)
        self.assertFalse(c.admin.enabled)

    def test_vocabulary_members(self) -> None:
        """TLS policies and the SQLite level load as their outcome enums (a level in any case)."""
        c = load_config(write('[store]\nsqlite_synchronous = "normal"\n'
                              '[delivery.tls_policy]\ndefault = "require"\n'
                              '[delivery.tls_policy.domains]\n"a.example" = "verify"\n'))
        self.assertIs(c.store.sqlite_synchronous, SqliteSync.normal)
        self.assertIs(c.delivery.tls_policy.default, TlsPolicy.require)
        self.assertIs(c.delivery.tls_policy.domains["a.example"], TlsPolicy.verify)
        self.assertIs(Config().delivery.tls_policy.default, TlsPolicy.opportunistic)

    def test_shipped_examples_load(self) -> None:
        """etc/hurricane.toml and etc/hurricane-postgres.toml are valid."""
        for name in ("hurricane.toml", "hurricane-postgres.toml"):
            c = load_config(REPO / "etc" / name)
            self.assertEqual(c.source, str(REPO / "etc" / name))

    def test_production_example_writes_where_the_unit_allows(self) -> None:
        """Every file the production example has the server write (VERP keys, SSH host
        key, JSON log, accounting log, data_dir) is under the systemd unit's
        ReadWritePaths: ProtectSystem=strict makes everything else read-only."""
        import os

        c = load_config(REPO / "etc" / "hurricane-postgres.toml")
        unit = (REPO / "etc" / "hurricane.service").read_text()
        writable = [p for line in unit.splitlines() if line.startswith("ReadWritePaths=")
                    for p in line.split("=", 1)[1].split()]
        self.assertTrue(writable)
        written = [c.data_dir, c.verp_keys_file,
                   c.admin.host_key or os.path.join(c.data_dir, "admin_ssh_host_ed25519_key")]
        if c.server.json_log:
            written.append(c.server.json_log)
        if c.accounting.enabled:
            written.append(c.accounting.file or os.path.join(c.data_dir, "accounting.jsonl"))
        for path in written:
            self.assertTrue(any(path == d or path.startswith(d.rstrip("/") + "/")
                                for d in writable), (path, writable))

    def test_example_documents_every_key(self) -> None:
        """Every key of every section appears in etc/hurricane.toml."""
        import dataclasses

        text = (REPO / "etc" / "hurricane.toml").read_text()
        c = Config()
        for section in ("server", "store", "submission", "bounce", "delivery", "web", "admin",
                        "accounting"):
            self.assertIn(f"[{section}]", text)
            for f in dataclasses.fields(getattr(c, section)):
                self.assertIn(f.name, text, f"[{section}] {f.name} undocumented")

    def test_webhooks_documented(self) -> None:
        """Every webhook key appears in etc/hurricane.toml."""
        import dataclasses

        from hurricane.opsconfig import WebhookConfig

        text = (REPO / "etc" / "hurricane.toml").read_text()
        for f in dataclasses.fields(WebhookConfig):
            self.assertIn(f.name, text)

    def test_host_port(self) -> None:
        """Route targets parse in their three forms."""
        self.assertEqual(parse_host_port("127.0.0.1:2526"), ("127.0.0.1", 2526))
        self.assertEqual(parse_host_port("[::1]:25"), ("::1", 25))
        self.assertEqual(parse_host_port("mx.example.com"), ("mx.example.com", 25))
        self.assertRaises(ValueError, parse_host_port, "::1:25")


class CheckPathsTests(SynchronousTestCase):
    """check_paths: every file the configuration names, checked without creating anything."""

    def setUp(self) -> None:
        self.top = tempfile.mkdtemp(prefix="hurricane-paths-")
        self.addCleanup(__import__("shutil").rmtree, self.top, True)

    def config(self, text: str) -> Config:
        """A configuration whose data_dir is inside the test's directory."""
        path = os.path.join(self.top, "h.toml")
        with open(path, "w") as fp:
            fp.write(f'[server]\ndata_dir = "{self.top}/data"\n' + text)
        return load_config(path)

    def test_missing_input_files(self) -> None:
        """A TLS certificate, users_file, rule file, DKIM key, webhook secret or
        authorized_keys that does not exist is an error naming the key and the path."""
        from hurricane.config import check_paths

        missing = os.path.join(self.top, "nope")
        c = self.config(
            f'[submission]\ntls_certificate = "{missing}/cert.pem"\n'
            f'tls_key = "{missing}/key.pem"\nusers_file = "{missing}/users"\n'
            f'[bounce]\nrules_files = ["{missing}/rules.toml"]\n'
            f'[[delivery.dkim]]\ndomain = "example.com"\nselector = "s"\n'
            f'key_file = "{missing}/dkim.pem"\n'
            f'[admin]\nenabled = true\nauthorized_keys = "{missing}/keys"\n'
            f'[[webhooks]]\nurl = "https://h.test/x"\nsecret_file = "{missing}/s"\n')
        report = check_paths(c)
        found = {e.path: e.msg for e in report.errors}
        expected = {
            ("submission", "tls_certificate"): "cert.pem",
            ("submission", "tls_key"): "key.pem",
            ("submission", "users_file"): "users",
            ("bounce", "rules_files[0]"): "rules.toml",
            ("delivery", "dkim[0]", "key_file"): "dkim.pem",
            ("admin", "authorized_keys"): "keys",
            ("webhooks[0]", "secret_file"): "s",
        }
        self.assertEqual(set(found), set(expected))
        for key, name in expected.items():
            self.assertIn(f"{missing}/{name}: no such file", found[key])
        self.assertIn("[submission] tls_certificate", str(report.errors[0]))
        self.assertIn(c.source or "?", str(report.errors[0]))

    def test_directory_and_unreadable(self) -> None:
        """A directory where a file is expected is an error; an existing readable file passes."""
        from hurricane.config import check_paths

        good = os.path.join(self.top, "users")
        Path(good).write_text("")
        c = self.config(f'[submission]\nusers_file = "{good}"\n'
                        f'[bounce]\nrules_files = ["{self.top}"]\n')
        report = check_paths(c)
        self.assertEqual([(e.path, e.msg) for e in report.errors],
                         [(("bounce", "rules_files[0]"),
                           f"{self.top}: is a directory, expected a file")])

    def test_missing_data_dir_is_a_note(self) -> None:
        """A missing data_dir (and the keys and database in it) will be created: notes,
        no error, and nothing is created by the check."""
        from hurricane.config import check_paths

        report = check_paths(self.config(""))
        self.assertEqual(report.errors, ())
        data = os.path.join(self.top, "data")
        self.assertTrue(any(n.startswith(f"[server] data_dir {data}: does not exist yet")
                            for n in report.notes), report.notes)
        self.assertTrue(any("verp-keys.json" in n for n in report.notes), report.notes)
        self.assertTrue(any(f"{data}/hurricane.db" in n for n in report.notes), report.notes)
        self.assertFalse(os.path.exists(data))

    def test_data_dir_cannot_be_made(self) -> None:
        """A data_dir below a regular file cannot be created: one error, naming data_dir."""
        from hurricane.config import check_paths

        blocker = os.path.join(self.top, "file")
        Path(blocker).write_text("")
        path = os.path.join(self.top, "h.toml")
        Path(path).write_text(f'[server]\ndata_dir = "{blocker}/data"\n')
        report = check_paths(load_config(path))
        self.assertEqual([e.path for e in report.errors], [("server", "data_dir")])
        self.assertIn(f"{blocker} is not a directory", report.errors[0].msg)

    def test_log_directory_cannot_be_made(self) -> None:
        """A json_log below a regular file is an error naming [server] json_log."""
        from hurricane.config import check_paths

        blocker = os.path.join(self.top, "file")
        Path(blocker).write_text("")
        report = check_paths(self.config(f'json_log = "{blocker}/log/h.json"\n'))
        self.assertEqual([e.path for e in report.errors], [("server", "json_log")])
