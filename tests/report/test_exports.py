"""Every export link carries its page's filter: the CSV holds exactly the page's rows.

For each page that lists rows under a filter (search terms, a window, a
state, a mailing id in the path, a deferred domain, a found address), the
test follows the page's own "Export" link and compares the CSV's rows with
the rows of the page, every page of them (its "Next page" links).
"""

from __future__ import annotations

import csv
import html
import io
import re

from twisted.trial.unittest import SynchronousTestCase

from .helpers import T0, WebFixture, body_of, run
from .scenario import populate_report

BASE = "http://127.0.0.1"


def links(page: str) -> list[str]:
    """Every href of a page, unescaped."""
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', page)]


def export_link(page: str) -> str:
    """The one export link of a page."""
    found = [h for h in links(page) if h.startswith("/export/")]
    if len(found) != 1:
        raise AssertionError(f"expected one export link, found {found}")
    return found[0]


def delivery_ids(page: str) -> list[int]:
    """The delivery ids a page lists (its rows link to /delivery/<id>)."""
    return [int(x) for x in re.findall(r'href="/delivery/(\d+)"', page)]


def csv_records(text: str) -> list[dict[str, str]]:
    """The records of a CSV text."""
    header, *rows = list(csv.reader(io.StringIO(text, newline="")))
    return [dict(zip(header, row, strict=True)) for row in rows]


class ExportLinkTests(SynchronousTestCase):
    """The CSV behind each page's export link has the page's rows, no more, no fewer."""

    def setUp(self) -> None:
        self.f = WebFixture(populated=False)
        self.s = run(populate_report(self.f.store, T0))

    def get(self, path: str) -> str:
        """A page's text (200 expected)."""
        response, text = body_of(self.f, self.f.treq.get(BASE + path))
        self.assertEqual(response.code, 200, (path, text[-500:]))
        return text

    def all_rows(self, path: str) -> tuple[list[int], str]:
        """The delivery ids of a list over all its pages, and the first page's export link."""
        page = self.get(path)
        export = export_link(page)
        ids = delivery_ids(page)
        for _ in range(50):
            following = [h for h in links(page) if "before=" in h]
            if not following:
                break
            page = self.get(following[-1])
            self.assertEqual(export_link(page), export)  # the same filter on every page
            ids += delivery_ids(page)
        return ids, export

    def assert_same_rows(self, path: str) -> list[dict[str, str]]:
        """The page's rows (all pages) are the CSV's rows, in the same order."""
        ids, export = self.all_rows(path)
        response, text = body_of(self.f, self.f.treq.get(BASE + export))
        self.assertEqual(response.code, 200)
        records = csv_records(text)
        self.assertEqual([int(r["delivery_id"]) for r in records], ids, export)
        self.assertTrue(ids, path)
        return records

    def test_mailing_page(self) -> None:
        """A mailing's page (its id in the path, 240 recipients over 5 pages) exports that
        mailing's recipients, not everything (the bug of issue 18)."""
        records = self.assert_same_rows(f"/mailing/{self.s.sale}")
        self.assertEqual(len(records), 240)
        self.assertEqual({r["mailing_id"] for r in records}, {self.s.sale})

    def test_mailing_page_with_state(self) -> None:
        """The mailing's state filter goes into the export too."""
        records = self.assert_same_rows(f"/mailing/{self.s.sale}?state=deferred")
        self.assertEqual({r["state"] for r in records}, {"deferred"})
        self.assertEqual(len(records), len(self.s.deferred))

    def test_mailing_page_case_insensitive(self) -> None:
        """A mailing reached by another case of its id exports the same rows."""
        self.assertEqual(len(self.assert_same_rows(f"/mailing/{self.s.sale.upper()}")), 240)

    def test_search(self) -> None:
        """Search terms (a field and its term), a state and a domain."""
        self.assert_same_rows("/search?field=mailing_id&q=" + self.s.welcome)
        records = self.assert_same_rows("/search?field=mailing_id&q=spring-sale&state=failed"
                                        "&domain=gmail.test")
        self.assertEqual({(r["state"], r["recipient"].split("@")[1]) for r in records},
                         {("failed", "gmail.test")})
        self.assert_same_rows("/search?field=recipient&q=user013@yahoo.test")

    def test_search_in_a_window(self) -> None:
        """A window (the overview's domain links carry one) limits the export as the page."""
        since, until = T0 - 3600, T0
        records = self.assert_same_rows(
            f"/search?domain=orange.test&since={since!r}&until={until!r}")
        self.assertEqual(len(records), 40 + 6)  # the sale's and the receipts

    def test_deferred_domain(self) -> None:
        """A deferred domain's page exports that domain's deferred deliveries."""
        records = self.assert_same_rows("/deferred/domain/slow.example")
        self.assertEqual(sorted(int(r["delivery_id"]) for r in records), sorted(self.s.slow))
        self.assertEqual({r["state"] for r in records}, {"deferred"})

    def test_overview_window(self) -> None:
        """The overview's export holds the recipients its figures count, in its window."""
        page = self.get("/?window=hour")
        export = export_link(page)
        self.assertIn("since=", export)
        response, text = body_of(self.f, self.f.treq.get(BASE + export))
        records = csv_records(text)
        summary = run(self.f.store.summary(T0 - 3600 + 1, T0 + 1))
        # window=hour ends at the next 5-minute mark after now
        self.assertEqual(len(records), summary.recipients)
        shown = re.search(r"<div class=\"v\">(\d+)</div><div class=\"l\">Recipients", page)
        assert shown is not None
        self.assertEqual(len(records), int(shown.group(1)))

    def test_suppressions_find(self) -> None:
        """Finding an address on the list exports that entry; the whole list exports all."""
        page = self.get("/suppressions?address=blocked@example.org")
        response, text = body_of(self.f, self.f.treq.get(BASE + export_link(page)))
        self.assertEqual([r["address"] for r in csv_records(text)], ["blocked@example.org"])
        page = self.get("/suppressions?address=nobody@example.org")
        response, text = body_of(self.f, self.f.treq.get(BASE + export_link(page)))
        self.assertEqual(csv_records(text), [])
        page = self.get("/suppressions")
        # The global list's table (the stream, mailing and domain entries follow it).
        listed = re.findall(r'name="address" value="([^"]+)"',
                            page.split("Stream, mailing and domain entries", 1)[0])
        response, text = body_of(self.f, self.f.treq.get(BASE + export_link(page)))
        self.assertEqual([r["address"] for r in csv_records(text)], listed)

    def test_no_site_wide_export(self) -> None:
        """The navigation has no export of everything (a page's link is its filter's)."""
        for path in ("/", "/mailings", f"/mailing/{self.s.sale}", "/deferred"):
            page = self.get(path)
            nav = page[page.index("<header>"):page.index("</header>")]
            self.assertNotIn("/export/", nav)
