"""The mailings index and the mailing report (issue 18, items 1, 3 and 7)."""

from __future__ import annotations

import html
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import AttemptResult, NewMessage, NewRecipient, State
from hurricane.report import mailings
from hurricane.report.mailings import CLOSED_TTL, OPEN_TTL, REFRESH_PER_VIEW, needs_refresh
from hurricane.report.settle import LOOKBACK, SAMPLE_SIZE, build_model
from hurricane.store.interface import MailingRollup

from .helpers import T0, WebFixture, body_of, run
from .scenario import populate_report

BASE = "http://127.0.0.1"


def cells(page: str, first: str) -> list[str]:
    """The cell texts of the table row whose first cell contains ``first``."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        tds = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if tds and first in tds[0]:
            return [html.unescape(re.sub(r"<[^>]+>", " ", td)).strip() for td in tds]
    raise AssertionError(f"no row for {first!r}")


class Fixture:
    """The report scenario in a MemoryStore behind the site, with a call counter."""

    def __init__(self) -> None:
        self.f = WebFixture(populated=False)
        self.s = run(populate_report(self.f.store, T0))
        self.computed: list[str] = []
        original = self.f.store.mailing_outcomes

        async def counting(mailing_id: str, *args: Any, **kw: Any) -> Any:
            self.computed.append(mailing_id)
            return await original(mailing_id, *args, **kw)

        self.f.store.mailing_outcomes = counting  # type: ignore[method-assign]

    def get(self, path: str, code: int = 200) -> str:
        """A page's text."""
        response, text = body_of(self.f, self.f.treq.get(BASE + path, allow_redirects=False))
        if response.code != code:
            raise AssertionError(f"{path}: {response.code} != {code}: {text[-300:]}")
        return text


class MailingsIndexTests(SynchronousTestCase):
    """``/mailings``: newest first, the figures of each, paged and bounded."""

    def setUp(self) -> None:
        self.x = Fixture()

    def test_newest_first_with_figures(self) -> None:
        """Every mailing is listed newest first with its size, delivered, sync failed,
        async bounced, complaints, queue and settled share, as the store counts them."""
        page = self.x.get("/mailings")
        names = re.findall(r'<a href="/mailing/([^"]+)">', page)
        self.assertEqual(names, [self.x.s.sale, self.x.s.welcome, self.x.s.history])
        row = cells(page, self.x.s.sale)
        summary = run(self.x.f.store.mailing_summary(self.x.s.sale))
        by = summary.by_state
        self.assertEqual(row[2:8], [str(summary.recipients), str(by["delivered"]),
                                    str(by["failed"]), str(by["bounced"]),
                                    str(by["complained"]), str(by["deferred"])])
        self.assertIn("after the queue: 12 still queued or deferred", row[9])
        welcome = cells(page, self.x.s.welcome)
        self.assertEqual(welcome[8], "100.0 %")
        self.assertTrue(welcome[9].startswith("settled at "), welcome[9])

    def test_navigation_and_redirect(self) -> None:
        """Every page has a Mailings item; /mailing redirects to /mailings."""
        self.assertIn('<a href="/mailings">Mailings</a>', self.x.get("/"))
        response, _ = body_of(self.x.f, self.x.f.treq.get(BASE + "/mailing",
                                                          allow_redirects=False))
        self.assertEqual((response.code, response.headers.getRawHeaders("location")),
                         (301, ["/mailings"]))

    def test_figures_reused_then_recomputed(self) -> None:
        """A view computes the figures it lacks and stores them; the next view within
        OPEN_TTL reads them back; a still-changing mailing is computed again after it,
        a settled one only after CLOSED_TTL."""
        self.x.get("/mailings")
        self.assertEqual(sorted(self.x.computed),
                         sorted(["spring-sale", "welcome-7", "newsletter-48"]))
        self.x.computed.clear()
        self.x.f.clock.advance(OPEN_TTL - 1)
        self.x.get("/mailings")
        self.assertEqual(self.x.computed, [])
        self.x.f.clock.advance(1)
        self.x.get("/mailings")
        self.assertEqual(self.x.computed, ["spring-sale"])
        self.x.computed.clear()
        self.x.f.clock.advance(CLOSED_TTL)
        self.x.get("/mailings")
        self.assertEqual(len(self.x.computed), 3)

    def test_new_mailing_appears(self) -> None:
        """A mailing submitted after a view is on the next one, first."""
        self.x.get("/mailings")
        run(self.x.f.store.enqueue(NewMessage(
            sender="", recipients=(NewRecipient("a@x.test"),), body=b"x",
            mailing_id="Late-Addition"), T0 + 5))
        page = self.x.get("/mailings")
        self.assertEqual(re.findall(r'<a href="/mailing/([^"]+)">', page)[0], "Late-Addition")

    def test_paging_and_bounded_work(self) -> None:
        """Pages follow the keyset (no mailing twice, none left out); one view computes
        at most REFRESH_PER_VIEW mailings, and the rest show what is stored."""
        for n in range(30):
            run(self.x.f.store.enqueue(NewMessage(
                sender="", recipients=(NewRecipient(f"r{n}@x.test"),), body=b"x",
                mailing_id=f"m{n:02d}"), T0 + n))
        seen: list[str] = []
        page = self.x.get("/mailings")
        self.assertEqual(len(self.x.computed), REFRESH_PER_VIEW)
        self.assertEqual(page.count("not computed yet"), mailings.INDEX_PAGE - REFRESH_PER_VIEW)
        for _ in range(5):
            seen += re.findall(r'<a href="/mailing/([^"]+)">', page)
            older = [html.unescape(h) for h in re.findall(r'href="(/mailings\?[^"]+)"', page)]
            if not older:
                break
            page = self.x.get(older[-1])
        self.assertEqual(seen, [f"m{n:02d}" for n in reversed(range(30))]
                         + [self.x.s.sale, self.x.s.welcome, self.x.s.history])

    def test_bad_keyset(self) -> None:
        """A keyset half given is a 400 naming the field."""
        page = self.x.get("/mailings?before_at=5", code=400)
        self.assertIn("before_at", page)


class NeedsRefreshTests(SynchronousTestCase):
    """needs_refresh: stored figures are reused while they can be trusted."""

    def rollup(self, pending: int, settles_at: float | None) -> MailingRollup:
        """A rollup computed at T0."""
        return MailingRollup(mailing_key="m", mailing_id="m", first_at=T0, computed_at=T0,
                             last_at=T0, messages=1,
                             by_state={"delivered": 1, "deferred": pending}, settled=0,
                             settles_at=settles_at)

    def test_table(self) -> None:
        """Missing: always; open (pending, or settling after it was computed): after
        OPEN_TTL; closed: after CLOSED_TTL."""
        self.assertTrue(needs_refresh(None, T0))
        for pending, settles_at, ttl in ((1, None, OPEN_TTL), (0, T0 + 10, OPEN_TTL),
                                         (0, T0, CLOSED_TTL), (0, None, CLOSED_TTL)):
            r = self.rollup(pending, settles_at)
            self.assertFalse(needs_refresh(r, T0 + ttl - 1), (pending, settles_at))
            self.assertTrue(needs_refresh(r, T0 + ttl), (pending, settles_at))


class MailingPageTests(SynchronousTestCase):
    """``/mailing/<id>``: the full report of one mailing."""

    def setUp(self) -> None:
        self.x = Fixture()

    def test_figures_and_settling(self) -> None:
        """The key figures are the store's; the status says what it waits for; the
        figures are stored for the index."""
        page = self.x.get(f"/mailing/{self.x.s.sale}")
        figures = dict((label.lower(), int(v)) for v, label in re.findall(
            r'<div class="v">(\d+)</div><div class="l">([^<]+)</div>', page))
        self.assertEqual(figures, {"recipients": 240, "delivered": 180, "sync failed": 24,
                                   "async bounced": 12, "complaints": 12, "in queue": 12,
                                   "expired": 0})
        self.assertIn("Not settled: 12 recipients are still queued or deferred", page)
        entry = run(self.x.f.store.mailings())[0]
        self.assertEqual((entry.mailing_key, entry.rollup.recipients), ("spring-sale", 240))

    def test_settling_time(self) -> None:
        """Once nothing is pending the page says when late bounces become improbable: the
        last delivery plus the settling delay of its domain; later, settled."""
        page = self.x.get(f"/mailing/{self.x.s.welcome}")
        self.assertIn("Settled: every recipient has a final outcome", page)
        history = self.x.get(f"/mailing/{self.x.s.history}")
        self.assertIn("Settled", history)
        # The sale's deferred recipients are delivered: it is settling now.
        run(self.x.f.store.record_attempts([
            AttemptResult(delivery_id=d, state=State.delivered, at=T0 + 10)
            for d in self.x.s.deferred]))
        page = self.x.get(f"/mailing/{self.x.s.sale}")
        model = build_model(run(self.x.f.store.late_outcomes(T0 - LOOKBACK, SAMPLE_SIZE)))
        settles = T0 + 10 + max(model.delay(d) for d in
                                ("gmail.test", "yahoo.test", "outlook.test", "example.org",
                                 "gmx.test", "orange.test"))
        self.assertIn("Settling: late bounces become improbable at "
                      + mailings.fmt_time(settles), page)

    def test_chart_reasons_latencies_domains(self) -> None:
        """The page has the outcome chart (several bars for a 14-second mailing), reasons
        split sync/async, the time-to-bounce histogram and the domains table."""
        page = self.x.get(f"/mailing/{self.x.s.sale}")
        chart = page[page.index('aria-label="Outcomes over time"'):]
        chart = chart[:chart.index("</svg>")]
        self.assertGreater(len(set(re.findall(r'<rect x="([\d.]+)"[^>]*class="bar"', chart))),
                           30)
        self.assertEqual(cells(page, "spamdetected")[1:], ["12", "0", "12"])
        self.assertEqual(cells(page, "mailboxfull")[1:], ["0", "12", "12"])
        self.assertIn('aria-label="Time to bounce"', page)
        self.assertIn("24 late outcomes", page)
        gmail = cells(page, "gmail.test")
        self.assertEqual(gmail[1], "40")
        self.assertIn("measured", gmail[8])

    def test_state_filter_and_404(self) -> None:
        """The recipients list takes a state; an unknown mailing is a 404."""
        page = self.x.get(f"/mailing/{self.x.s.sale}?state=failed")
        self.assertEqual(len(re.findall(r'href="/delivery/\d+"', page)), 24)
        self.x.get("/mailing/nothing-here", code=404)
