"""cgtwist.app.Components: what building the server's parts does with the reactor."""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from cgtwist import durable
from cgtwist.app import Components
from cgtwist.config import BootstrapConfig
from cgtwist.settings import SettingsHolder


def base_config(base: str) -> BootstrapConfig:
    """A bootstrap config over the new base directory ``base``: its own SQLite store, a
    certificate that is never made, a nameserver on loopback that is never asked."""
    return BootstrapConfig(
        base_dir=base,
        main_domain="example.test",
        hostname="mx.example.test",
        database_url="sqlite:///" + os.path.join(base, "cgtwist.db"),
        certificate=os.path.join(base, "none.pem"),
        key=os.path.join(base, "none.key"),
        generated_certificate=False,
        nameservers=("127.0.0.1:1",),
    )


class SpoolLayoutTests(unittest.TestCase):
    def test_a_new_spool_is_made_off_the_reactor(self) -> None:
        """On a new base directory the spool's directories (a syncfs of the file system and a
        directory fsync each, which can wait on the disk for long) are made in a thread: the
        reactor thread, which already runs the store's replies, never waits for them."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        on_reactor: list[bool] = []
        real = durable.sync_filesystem

        def sync(path: str) -> None:
            on_reactor.append(threading.current_thread() is threading.main_thread())
            real(path)

        self.patch(durable, "sync_filesystem", sync)
        parts = Components(base_config(base), reactor, SettingsHolder(), tls=None)

        async def build() -> None:
            try:
                await parts.open_reception()
            finally:
                await parts.close()

        def check(_: Any) -> None:
            self.assertTrue(os.path.isdir(os.path.join(base, "Queue", "incoming")))
            self.assertTrue(on_reactor, "the file system was never synced")
            self.assertNotIn(True, on_reactor)

        return defer.ensureDeferred(build()).addCallback(check)
