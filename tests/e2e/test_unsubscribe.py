"""Issue 20's check, live: a real ``twistd -n hurricane`` on loopback, on SQLite and PostgreSQL.

A newsletter (bulk stream) goes to the sink; its headers are read there (both
List-Unsubscribe links, List-Unsubscribe-Post and Feedback-ID, under a DKIM
signature that verifies and covers them); the https link is fetched with GET
(nothing changes), a forged token is POSTed (refused, nothing changes), then
the real one is POSTed with ``List-Unsubscribe=One-Click`` (200); a second
newsletter to the address is recorded ``suppressed`` while a transactional
message to it is delivered; ``hurricane suppression list`` shows the scope.
A mail to another recipient's mailto address does what the POST does.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import subprocess
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.demo import write_toml
from hurricane.sink.scenario import default_scenario
from hurricane.sink.server import SinkFactory
from tests.e2e.helpers import HURRICANE, outcomes, postgres_url, tmpdir
from tests.e2e.test_twistd import run_twistd, terminate
from tests.process import free_port, sleep


def dkim_key(work: str) -> tuple[str, bytes]:
    """An RSA key file for shop.test and its DNS TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = os.path.join(work, "dkim.pem")
    with open(path, "wb") as fp:
        fp.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    """One request; (status, body text)."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def submit(port: int, to: str, subject: str, stream: str | None) -> None:
    """Submit one message with smtplib."""
    msg = EmailMessage()
    msg["From"] = "News <news@shop.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["X-Hurricane-Mailing-Id"] = "spring-26" if stream else "receipts"
    if stream:
        msg["X-Hurricane-Stream"] = stream
    msg.set_content(f"{subject}\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.send_message(msg, from_addr="news@shop.test", to_addrs=[to])


def suppressions(config: str) -> list[dict[str, Any]]:
    """``hurricane suppression list`` as records."""
    r = subprocess.run([HURRICANE, "suppression", "list", "--config", config],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


class UnsubscribeLiveMixin:
    """The scenario; :meth:`store_url` picks the engine."""

    timeout = 120
    assertEqual: Any
    assertIn: Any
    assertTrue: Any
    assertNotIn: Any
    addCleanup: Any

    def store_url(self, work: str) -> str:
        raise NotImplementedError

    def test_newsletter_unsubscribe_then_suppressed(self) -> Deferred[None]:
        """Headers at the sink, GET changes nothing, forged POST refused, POST and
        mailto suppress the stream only."""
        return Deferred.fromCoroutine(self._scenario())

    async def wait_accepted(self, sink: SinkFactory, count: int) -> None:
        for _ in range(300):
            if len(sink.accepted) >= count:
                return
            await sleep(0.1)
        raise AssertionError(f"the sink got {len(sink.accepted)} of {count} messages")

    async def _scenario(self) -> None:
        work = tmpdir(self)
        key_file, txt = dkim_key(work)
        sink = SinkFactory(default_scenario(), reactor)
        sink.keep = True
        listening = reactor.listenTCP(0, sink, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        web = free_port()
        base = f"http://127.0.0.1:{web}"
        config = os.path.join(work, "hurricane.toml")
        write_toml({
            "server": {"hostname": "live.hurricane.test", "data_dir": os.path.join(work, "d")},
            "store": {"url": self.store_url(work)},
            "submission": {"listen": ["tcp:0:interface=127.0.0.1"]},
            "bounce": {"listen": ["tcp:0:interface=127.0.0.1"], "domain": "bounces.shop.test"},
            "web": {"listen": [f"tcp:{web}:interface=127.0.0.1"]},
            "delivery": {"poll_interval": 0.2, "first_retry": 1.0},
            "routes": {"*": f"127.0.0.1:{listening.getHost().port}"},
            "unsubscribe": {"base_url": base},
        }, config)
        with open(config, "a") as fp:  # arrays of tables: write_toml has none
            fp.write(f'\n[[delivery.dkim]]\ndomain = "shop.test"\nselector = "s1"\n'
                     f'key_file = "{key_file}"\n\n[[streams]]\nname = "news"\n'
                     'kind = "bulk"\nfeedback_id = "{mailing}:{stream}:{sender}"\n')
        proc, ports, _ = await run_twistd(self, config, work)

        await threads.deferToThread(submit, ports["submission"], "reader@x.test", "Issue 1",
                                    "news")
        await self.wait_accepted(sink, 1)
        acc, _ = sink.accepted[0]
        headers = BytesHeaderParser().parsebytes(acc.data)
        self.assertEqual(headers["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        self.assertEqual(headers["Feedback-ID"], "spring-26:news:shop.test")
        self.assertNotIn("X-Hurricane-Stream", headers)
        links = re.findall(r"<([^>]+)>", headers["List-Unsubscribe"])
        self.assertEqual(len(links), 2, headers["List-Unsubscribe"])
        url, mailto = links
        self.assertTrue(url.startswith(base + "/u/"), url)
        self.assertTrue(mailto.startswith("mailto:u-") and
                        mailto.endswith("@bounces.shop.test"), mailto)
        # The signature verifies and covers both headers.
        signature = headers["DKIM-Signature"].replace("\r\n", "").replace(" ", "")
        signed = re.search(r"h=([^;]+)", signature)
        self.assertTrue(signed is not None)
        assert signed is not None
        names = signed.group(1).lower().split(":")
        self.assertIn("list-unsubscribe", names)
        self.assertIn("list-unsubscribe-post", names)
        self.assertIn("feedback-id", names)
        self.assertTrue(dkim.verify(acc.data, dnsfunc=lambda name, timeout=5: txt))

        # GET: the confirm page, nothing recorded.
        status, page = await threads.deferToThread(http, "GET", url)
        self.assertEqual(status, 200, page)
        self.assertIn('name="List-Unsubscribe" value="One-Click"', page)
        self.assertEqual(await threads.deferToThread(suppressions, config), [])
        # A forged token (one character of the MAC changed): refused, nothing recorded.
        token = url.rsplit("/", 1)[1]
        forged = token[:20] + ("a" if token[20] != "a" else "b") + token[21:]
        status, _ = await threads.deferToThread(
            http, "POST", f"{base}/u/{forged}", b"List-Unsubscribe=One-Click")
        self.assertEqual(status, 404)
        self.assertEqual(await threads.deferToThread(suppressions, config), [])
        # The one-click POST.
        status, page = await threads.deferToThread(http, "POST", url,
                                                    b"List-Unsubscribe=One-Click")
        self.assertEqual(status, 200, page)
        entries = await threads.deferToThread(suppressions, config)
        self.assertEqual([(e["scope"], e["address"], e["reason"], e["source"])
                          for e in entries],
                         [("stream:news", "reader@x.test", "unsubscribed", "unsubscribe")])
        self.assertTrue(entries[0]["event_id"])

        # A second newsletter is suppressed; a transactional message delivered.
        await threads.deferToThread(submit, ports["submission"], "reader@x.test", "Issue 2",
                                    "news")
        await threads.deferToThread(submit, ports["submission"], "reader@x.test",
                                    "Your receipt", None)
        await self.wait_accepted(sink, 2)
        got = sink.accepted[1][0]
        self.assertIn(b"Subject: Your receipt", got.data)
        self.assertNotIn(b"List-Unsubscribe", got.data)

        # The mailto address of another reader does what the POST does.
        await threads.deferToThread(submit, ports["submission"], "other@x.test", "Issue 1",
                                    "news")
        await self.wait_accepted(sink, 3)
        other = BytesHeaderParser().parsebytes(sink.accepted[2][0].data)
        address = re.findall(r"<mailto:([^>]+)>", other["List-Unsubscribe"])[0]

        def mail_unsubscribe() -> None:
            with smtplib.SMTP("127.0.0.1", ports["bounce"], timeout=10) as s:
                s.sendmail("other@x.test", [address], b"Subject: unsubscribe\r\n\r\n.\r\n")

        await threads.deferToThread(mail_unsubscribe)
        entries = await threads.deferToThread(suppressions, config)
        self.assertEqual(sorted((e["scope"], e["address"]) for e in entries),
                         [("stream:news", "other@x.test"), ("stream:news", "reader@x.test")])
        records = []
        for _ in range(100):
            records = await threads.deferToThread(outcomes, config)
            if len(records) == 4 and not any(r["state"] in ("queued", "deferred")
                                             for r in records):
                break
            await sleep(0.2)
        states = sorted((r["recipient"], r["mailing_id"], r["state"], r.get("stream"))
                        for r in records)
        self.assertEqual(states, [
            ("other@x.test", "spring-26", "delivered", "news"),
            ("reader@x.test", "receipts", "delivered", "transactional"),
            ("reader@x.test", "spring-26", "delivered", "news"),
            ("reader@x.test", "spring-26", "suppressed", "news"),
        ])
        self.assertEqual(await terminate(proc), 0)


class SqliteUnsubscribeLiveTests(UnsubscribeLiveMixin, TestCase):
    """On SQLite."""

    def store_url(self, work: str) -> str:
        return "sqlite://" + os.path.join(work, "h.db")


class PostgresUnsubscribeLiveTests(UnsubscribeLiveMixin, TestCase):
    """On PostgreSQL."""

    def store_url(self, work: str) -> str:
        return postgres_url(self)
