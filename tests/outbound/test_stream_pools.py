"""A stream's IP pool (issue 21 item 1, through issue 20's streams): the queue a
delivery waits in, the settings the server builds, and the configuration check."""

from __future__ import annotations

import dataclasses
import os
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from hurricane.config import ConfigError, load_config
from hurricane.outbound.pool import DestinationKey
from hurricane.outbound.queue import OutboundSettings
from tests.outbound.test_pool import delivery

POOLS = ('[[delivery.pools]]\nname = "news"\naddresses = ["127.0.0.2", "127.0.0.3"]\n'
         '[[delivery.pools]]\nname = "tx"\naddresses = ["127.0.0.4"]\n')


def config_text(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class StreamPoolTests(SynchronousTestCase):
    """Mail of a stream that names a pool waits in that pool's queue; other mail in the
    default pool's."""

    def test_key_follows_the_stream(self) -> None:
        pools = {"newsletter": "news", "transactional": "tx"}
        bulk = dataclasses.replace(delivery(1), stream="newsletter")
        default = delivery(2)                                   # stream None: the default
        other = dataclasses.replace(delivery(3), stream="alerts")
        self.assertEqual(DestinationKey.of(bulk, pools), DestinationKey("example.com", "news"))
        self.assertEqual(DestinationKey.of(default, pools), DestinationKey("example.com", "tx"))
        self.assertEqual(DestinationKey.of(other, pools), DestinationKey("example.com", ""))
        self.assertEqual(DestinationKey.of(bulk), DestinationKey("example.com", ""))

    def test_server_settings_carry_the_streams_pools(self) -> None:
        path = config_text(POOLS + '[[streams]]\nname = "newsletter"\nkind = "bulk"\n'
                           'pool = "news"\n[[streams]]\nname = "alerts"\nkind = "transactional"\n')
        self.addCleanup(os.unlink, path)
        settings = OutboundSettings.for_server(load_config(path))
        self.assertEqual(dict(settings.pool.stream_pools), {"newsletter": "news"})

    def test_unknown_pool_is_named(self) -> None:
        path = config_text(POOLS + '[[streams]]\nname = "newsletter"\nkind = "bulk"\n'
                           'pool = "nope"\n')
        self.addCleanup(os.unlink, path)
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertIn("'nope'", str(e))
        self.assertIn("pool", str(e))
