"""A mail client's quick resync (RFC 7162) against a real twistd, with Python's imaplib.

What Thunderbird and iOS Mail do after a disconnect: the client synced the folder with
CONDSTORE (every UID, its flags and MODSEQ, and the folder's HIGHESTMODSEQ), went away;
meanwhile another session expunged two messages and flagged a third (it had expunged one
before the sync too, which the client must not hear of again), and the server was
restarted (gracefully, then killed with ``kill -9``). The client comes back with ENABLE QRESYNC
and ``SELECT INBOX (QRESYNC (uidvalidity modseq))`` and must learn exactly what changed from
that one command: the expunged UIDs in ``VANISHED (EARLIER)`` and a FETCH with the new flags of
the changed message, nothing about the untouched one. A server that forgot its MODSEQs or its
expunges in the restart would send too little (the client keeps stale messages) or everything.
"""

from __future__ import annotations

import imaplib
import re
import ssl

import pytest

from tests.e2e.harness import Server
from tests.e2e.test_access_e2e import add_account, deliver_and_wait, imap_ssl, ok

pytestmark = pytest.mark.e2e


@pytest.fixture
def ctx(tls_context: ssl.SSLContext) -> ssl.SSLContext:
    return tls_context


def _text(data: list[object]) -> list[str]:
    return [d.decode() if isinstance(d, bytes) else str(d) for d in data if d is not None]


def full_sync(m: imaplib.IMAP4) -> tuple[int, int, dict[int, tuple[str, int]]]:
    """(UIDVALIDITY, HIGHESTMODSEQ, {UID: (flags, MODSEQ)}) as a CONDSTORE client keeps them."""
    ok(m.enable("QRESYNC"))
    ok(m.select("INBOX"))
    uidvalidity = int(_text(m.response("UIDVALIDITY")[1])[0])
    highest = int(_text(m.response("HIGHESTMODSEQ")[1])[0])
    seen: dict[int, tuple[str, int]] = {}
    for line in _text(ok(m.uid("FETCH", "1:*", "(FLAGS MODSEQ)"))):
        uid = re.search(r"UID (\d+)", line)
        flags = re.search(r"FLAGS \(([^)]*)\)", line)
        modseq = re.search(r"MODSEQ \((\d+)\)", line)
        assert uid and flags and modseq, line
        seen[int(uid.group(1))] = (flags.group(1), int(modseq.group(1)))
    return uidvalidity, highest, seen


def qresync_select(
    m: imaplib.IMAP4, uidvalidity: int, modseq: int
) -> tuple[list[str], list[str], int]:
    """(VANISHED data, FETCH data, HIGHESTMODSEQ) of ``SELECT INBOX (QRESYNC (...))``."""
    ok(m.enable("QRESYNC"))
    ok(m._simple_command("SELECT", f"INBOX (QRESYNC ({uidvalidity} {modseq}))"))
    m.state = "SELECTED"  # imaplib's select() cannot pass parameters
    vanished = _text(m.response("VANISHED")[1])
    fetches = _text(m.response("FETCH")[1])
    highest = int(_text(m.response("HIGHESTMODSEQ")[1])[0])
    return vanished, fetches, highest


def test_qresync_after_disconnect_and_restarts(server: Server, ctx: ssl.SSLContext) -> None:
    pw = add_account(server, "qresync")
    deliver_and_wait(server, "qresync", ["m1", "m2", "m3", "m4", "m5"])
    other = imap_ssl(server, ctx)
    ok(other.login("qresync", pw))
    ok(other.select("INBOX"))
    # Expunged before the client's sync: it must not hear of UID 1 again (the server
    # remembers when each expunge happened, not only that the UID is gone).
    ok(other.uid("STORE", "1", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())

    client = imap_ssl(server, ctx)
    ok(client.login("qresync", pw))
    uidvalidity, highest, seen = full_sync(client)
    assert sorted(seen) == [2, 3, 4, 5]
    assert all(0 < ms <= highest for _f, ms in seen.values())
    client.logout()

    ok(other.uid("STORE", "3,4", "+FLAGS", "(\\Deleted)"))
    ok(other.expunge())
    ok(other.uid("STORE", "2", "+FLAGS", "(\\Flagged)"))
    other.logout()

    server.stop()
    server.start()
    server.kill()
    server.start()

    client = imap_ssl(server, ctx)
    ok(client.login("qresync", pw))
    vanished, fetches, now = qresync_select(client, uidvalidity, highest)
    assert vanished == ["(EARLIER) 3:4"], vanished
    assert len(fetches) == 1, fetches
    assert re.search(r"UID 2\b", fetches[0]) and "\\Flagged" in fetches[0], fetches
    changed = int(re.search(r"MODSEQ \((\d+)\)", fetches[0]).group(1))  # type: ignore[union-attr]
    assert highest < changed <= now

    # The same answer from a FETCH: only UID 2 changed since the old HIGHESTMODSEQ, and
    # from the new one nothing has.
    data = _text(ok(client.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {highest})")))
    assert len(data) == 1 and re.search(r"UID 2\b", data[0]), data
    assert _text(ok(client.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {now})"))) == []
    client.logout()
