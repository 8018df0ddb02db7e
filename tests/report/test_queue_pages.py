"""The recipient page, the deferred queue by domain and the suppression list (issue 18,
items 4 to 6)."""

from __future__ import annotations

import html
import re

from twisted.trial.unittest import SynchronousTestCase

from hurricane.report.html import CSS

from .helpers import T0, WebFixture, body_of, run
from .scenario import GREY_TEXT, LONG_TOKEN, SLOW_TEXT, populate_report
from .test_mailings import cells

BASE = "http://127.0.0.1"


class Base(SynchronousTestCase):
    """The report scenario behind the site."""

    def setUp(self) -> None:
        self.f = WebFixture(populated=False)
        self.s = run(populate_report(self.f.store, T0))

    def get(self, path: str, code: int = 200) -> str:
        """A page's text."""
        response, text = body_of(self.f, self.f.treq.get(BASE + path, allow_redirects=False))
        self.assertEqual(response.code, code, text[-300:])
        return text

    @staticmethod
    def fmt(at: float) -> str:
        """A time as the pages write it."""
        from hurricane.report.html import fmt_time
        return fmt_time(at)

    def info(self, page: str) -> dict[str, str]:
        """The Field/Value table of a recipient page."""
        table = page[:page.index("Attempts and events")]
        return {html.unescape(k): html.unescape(re.sub(r"<[^>]+>", "", v)) for k, v in
                re.findall(r'<tr><td class="nowrap">([^<]+)</td><td class="wrap">(.*?)</td>',
                           table)}


class RecipientPageTests(Base):
    """``/delivery/<id>``: accepted and bounced, the text wraps by word, the remote named."""

    def test_bounced_says_accepted_by_remote(self) -> None:
        """A bounced recipient shows "Accepted by remote" (not "Delivered") and "Bounced"
        with the time between them."""
        d = run(self.f.store.get_delivery(self.s.bounced))
        info = self.info(self.get(f"/delivery/{self.s.bounced}"))
        self.assertNotIn("Delivered", info)
        self.assertEqual(info["Accepted by remote"], self.fmt(d.delivered_at))
        gap = d.bounced_at - d.delivered_at
        self.assertEqual(info["Bounced"], f"{self.fmt(d.bounced_at)} ({int(gap) // 60} min "
                                          f"{int(gap) % 60} s after the remote accepted it)")

    def test_complained(self) -> None:
        """A complained recipient shows when the remote accepted it and when it complained."""
        info = self.info(self.get(f"/delivery/{self.s.complained}"))
        self.assertIn("Accepted by remote", info)
        self.assertEqual(info["Complained"].split(" (")[1], "15 min after the remote accepted it)")

    def test_delivered_stays_delivered(self) -> None:
        """A delivered recipient still says Delivered."""
        found = run(self.f.store.search_deliveries(mailing_id=self.s.sale, state="delivered",
                                                   limit=1))
        info = self.info(self.get(f"/delivery/{found[0].delivery_id}"))
        self.assertIn("Delivered", info)
        self.assertNotIn("Accepted by remote", info)

    def test_text_column_and_remote(self) -> None:
        """The events table's text cell is the wide one that wraps by word (no per-character
        breaking anywhere), and the remote column names host and address."""
        page = self.get(f"/delivery/{self.s.failed_spam}")
        self.assertIn('<th class="text">Text</th>', page)
        self.assertIn("<th class=\"\">Remote host (address)</th>", page)
        self.assertRegex(page, r'<td class="">mx2\.[a-z.]+ \(192\.0\.2\.11\)</td>')
        self.assertIn('<th class="nowrap">Reply</th><th class="text">Text</th>', page)
        self.assertIn('<td class="text"><span class="mono">5.7.1 Message rejected', page)
        self.assertNotIn("break-all", CSS)
        self.assertIn("td.text{width:40%;min-width:18em;overflow-wrap:anywhere;"
                      "word-break:normal}", CSS)
        self.assertIn(LONG_TOKEN, html.unescape(page))


class DeferredTests(Base):
    """``/deferred`` by domain with the last error; a page per domain."""

    def test_domains_with_last_error(self) -> None:
        """Each domain row links to its page and shows the last error once (status not
        repeated), and where it came from."""
        page = self.get("/deferred")
        row = cells(page, "slow.example")
        self.assertEqual(row[1], "5")
        # the status once: the text starts with it
        self.assertEqual(row[4], f"421 {SLOW_TEXT}  from mx.slow.example")
        self.assertIn('href="/deferred/domain/slow.example"', page)
        gmail = cells(page, "gmail.test")
        self.assertIn("Greylisted for 300 seconds", gmail[4])

    def test_domain_page(self) -> None:
        """The domain page lists its deferred deliveries with attempts, next attempt, last
        error and a retry button each, and a retry for all."""
        page = self.get("/deferred/domain/gmail.test")
        ids = [int(x) for x in re.findall(r'href="/delivery/(\d+)"', page)]
        gmail = {d for d in self.s.deferred
                 if run(self.f.store.get_delivery(d)).domain == "gmail.test"}
        self.assertEqual(set(ids), gmail)
        one = run(self.f.store.get_delivery(ids[0]))
        self.assertIn(html.escape(GREY_TEXT.format(rcpt=one.recipient)), page)
        self.assertEqual(page.count('name="delivery_id"'), len(gmail))
        self.assertEqual(page.count("Retry now</button>"), len(gmail) + 1)
        self.assertEqual(self.get("/deferred/domain/GMAIL.test"), page)

    def test_retry_one_from_the_domain_page(self) -> None:
        """Retrying one delivery from its domain's page makes it due and comes back there."""
        csrf = self.f.site.access.csrf_token("local")
        d = self.s.slow[0]
        response, _ = body_of(self.f, self.f.treq.post(
            BASE + "/deferred/retry", data={"csrf": csrf, "domain": "slow.example",
                                            "delivery_id": str(d)}, allow_redirects=False))
        self.assertEqual(response.code, 303)
        location = response.headers.getRawHeaders("location")[0]
        self.assertTrue(location.startswith("/deferred/domain/slow.example?done="), location)
        self.assertEqual(run(self.f.store.get_delivery(d)).next_attempt_at, T0)
        self.assertNotEqual(run(self.f.store.get_delivery(self.s.slow[1])).next_attempt_at, T0)


class SuppressionPageTests(Base):
    """``/suppressions``: a total, and each entry linked to what caused it."""

    def test_total_and_causes(self) -> None:
        """The page says how many addresses are on the list; an entry a bounce or a
        refusal put there links to that delivery; one added by hand says so."""
        page = self.get("/suppressions")
        total = run(self.f.store.suppression_count())
        self.assertIn(f'<div class="v">{total}</div><div class="l">Suppressed addresses', page)
        entry = run(self.f.store.get_suppression("user018@gmail.test"))
        delivery = run(self.f.store.suppression_causes([entry.event_id]))[entry.event_id]
        self.assertIn(f'<a href="/delivery/{delivery}">delivery {delivery}</a>', page)
        self.assertEqual(cells(page, "user018@gmail.test")[3], f"delivery {delivery}")
        self.assertEqual(cells(page, "blocked@example.org")[3], "added by hand")
        recipient = run(self.f.store.get_delivery(delivery)).recipient
        self.assertEqual(recipient, "user018@gmail.test")
