"""The real Site over HTTP on 127.0.0.1 (port 0) with a SQLite store, and in Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from hurricane.report.web import build_web_site
from hurricane.store.sqlite import SqliteStore

from .helpers import TOKEN, make_config

#: Where the overview screenshot is kept for people to look at.
SCREENSHOT_DIR = os.environ.get("HURRICANE_SCREENSHOT_DIR", tempfile.gettempdir())


class LoopbackSiteMixin:
    """Start a real Site with a SQLite store on 127.0.0.1 port 0."""

    addCleanup: Any

    async def start_site(self) -> str:
        """Open the store, listen, and return the base URL."""
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        store = SqliteStore(os.path.join(self.tmp, "h.db"), reactor)
        await store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.store = store
        self.woken = 0
        site = build_web_site(make_config(), store, reactor, on_enqueued=self.wake)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def wake(self) -> None:
        """The on_enqueued hook."""
        self.woken += 1

    async def request(self, method: bytes, url: str, body: bytes | None = None,
                      token: bool = True) -> tuple[int, bytes]:
        """One HTTP request over the socket; the status and body."""
        import io

        from twisted.web.client import FileBodyProducer
        headers = Headers({b"authorization": [b"Bearer " + TOKEN.encode()]} if token else {})
        agent = Agent(reactor)
        response = await agent.request(method, url.encode(), headers,
                                       FileBodyProducer(io.BytesIO(body)) if body else None)
        return response.code, await readBody(response)


class LoopbackTests(LoopbackSiteMixin, TestCase):
    """The whole stack over a real socket."""

    async def test_inject_and_read_over_http(self) -> None:
        """Inject over HTTP into SQLite, then read the message, the page and /metrics."""
        base = await self.start_site()
        code, body = await self.request(b"POST", base + "/api/v1/messages", json.dumps({
            "recipients": ["a@x.test", "<script>@x"], "raw": "Subject: hi\r\n\r\nhi"}).encode())
        self.assertEqual(code, 400)  # the second recipient is not an address
        code, body = await self.request(b"POST", base + "/api/v1/messages", json.dumps({
            "recipients": ["a@x.test"], "raw": "Subject: hi\r\n\r\nhi",
            "mailing_id": "M-1"}).encode())
        self.assertEqual(code, 201, body)
        queue_id = json.loads(body)["queue_id"]
        self.assertEqual(self.woken, 1)
        self.assertIsNotNone(await self.store.get_message(queue_id))
        code, body = await self.request(b"GET", base + f"/api/v1/messages/{queue_id}")
        self.assertEqual(json.loads(body)["recipients"][0]["state"], "queued")
        code, page = await self.request(b"GET", base + "/mailing/M-1", token=False)
        self.assertEqual(code, 200)
        self.assertIn(b"a@x.test", page)
        code, text = await self.request(b"GET", base + "/metrics", token=False)
        self.assertEqual(code, 200)
        self.assertIn(b"hurricane_submitted_total", text)
        code, _ = await self.request(b"GET", base + "/api/v1/summary", token=False)
        self.assertEqual(code, 401)


def find_chromium() -> str | None:
    """The Chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class ChromiumTests(LoopbackSiteMixin, TestCase):
    """A headless Chromium renders the overview and a recipient page of a real Site."""

    timeout = 120

    async def chromium(self, *args: str) -> tuple[bytes, bytes, int]:
        """Run headless Chromium with the flags the project uses."""
        binary = find_chromium()
        assert binary is not None
        profile = tempfile.mkdtemp(dir=self.tmp)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1280,1600", *args]
        result: tuple[bytes, bytes, int] = await getProcessOutputAndValue(
            binary, flags, env={"HOME": self.tmp, "PATH": os.environ.get("PATH", "")})
        return result

    async def test_overview_and_recipient_in_chromium(self) -> None:
        """The overview and a recipient page render to PNGs and their DOM has the charts."""
        if find_chromium() is None:
            if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
                self.fail("chromium is missing and HURRICANE_REQUIRE_PEERS=1")
            raise SkipTest("chromium is not installed (apt-get install -y chromium)")
        from .helpers import populate
        base = await self.start_site()
        # Outcomes in the SQLite store, created just now.
        data = await _populate_async(self.store, reactor.seconds())
        del populate
        shots = {}
        for name, path in (("overview", "/"), ("recipient", f"/delivery/{data}")):
            png = os.path.join(SCREENSHOT_DIR, f"hurricane-{name}.png")
            if os.path.exists(png):
                os.unlink(png)
            out, err, code = await self.chromium(f"--screenshot={png}", base + path)
            self.assertTrue(os.path.exists(png), err[-2000:])
            self.assertGreater(os.path.getsize(png), 10_000)
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            shots[name] = png
            dom, err, code = await self.chromium("--dump-dom", base + path)
            self.assertIn(b"<svg", dom) if name == "overview" else self.assertIn(
                b"Attempts and events", dom)
            if name == "overview":
                self.assertIn(b'aria-label="Outcomes over time"', dom)
                self.assertIn(b'aria-label="Bounce reasons"', dom)


#: Measures a rendered page in the browser: horizontal overflow of the page
#: and of each card, each chart's width against its card's, and the chart's
#: bars (distinct x positions). The pages' own CSP forbids scripts, so the
#: test loads a copy of the page's HTML from a file with this added.
MEASURE = """<script>
(function(){
  var de = document.documentElement;
  var out = {scroll: de.scrollWidth, client: de.clientWidth, charts: [], cards: [], texts: []};
  document.querySelectorAll('td.text').forEach(function(t){
    out.texts.push(t.getBoundingClientRect().width);
  });
  document.querySelectorAll('svg.chart').forEach(function(s){
    var card = s.closest('.card'); var cs = getComputedStyle(card);
    var inner = card.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    var xs = {};
    s.querySelectorAll('rect.bar').forEach(function(r){ xs[r.getAttribute('x')] = 1; });
    out.charts.push({label: s.getAttribute('aria-label'), width: s.getBoundingClientRect().width,
                     inner: inner, bars: Object.keys(xs).length});
  });
  document.querySelectorAll('.card').forEach(function(c){
    if (c.scrollWidth > c.clientWidth + 1) out.cards.push(c.textContent.slice(0, 80));
  });
  var pre = document.createElement('pre'); pre.id = 'measure';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
})();
</script>"""


class ChromiumLayoutTests(LoopbackSiteMixin, TestCase):
    """The six pages an operator looks at first, in a real browser 1400 px wide: nothing
    overflows sideways, charts fill their cards, the outcome chart of a 14-second
    mailing has many bars. Screenshots are kept in HURRICANE_SCREENSHOT_DIR."""

    timeout = 300

    async def browser(self, size: str, *args: str) -> tuple[bytes, bytes, int]:
        """Headless Chromium at a window ``size`` (``1400,1000``)."""
        binary = find_chromium()
        assert binary is not None
        profile = tempfile.mkdtemp(dir=self.tmp)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={size}", *args]
        result: tuple[bytes, bytes, int] = await getProcessOutputAndValue(
            binary, flags, env={"HOME": self.tmp, "PATH": os.environ.get("PATH", "")})
        return result

    async def test_pages_fit_at_1400(self) -> None:
        """Overview, mailings, a mailing, a recipient, the deferred queue (and a domain of
        it) and the suppressions render without horizontal overflow, charts full width."""
        if find_chromium() is None:
            if os.environ.get("HURRICANE_REQUIRE_PEERS") == "1":
                self.fail("chromium is missing and HURRICANE_REQUIRE_PEERS=1")
            raise SkipTest("chromium is not installed (apt-get install -y chromium)")
        from .scenario import populate_report
        base = await self.start_site()
        s = await populate_report(self.store, reactor.seconds())
        pages = {"overview": "/?window=hour", "mailings": "/mailings",
                 "mailing": f"/mailing/{s.sale}", "recipient": f"/delivery/{s.bounced}",
                 "deferred": "/deferred", "deferred-domain": "/deferred/domain/slow.example",
                 "suppressions": "/suppressions"}
        measured = {}
        for name, path in pages.items():
            code, body = await self.request(b"GET", base + path, token=False)
            self.assertEqual(code, 200, (path, body[-300:]))
            copy = os.path.join(self.tmp, f"{name}.html")
            with open(copy, "wb") as f:
                f.write(body.replace(b"</body>", MEASURE.encode() + b"</body>"))
            dom, err, _ = await self.browser("1400,1000", "--dump-dom", "file://" + copy)
            found = re.search(rb'<pre id="measure">(.*?)</pre>', dom)
            self.assertIsNotNone(found, (name, err[-2000:]))
            assert found is not None
            m = json.loads(html.unescape(found.group(1).decode("utf-8")))
            measured[name] = m
            self.assertLessEqual(m["scroll"], m["client"], (name, "the page overflows"))
            self.assertEqual(m["cards"], [], (name, "a card needs a sideways scroll"))
            for chart in m["charts"]:
                self.assertGreaterEqual(chart["width"], 0.98 * chart["inner"], (name, chart))
            png = os.path.join(SCREENSHOT_DIR, f"hurricane-{name}.png")
            await self.browser("1400,1600", "--hide-scrollbars", f"--screenshot={png}",
                               base + path)
            self.assertTrue(os.path.exists(png), (name, "no screenshot"))
        outcomes = {c["label"]: c for c in measured["mailing"]["charts"]}
        self.assertGreaterEqual(outcomes["Outcomes over time"]["bars"], 30)
        self.assertGreaterEqual(outcomes["Time to bounce"]["bars"], 3)
        # The text of the events gets the room: no column of a few characters.
        self.assertTrue(measured["recipient"]["texts"])
        self.assertGreaterEqual(min(measured["recipient"]["texts"]), 300)
        overview = {c["label"]: c for c in measured["overview"]["charts"]}
        self.assertGreaterEqual(overview["Outcomes over time"]["bars"], 2)


async def _populate_async(store: Any, now: float) -> int:
    """Outcomes in a real (asynchronous) store; returns a bounced delivery's id."""
    from hurricane.model import (
        AttemptResult,
        BounceEvent,
        EventKind,
        NewMessage,
        NewRecipient,
        ReturnedMessage,
        State,
    )
    domains = ["gmail.test", "yahoo.test", "outlook.test", "corp.test"]
    last_bounced = 0
    for n in range(48):
        at = now - 86400 + n * 1800
        r = await store.enqueue(NewMessage(
            sender="app@s.test", recipients=tuple(NewRecipient(f"u{n}-{i}@{domains[i % 4]}")
                                                  for i in range(8)),
            body=b"Subject: hi\r\n\r\nhi\r\n", mailing_id="Spring-26"), at)
        ids = [x.delivery_id for x in r.recipients]
        results = []
        for i, d in enumerate(ids):
            if i == 6:
                results.append(AttemptResult(delivery_id=d, state=State.failed, at=at + 2,
                                             code=550, status="5.1.1",
                                             reason="userunknown", text="no such user"))
            elif i == 7 and n % 3 == 0:
                results.append(AttemptResult(delivery_id=d, state=State.deferred, at=at + 2,
                                             code=451,
                                             next_attempt_at=at + 600))
            else:
                results.append(AttemptResult(delivery_id=d, state=State.delivered, at=at + 2,
                                             code=250,
                                             remote_host="mx.test", tls="TLSv1.3",
                                             duration=0.2))
        await store.record_attempts(results)
        if n % 4 == 0:
            bounce_id = await store.store_bounce(ReturnedMessage(
                b"From: MAILER-DAEMON\r\nSubject: failure\r\n\r\nmailbox full", "",
                "x@bounce.test", at + 100))
            await store.record_bounce(bounce_id, [BounceEvent(
                delivery_id=ids[0], kind=EventKind.bounce, at=at + 100, bounce_id=bounce_id,
                reason="mailboxfull" if n % 8 else "filtered", status="5.2.2",
                text="552 mailbox full", rule="dsn")], "bounce", "verp", "{}")
            last_bounced = ids[0]
    return last_bounced
