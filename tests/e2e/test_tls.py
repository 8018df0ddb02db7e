"""STARTTLS between Hurricane's outbound client and the sink, on real sockets."""

from __future__ import annotations

import dataclasses

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from hurricane.demo import Rig
from hurricane.sink.scenario import default_scenario
from tests.e2e.helpers import tmpdir


class SinkTLSTests(TestCase):
    """The sink offers STARTTLS with a trustme certificate, or breaks the handshake."""

    timeout = 60

    async def deliver(self, tls: str, wait: float) -> tuple[Rig, dict[str, str]]:
        rig = Rig(reactor, tmpdir(self), dataclasses.replace(default_scenario(), tls=tls),
                  web=False, delivery={"first_retry": 0.3, "max_retry_interval": 0.6,
                                       "max_age": 2.0})
        await rig.start()
        rig.sink.keep = True
        self.addCleanup(lambda: Deferred.fromCoroutine(rig.stop()))
        await rig.submit(["reader@tls.test"], connections=1)
        await rig.wait_settled(wait)
        records = await rig.store.outcomes()
        return rig, {r.recipient: r.state for r in records}

    def test_opportunistic_starttls(self) -> Deferred[None]:
        """With tls = "on" the message is delivered over TLS (Received: ... with ESMTPS)."""
        async def scenario() -> None:
            rig, states = await self.deliver("on", 15)
            self.assertEqual(states, {"reader@tls.test": "delivered"})
            ((acc, _),) = rig.sink.accepted
            self.assertIn(b"with ESMTPS", acc.data.split(b"\r\n\r\n")[0])

        return Deferred.fromCoroutine(scenario())

    def test_failed_handshake_is_not_delivered(self) -> Deferred[None]:
        """With tls = "fail" nothing is accepted and the recipient ends deferred or expired."""
        async def scenario() -> None:
            rig, states = await self.deliver("fail", 8)
            self.assertEqual(rig.sink.accepted, [])
            self.assertIn(states["reader@tls.test"], ("deferred", "expired"))

        return Deferred.fromCoroutine(scenario())
