"""``/sources`` and ``GET /api/v1/sources``: outcomes per source address (issue 21)."""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from hurricane.model import AttemptResult, BounceEvent, EventKind, ReturnedMessage, State

from .helpers import T0, WebFixture, body_of, json_of, run
from .test_queue_pages import BASE


class SourcesTests(SynchronousTestCase):
    """Attempts count for their address, a later bounce for the accepted attempt's."""

    def setUp(self) -> None:
        self.f = WebFixture(populated=False)
        store = self.f.store
        ids = []
        for i in range(4):
            r = run(store.enqueue(_message(f"u{i}@example.org"), T0 - 3600))
            ids.append(r.recipients[0].delivery_id)
        self.ids = ids
        run(store.record_attempts([
            AttemptResult(delivery_id=ids[0], at=T0 - 600, state=State.deferred,
                          source_ip="192.0.2.10"),
            AttemptResult(delivery_id=ids[0], at=T0 - 500, state=State.delivered,
                          source_ip="192.0.2.11"),
            AttemptResult(delivery_id=ids[1], at=T0 - 400, state=State.delivered,
                          source_ip="192.0.2.10"),
            AttemptResult(delivery_id=ids[2], at=T0 - 300, state=State.failed,
                          source_ip="192.0.2.10"),
            # two days ago: outside the default window
            AttemptResult(delivery_id=ids[3], at=T0 - 2 * 86400, state=State.delivered,
                          source_ip="192.0.2.12"),
        ]))
        bounce_id = run(store.store_bounce(ReturnedMessage(b"Subject: x\r\n\r\nx", "",
                                                           "b@bounce.test", T0 - 100)))
        run(store.record_bounce(bounce_id, [BounceEvent(
            delivery_id=ids[1], kind=EventKind.bounce, at=T0 - 100, bounce_id=bounce_id,
            reason="userunknown", status="5.1.1", correlation="verp")], "bounce", "verp", "{}"))

    def test_api(self) -> None:
        response, body = json_of(self.f, self.f.treq.get(BASE + "/api/v1/sources",
                                                         headers=self.f.auth()))
        self.assertEqual(response.code, 200)
        self.assertEqual(body["sources"], {
            "192.0.2.10": {"delivered": 1, "deferred": 1, "failed": 1, "bounced": 1,
                           "complained": 0},
            "192.0.2.11": {"delivered": 1, "deferred": 0, "failed": 0, "bounced": 0,
                           "complained": 0},
        })
        _, older = json_of(self.f, self.f.treq.get(
            BASE + f"/api/v1/sources?since={T0 - 3 * 86400}", headers=self.f.auth()))
        self.assertIn("192.0.2.12", older["sources"])

    def test_page(self) -> None:
        response, text = body_of(self.f, self.f.treq.get(BASE + "/sources"))
        self.assertEqual(response.code, 200, text[-300:])
        rows = re.findall(r"<tr><td[^>]*>(192\.0\.2\.\d+)</td>((?:<td[^>]*>\d+</td>)+)", text)
        cells = {ip: [int(n) for n in re.findall(r">(\d+)<", rest)] for ip, rest in rows}
        self.assertEqual(cells, {"192.0.2.10": [3, 1, 1, 1, 1, 0],
                                 "192.0.2.11": [1, 1, 0, 0, 0, 0]})
        self.assertIn('href="/sources"', text)

    def test_delivery_page_names_the_source(self) -> None:
        """A recipient's attempts say which address they were sent from."""
        _, text = body_of(self.f, self.f.treq.get(BASE + f"/delivery/{self.ids[0]}"))
        self.assertIn('<span class="sub">sent from 192.0.2.10</span>', text)
        self.assertIn('<span class="sub">sent from 192.0.2.11</span>', text)


def _message(recipient: str) -> object:
    from tests.store.contract import message
    return message(recipient)
