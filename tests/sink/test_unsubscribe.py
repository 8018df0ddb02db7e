"""The sink's readers who unsubscribe: what they send, built from the message they got."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from hurricane.sink.returns import Accepted, build_return, list_unsubscribe
from hurricane.sink.scenario import default_scenario

MESSAGE = (b"Received: by sink\r\n"
           b"List-Unsubscribe: <http://127.0.0.1:8025/u/abc.news>,\r\n"
           b" <mailto:u-abc.news@bounces.shop.test>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
           b"Subject: hi\r\n\r\nbody\r\n")


def accepted(data: bytes = MESSAGE, rcpt: str = "unsub-1@x.test") -> Accepted:
    return Accepted("hxyz@bounces.shop.test", rcpt, data, 10.0, "S1")


class SinkUnsubscribeTests(SynchronousTestCase):
    """unsub-* posts the one-click form; unsubmail-* mails the mailto address."""

    def test_links(self) -> None:
        self.assertEqual(list_unsubscribe(MESSAGE), ("http://127.0.0.1:8025/u/abc.news",
                                                     "u-abc.news@bounces.shop.test"))
        self.assertEqual(list_unsubscribe(b"Subject: x\r\n\r\n"), (None, None))

    def test_behaviours(self) -> None:
        scenario = default_scenario()
        post = build_return(accepted(), scenario.decide("unsub-1@x.test"), "mx", 11.0)
        assert post is not None
        self.assertEqual((post.kind, post.rcpt, post.data),
                         ("unsubscribe", "http://127.0.0.1:8025/u/abc.news",
                          b"List-Unsubscribe=One-Click"))
        mail = build_return(accepted(rcpt="unsubmail-1@x.test"),
                            scenario.decide("unsubmail-1@x.test"), "mx", 11.0)
        assert mail is not None
        self.assertEqual((mail.kind, mail.mail_from, mail.rcpt),
                         ("unsubscribe-mailto", "unsubmail-1@x.test",
                          "u-abc.news@bounces.shop.test"))
        # A message without the header (transactional mail): nothing to do.
        self.assertIsNone(build_return(accepted(b"Subject: x\r\n\r\n"),
                                       scenario.decide("unsub-1@x.test"), "mx", 11.0))
