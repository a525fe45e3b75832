"""Shared fixtures: one running server per module, with a domain and two accounts."""

from __future__ import annotations

import os
import ssl
from typing import Iterator

import pytest

from tests.e2e.harness import ALL_LISTENERS, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("cgtwist"))
    srv = Server(os.path.join(base, "base"))
    srv.set_listeners(ALL_LISTENERS)
    with srv.running():
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        srv.admin("account", "add", "bob@example.test", "--password", "bob-secret")
        yield srv


@pytest.fixture
def tls_context(server: Server) -> ssl.SSLContext:
    """A client context that verifies the server's generated certificate for 'localhost'."""
    return server.tls_context()
