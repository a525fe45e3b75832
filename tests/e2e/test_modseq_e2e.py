"""MODSEQ end to end: flag changes made by real IMAP sessions against a real twistd keep their
MODSEQ across a graceful restart and a ``kill -9``, and a change after either gets a MODSEQ
above every earlier one (the base CONDSTORE/QRESYNC clients resync from, RFC 7162).

The server's folder index is read the way the server reads it when it starts again: a fresh
mailstore over a copy of the Maildir (so the test never writes the server's files).
"""

from __future__ import annotations

import imaplib
import os
import shutil
import ssl
import tempfile

import pytest

from cgtwist.mailstore import MailboxNotifier, MaildirAccount
from tests.e2e.harness import Server
from tests.e2e.test_access_e2e import add_account, deliver_and_wait, imap_ssl, ok
from tests.mailstore.test_mailstore import result

pytestmark = pytest.mark.e2e


@pytest.fixture
def ctx(tls_context: ssl.SSLContext) -> ssl.SSLContext:
    return tls_context


def index_state(server: Server, account: str) -> tuple[dict[int, int], int, dict[int, list[str]]]:
    """({UID: MODSEQ}, HIGHESTMODSEQ, {UID: flags}) of the account's INBOX as a restarted
    server would load them from its index and the Maildir."""
    copy = os.path.join(tempfile.mkdtemp(prefix="modseq-"), "Maildir")
    try:
        shutil.copytree(server.maildir(account), copy)
        acct = MaildirAccount(copy, f"{account}@example.test", MailboxNotifier())
        box = result(acct.select("INBOX", False))
        modseqs = {u: box.modseq_of(u) or 0 for u in box.uids}
        flags = {u: [f for f in box.flags_of(u) if f != "\\Recent"] for u in box.uids}
        return modseqs, box.highest_modseq, flags
    finally:
        shutil.rmtree(os.path.dirname(copy), ignore_errors=True)


def store(m: imaplib.IMAP4, uid: int, change: str, flags: str) -> None:
    ok(m.uid("STORE", str(uid), change, flags))


def test_modseq_survives_restart_and_kill_9(server: Server, ctx: ssl.SSLContext) -> None:
    pw = add_account(server, "modseq")
    deliver_and_wait(server, "modseq", ["m1", "m2", "m3"])
    one, two = imap_ssl(server, ctx), imap_ssl(server, ctx)
    for m in (one, two):
        ok(m.login("modseq", pw))
        ok(m.select("INBOX"))
    # Two sessions change flags in turn; the last change is to UID 2.
    store(one, 1, "+FLAGS", "(\\Seen)")
    store(two, 3, "+FLAGS", "(\\Flagged)")
    store(one, 1, "+FLAGS", "(\\Answered)")
    store(two, 2, "+FLAGS", "($Label1)")
    for m in (one, two):
        m.logout()
    server.kill()

    modseqs, high, flags = index_state(server, "modseq")
    assert flags == {1: ["\\Answered", "\\Seen"], 2: ["$Label1"], 3: ["\\Flagged"]}
    # Changed in the order 3, 1, 2 (the first change to 1 was overtaken by its second).
    assert 0 < modseqs[3] < modseqs[1] < modseqs[2] <= high, modseqs

    # A graceful restart keeps every MODSEQ.
    server.start()
    server.stop()
    server.start()
    assert index_state(server, "modseq")[0] == modseqs

    # A change after the crash and restarts is above everything handed out before, the
    # others keep theirs, and a second kill -9 loses none of it.
    m = imap_ssl(server, ctx)
    ok(m.login("modseq", pw))
    ok(m.select("INBOX"))
    store(m, 3, "-FLAGS", "(\\Flagged)")
    m.logout()
    server.kill()
    after, high2, flags2 = index_state(server, "modseq")
    assert flags2[3] == []
    assert after[3] > high
    assert (after[1], after[2]) == (modseqs[1], modseqs[2])
    assert high2 >= after[3]
    server.start()
