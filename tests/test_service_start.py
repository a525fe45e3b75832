"""cgtwist.service's start-up: what it does before the server's parts are built."""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from cgtwist import app, durable
from cgtwist.service import CgtwistService
from tests.test_app import base_config


class _Stop(Exception):
    """Ends the start-up where the server's parts would be built."""


def _stop(*args: Any, **kwargs: Any) -> Any:
    raise _Stop()


class BaseDirectoryTests(unittest.TestCase):
    def test_a_new_base_directory_is_made_durably_off_the_reactor(self) -> None:
        """On a new base directory, Queue/, Domains/ and Submitted/ are each fsynced in the
        base directory once made (a power cut must not lose the folder and the mail later put
        in it), and that work runs in a thread, never on the reactor thread."""
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        synced: list[tuple[str, bool]] = []
        real = durable.fsync_dir

        def fsync_dir(path: str) -> None:
            synced.append((path, threading.current_thread() is threading.main_thread()))
            real(path)

        self.patch(durable, "fsync_dir", fsync_dir)
        self.patch(app, "Components", _stop)
        service = CgtwistService(base_config(base), reactor)
        self.patch(service.tls, "reload", lambda: None)
        d = defer.ensureDeferred(service._start())

        def check(_: Any) -> None:
            for sub in ("Queue", "Domains", "Submitted"):
                self.assertTrue(os.path.isdir(os.path.join(base, sub)), sub)
            in_base = [on_reactor for path, on_reactor in synced if path == base]
            self.assertEqual(in_base, [False, False, False])

        return self.assertFailure(d, _Stop).addCallback(check)
