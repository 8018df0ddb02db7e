"""Web logins: verification off the reactor thread, failure limits, dummy hashes, proxies."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from hurricane import passwords
from hurricane.config import Config, WebConfig
from hurricane.credentials import SecretVerifier
from hurricane.passwords import generate_token, hash_password, hash_token
from tests.pools import Pbkdf2Recorder, QueuedRunner

from .helpers import TOKEN, WebFixture, body_of, json_of, make_config

BASE = "http://127.0.0.1"
PUBLIC = ("tcp:8025",)


def basic(name: str, password: str) -> dict[str, list[str]]:
    """An Authorization header for HTTP basic."""
    value = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": [f"Basic {value}"]}


def bearer(token: str) -> dict[str, list[str]]:
    """An Authorization header for a bearer token."""
    return {"Authorization": [f"Bearer {token}"]}


class PoolTests(SynchronousTestCase):
    """Wrong secrets never cost the reactor thread a pbkdf2."""

    def test_forty_wrong_tokens(self) -> None:
        """40 wrong tokens off loopback: the limit's worth wait for the pool, the rest get 429,
        and nothing is hashed by the request handling itself."""
        pool = QueuedRunner()
        f = WebFixture(make_config(listen=PUBLIC), populated=False,
                       verifier=SecretVerifier(pool))
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        answers: list[Any] = []
        for i in range(40):
            f.treq.get(BASE + "/api/v1/summary", headers=bearer(f"wrong-{i}")).addBoth(
                answers.append)
            f.treq.flush()
        self.assertEqual(recorder.calls, [])  # not one pbkdf2 outside the pool
        limit = f.config.web.max_auth_failures
        self.assertEqual(len(pool.jobs), limit)
        self.assertEqual([r.code for r in answers], [429] * (40 - limit))
        self.assertEqual(pool.run_all(), limit)
        f.treq.flush()
        self.assertEqual(sorted(r.code for r in answers), [401] * limit + [429] * (40 - limit))
        self.assertEqual(len(recorder.calls), limit)

    def test_busy(self) -> None:
        """When max_pending checks already wait for the pool, the next gets 503 at once."""
        pool = QueuedRunner()
        f = WebFixture(make_config(listen=PUBLIC), populated=False,
                       verifier=SecretVerifier(pool, max_pending=1))
        first: list[Any] = []
        f.treq.get(BASE + "/api/v1/summary", headers=bearer("wrong-1")).addBoth(first.append)
        f.treq.flush()
        self.assertEqual(first, [])
        response, body = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                                headers=bearer("wrong-2")))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        pool.run_all()
        f.treq.flush()
        self.assertEqual(first[0].code, 401)


    def test_busy_spares_what_costs_no_hashing(self) -> None:
        """With the pool's queue full (a spray of wrong passwords from many addresses),
        a sha256 token and a password verified before still get in: only logins that
        need a pbkdf2 wait."""
        token = generate_token()
        pool = QueuedRunner()
        web = WebConfig(listen=PUBLIC, tokens={"app": hash_token(token)},
                        users={"ops": hash_password("pw", iterations=1000)})
        f = WebFixture(Config(web=web), populated=False,
                       verifier=SecretVerifier(pool, max_pending=1))
        first: list[Any] = []
        f.treq.get(BASE + "/", headers=basic("ops", "pw")).addBoth(first.append)
        f.treq.flush()
        pool.run_all()
        f.treq.flush()
        self.assertEqual(first[0].code, 200)
        f.treq.get(BASE + "/", headers=basic("ops", "spray")).addBoth(first.append)
        f.treq.flush()
        self.assertEqual(len(pool.jobs), 1)     # the queue is full
        response, _ = body_of(f, f.treq.get(BASE + "/", headers=basic("ops", "other")))
        self.assertEqual(response.code, 503)
        self.assertEqual(body_of(f, f.treq.get(BASE + "/", headers=basic("ops", "pw")))[0].code,
                         200)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(token)))
        self.assertEqual(response.code, 200)
        pool.run_all()


class FailureLimitTests(SynchronousTestCase):
    """Past max_auth_failures an address gets 429 without verification until the window passes."""

    def test_limit_and_window(self) -> None:
        """Ten wrong tokens, then 429 with Retry-After even for the right one; open again later."""
        f = WebFixture(make_config(listen=PUBLIC), populated=False)
        for i in range(10):
            response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                                 headers=bearer(f"wrong-{i}")))
            self.assertEqual(response.code, 401)
        verified = f.site.access.verifier.verifications
        for headers in (bearer("wrong-x"), bearer(TOKEN)):
            response, body = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=headers))
            self.assertEqual(response.code, 429)
            self.assertEqual(response.headers.getRawHeaders("retry-after"), ["60"])
            self.assertIn("Too many failed logins", body["error"])
        self.assertEqual(f.site.access.verifier.verifications, verified)
        f.clock.advance(60)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(TOKEN)))
        self.assertEqual(response.code, 200)

    def test_pages_and_successes(self) -> None:
        """Wrong passwords count for pages too; right ones do not count at all."""
        f = WebFixture(make_config(listen=PUBLIC, users={"ops": "pw", "dev": "pw2"}),
                       populated=False)
        for _ in range(20):
            response, _ = body_of(f, f.treq.get(BASE + "/", headers=basic("ops", "pw")))
            self.assertEqual(response.code, 200)
        for i in range(10):
            response, _ = body_of(f, f.treq.get(BASE + "/", headers=basic("ops", f"x{i}")))
            self.assertEqual(response.code, 401)
        # blocked: a password not verified before waits (ops's, verified 20 times, is
        # let in: BlockedAddressTests)
        response, page = body_of(f, f.treq.get(BASE + "/", headers=basic("dev", "pw2")))
        self.assertEqual(response.code, 429)
        self.assertIn("Too many failed logins", page)

    def test_configurable(self) -> None:
        """[web] max_auth_failures and auth_block_seconds set the limit."""
        config = Config(web=WebConfig(listen=PUBLIC, tokens=make_config().web.tokens,
                                      max_auth_failures=2, auth_block_seconds=5.0))
        f = WebFixture(config, populated=False)
        codes = []
        for i in range(3):
            response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                                 headers=bearer(f"wrong-{i}")))
            codes.append(response.code)
        self.assertEqual(codes, [401, 401, 429])
        f.clock.advance(5)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(TOKEN)))
        self.assertEqual(response.code, 200)


class BlockedAddressTests(SynchronousTestCase):
    """A blocked address is refused pbkdf2 work, not valid credentials that cost none."""

    def _blocked(self, config: Config) -> WebFixture:
        f = WebFixture(config, populated=False)
        for i in range(f.config.web.max_auth_failures):
            response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                                 headers=bearer(f"wrong-{i}")))
            self.assertEqual(response.code, 401)
        self.assertTrue(f.site.access.limiter.is_blocked("127.0.0.1"))
        return f

    def test_sha256_token(self) -> None:
        """After ten wrong tokens the right sha256 token still gets 200 (it costs one
        digest); a wrong one gets 429."""
        token = generate_token()
        f = self._blocked(Config(web=WebConfig(listen=PUBLIC,
                                               tokens={"app": hash_token(token)})))
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(token)))
        self.assertEqual(response.code, 200)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer("x")))
        self.assertEqual(response.code, 429)

    def test_remembered_successes(self) -> None:
        """A password or pbkdf2 token verified before the block gets in with no hashing;
        one never verified, right or wrong, gets 429 and no pbkdf2."""
        f = WebFixture(make_config(listen=PUBLIC, users={"ops": "pw", "dev": "pw2"}),
                       populated=False)
        for request in (f.treq.get(BASE + "/", headers=basic("ops", "pw")),
                        f.treq.get(BASE + "/api/v1/summary", headers=bearer(TOKEN))):
            self.assertEqual(body_of(f, request)[0].code, 200)
        for i in range(10):
            response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                                 headers=bearer(f"wrong-{i}")))
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        self.assertEqual(body_of(f, f.treq.get(BASE + "/", headers=basic("ops", "pw")))[0].code,
                         200)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(TOKEN)))
        self.assertEqual(response.code, 200)
        for headers in (basic("dev", "pw2"), basic("ops", "guess"), basic("ghost", "pw")):
            self.assertEqual(body_of(f, f.treq.get(BASE + "/", headers=headers))[0].code, 429)
        self.assertEqual(recorder.calls, [])


class UnknownUserTests(SynchronousTestCase):
    """An unknown user name costs the pbkdf2 a known one does."""

    def test_dummy_hash(self) -> None:
        """A wrong password and an unknown name each run one pbkdf2 of the users' cost."""
        f = WebFixture(make_config(listen=PUBLIC, users={"ops": "pw"}), populated=False)
        recorder = Pbkdf2Recorder()
        self.patch(passwords, "hashlib", recorder)
        for name in ("ops", "ghost"):
            response, _ = body_of(f, f.treq.get(BASE + "/", headers=basic(name, "wrong")))
            self.assertEqual(response.code, 401)
        self.assertEqual([iterations for _, iterations in recorder.calls], [1000, 1000])


class TokenFormatTests(SynchronousTestCase):
    """sha256$ tokens are checked by one lookup, with no pbkdf2 at all."""

    def test_fast_token(self) -> None:
        """The right sha256 token gets in and a wrong one is refused, with no verification job."""
        token = generate_token()
        f = WebFixture(Config(web=WebConfig(listen=PUBLIC, tokens={"app": hash_token(token)})),
                       populated=False, verifier=SecretVerifier(QueuedRunner()))
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=bearer(token)))
        self.assertEqual(response.code, 200)
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                             headers=bearer(token[:-1])))
        self.assertEqual(response.code, 401)
        self.assertEqual(f.site.access.verifier.verifications, 0)


class ProxyTests(SynchronousTestCase):
    """A request that came through a reverse proxy gets no login-free access."""

    HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "Via")

    def test_pages_need_login(self) -> None:
        """Pages and /metrics on loopback without users refuse proxied requests with 403."""
        f = WebFixture(make_config(tokens=False), populated=False)
        response, _ = body_of(f, f.treq.get(BASE + "/"))
        self.assertEqual(response.code, 200)
        for name in self.HEADERS:
            for path in ("/", "/metrics"):
                response, page = body_of(f, f.treq.get(BASE + path,
                                                       headers={name: ["198.51.100.1"]}))
                self.assertEqual(response.code, 403, (name, path))
                self.assertIn("proxy", page)

    def test_api_needs_token(self) -> None:
        """The login-free read-only API refuses a proxied request with 401."""
        f = WebFixture(make_config(tokens=False), populated=False)
        response, body = json_of(f, f.treq.get(BASE + "/api/v1/summary",
                                               headers={"X-Forwarded-For": ["198.51.100.1"]}))
        self.assertEqual(response.code, 401)
        self.assertIn("proxy", body["error"])

    def test_login_still_works(self) -> None:
        """Behind a proxy, a configured user and token still get in."""
        f = WebFixture(make_config(users={"ops": "pw"}), populated=False)
        headers = {"X-Forwarded-For": ["198.51.100.1"], **basic("ops", "pw")}
        response, _ = body_of(f, f.treq.get(BASE + "/", headers=headers))
        self.assertEqual(response.code, 200)
        headers = {"X-Forwarded-For": ["198.51.100.1"], **bearer(TOKEN)}
        response, _ = json_of(f, f.treq.get(BASE + "/api/v1/summary", headers=headers))
        self.assertEqual(response.code, 200)


class WiringTests(SynchronousTestCase):
    """The server gives the web site and submission one verifier on a thread pool."""

    def test_build_service(self) -> None:
        """build_service wires one pool-backed verifier into the site, AUTH and the manhole."""
        import os
        import tempfile

        from twisted.internet.testing import MemoryReactorClock

        from hurricane.app import build_service
        from hurricane.config import config_from_dict
        from hurricane.passwords import hash_password

        data_dir = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, data_dir, True)
        config = config_from_dict({
            "server": {"data_dir": data_dir},
            "store": {"url": "sqlite:///" + os.path.join(data_dir, "h.db")},
            "submission": {"users": {"app": hash_password("pw", iterations=1000)}},
        })
        root = build_service(config, MemoryReactorClock(), on_fatal=lambda _: None,
                             preflight=False)
        verifier = root.verifier
        assert verifier is not None and root.site is not None
        self.assertIs(root.site.access.verifier, verifier)
        factories = [s.factory for s in root if getattr(s, "kind", None) == "submission"]
        (checker,) = factories[0].portal.checkers.values()
        self.assertIs(checker.book.verifier, verifier)
        # The pool has not started: a verification waits for it instead of
        # running on this (the reactor's) thread.
        d: Deferred[Any] = verifier.match("pw", [hash_password("pw", iterations=1000)])
        self.assertNoResult(d)
