"""Every route of the site answers as it did before the resource tree: a status table.

The table was taken from the hand-routed site the tree replaced (the same
answers; the one difference, POST /suppressions/remove without an address,
is the operations' validation: 400 instead of a redirect) so that a change
to the tree that moves a URL, a method or an auth check fails here. Issue 18
changed one answer on purpose (``/mailing`` redirects to the new mailings
index instead of 404) and added ``/mailings`` and ``/deferred/domain/<d>``.
Columns: GET HEAD POST PUT DELETE, first with the API token, then without
(the pages need no login here: a loopback listener without [web.users]).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .helpers import WebFixture, body_of

ROUTES = [
    ('/', "200 200 405 405 405", "200 200 405 405 405"),
    ('//', "200 200 405 405 405", "200 200 405 405 405"),
    ('/search', "200 200 405 405 405", "200 200 405 405 405"),
    ('/search/', "200 200 405 405 405", "200 200 405 405 405"),
    ('/search/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/deferred', "200 200 405 405 405", "200 200 405 405 405"),
    ('/deferred/retry', "404 404 400 405 405", "404 404 400 405 405"),
    ('/deferred/domain', "404 404 405 405 405", "404 404 405 405 405"),
    ('/deferred/domain/two.test', "200 200 405 405 405", "200 200 405 405 405"),
    ('/deferred/domain/two.test/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/deferred/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/suppressions', "200 200 405 405 405", "200 200 405 405 405"),
    ('/suppressions/add', "404 404 400 405 405", "404 404 400 405 405"),
    ('/suppressions/remove', "404 404 400 405 405", "404 404 400 405 405"),
    ('/mailings', "200 200 405 405 405", "200 200 405 405 405"),
    ('/mailings/', "200 200 405 405 405", "200 200 405 405 405"),
    ('/mailings/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/mailing', "301 301 405 405 405", "301 301 405 405 405"),
    ('/mailing/', "301 301 405 405 405", "301 301 405 405 405"),
    ('/mailing/spring-26', "200 200 405 405 405", "200 200 405 405 405"),
    ('/mailing/spring-26/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/mailing/none', "404 404 405 405 405", "404 404 405 405 405"),
    ('/message/{qid}', "200 200 405 405 405", "200 200 405 405 405"),
    ('/message/{qid}/body', "200 200 405 405 405", "200 200 405 405 405"),
    ('/message/{qid}/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/delivery/{later}', "200 200 405 405 405", "200 200 405 405 405"),
    ('/delivery/{later}/', "200 200 405 405 405", "200 200 405 405 405"),
    ('/delivery//{later}', "404 404 405 405 405", "404 404 405 405 405"),
    ('/delivery/abc', "404 404 405 405 405", "404 404 405 405 405"),
    ('/bounce/{bid}', "200 200 405 405 405", "200 200 405 405 405"),
    ('/bounce/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/export', "404 404 405 405 405", "404 404 405 405 405"),
    ('/export/outcomes.csv', "200 200 405 405 405", "200 200 405 405 405"),
    ('/export/deliveries.csv', "200 200 405 405 405", "200 200 405 405 405"),
    ('/export/suppressions.csv', "200 200 405 405 405", "200 200 405 405 405"),
    ('/export/x', "404 404 405 405 405", "404 404 405 405 405"),
    ('/nothing', "404 404 405 405 405", "404 404 405 405 405"),
    ('/metrics', "200 200 405 405 405", "200 200 405 405 405"),
    ('/metrics/x', "200 200 405 405 405", "200 200 405 405 405"),
    ('/api', "404 404 404 404 404", "404 404 404 404 404"),
    ('/api/', "404 404 404 404 404", "404 404 404 404 404"),
    ('/api/x/y', "404 404 404 404 404", "404 404 404 404 404"),
    ('/api/v1', "404 404 404 404 404", "401 401 401 401 401"),
    ('/api/v1/nothing', "404 404 404 404 404", "401 401 401 401 401"),
    ('/api/v1/messages', "405 405 400 405 405", "401 401 401 401 401"),
    ('/api/v1/messages/{qid}', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/messages/{qid}/x', "405 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/deliveries', "405 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/deliveries/{ok}', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/deliveries/abc', "400 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/deliveries//1', "405 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/recipients/ok@one.test', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/mailings/spring-26', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/mailings/spring-26/recipients', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/mailings/spring-26/x', "405 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/summary', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/summary/', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/summary/x', "405 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1/suppressions', "200 405 400 405 405", "401 401 401 401 401"),
    ('/api/v1/suppressions/gone@one.test', "200 405 405 405 200", "401 401 401 401 401"),
    ('/api/v1/suppressions/a/b', "405 405 405 405 405", "401 401 401 401 401"),
    ('/%61pi/v1/summary', "200 405 405 405 405", "401 401 401 401 401"),
    ('/api/v1//summary', "404 404 404 404 404", "401 401 401 401 401"),
]

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")


class RouteTableTests(SynchronousTestCase):
    """The status of every (path, method, token) the table lists."""

    def test_routes(self) -> None:
        """Each path answers each method with the table's status, with and without a token;
        the requests run in the table's order (a DELETE removes what it names)."""
        f = WebFixture()
        ids = f.data["ids"]
        csrf = f.site.access.csrf_token("local")
        for template, with_token, without_token in ROUTES:
            path = template.format(qid=f.data["result"].queue_id, later=ids[2], ok=ids[0],
                                   bid=f.data["bounce_id"])
            for headers, expected in ((f.auth(), with_token), ({}, without_token)):
                got = []
                for method in METHODS:
                    extra = {"data": {"csrf": csrf}} if method == "POST" else {}
                    response, _ = body_of(f, f.treq.request(
                        method, "http://127.0.0.1" + path, headers=headers,
                        allow_redirects=False, **extra))
                    got.append(str(response.code))
                self.assertEqual(" ".join(got), expected, (template, bool(headers)))
