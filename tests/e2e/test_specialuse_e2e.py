"""CREATE-SPECIAL-USE end to end: a real IMAP client against a real twistd gives a new folder
a special use, renames another, and after a ``kill -9`` and a start the server still reports
both (RFC 6154: the client configured its Archive and Sent folders by them)."""

from __future__ import annotations

import imaplib
import re
import ssl

import pytest

from tests.e2e.harness import Server
from tests.e2e.test_access_e2e import add_account, imap_ssl, ok

pytestmark = pytest.mark.e2e


def special_uses(m: imaplib.IMAP4) -> dict[str, str]:
    """{mailbox: its special-use attributes} from LIST (SPECIAL-USE)."""
    out: dict[str, str] = {}
    for line in ok(m.list('(SPECIAL-USE) ""', "*")):
        assert isinstance(line, bytes), line
        mo = re.match(rb'\((.*?)\) "/" "?(.*?)"?$', line)
        assert mo, line
        attrs = [a for a in mo.group(1).decode().split() if a not in ("\\HasNoChildren",)]
        out[mo.group(2).decode()] = " ".join(attrs)
    return out


def test_special_use_created_renamed_and_kept_across_kill_9(
    server: Server, tls_context: ssl.SSLContext
) -> None:
    pw = add_account(server, "specialuse")
    m = imap_ssl(server, tls_context)
    ok(m.login("specialuse", pw))
    _typ, caps = m.capability()
    assert b"CREATE-SPECIAL-USE" in caps[0].split()
    ok(m._simple_command("CREATE", "Archive", "(USE (\\Archive))"))
    typ, data = m._simple_command("CREATE", "Everything", "(USE (\\All))")
    assert typ == "NO" and b"[USEATTR]" in (data[0] or b""), (typ, data)
    ok(m.rename("Sent", '"Sent Items"'))
    expected = {
        "Archive": "\\Archive",
        "Drafts": "\\Drafts",
        "Junk": "\\Junk",
        "Sent Items": "\\Sent",
        "Trash": "\\Trash",
    }
    assert special_uses(m) == expected
    m.logout()

    server.kill()
    server.start()
    m = imap_ssl(server, tls_context)
    ok(m.login("specialuse", pw))
    assert special_uses(m) == expected  # and no second Sent made at the restart
    names = [line for line in ok(m.list('""', "Sent")) if line]
    assert names == [], names
    m.logout()
