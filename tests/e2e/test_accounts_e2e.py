"""Account settings that take effect, end to end against a real twistd: a domain's maximum
message size refuses a larger message (552 5.3.4 at RCPT for a declared SIZE, after DATA
otherwise) while a smaller one is delivered; ``settings show --effective`` says where each
value comes from."""

from __future__ import annotations

import smtplib

import pytest

from tests.e2e.harness import Server, wait_for

pytestmark = pytest.mark.e2e


def message(size: int) -> bytes:
    head = b"From: someone@elsewhere.test\r\nTo: sizer@example.test\r\nSubject: size\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def test_domain_max_message_size_refuses_larger_messages(server: Server) -> None:
    server.admin("domain", "add", "small.test")
    server.admin("account", "add", "sizer@small.test", "--password", "Sizer-secret1")
    server.admin("settings", "set", "mail.max_message_size", "1000", "--domain", "small.test")
    out = server.admin("settings", "show", "--effective", "--account", "sizer@small.test").stdout
    assert "mail.max_message_size = 1000  (domain)\n" in out

    big = message(3739)
    with smtplib.SMTP("127.0.0.1", server.port("smtp"), timeout=30) as s:
        s.ehlo("client.test")
        assert s.has_extn("size")
        # SIZE declared: refused at RCPT (RFC 1870 §6.2)
        s.mail("someone@elsewhere.test", [f"SIZE={len(big)}"])
        code, text = s.rcpt("sizer@small.test")
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        s.rset()
        # no SIZE: the same message is refused after DATA
        s.mail("someone@elsewhere.test")
        assert s.rcpt("sizer@small.test")[0] == 250
        code, text = s.data(big)
        assert (code, text[:5]) == (552, b"5.3.4"), (code, text)
        # a message within the limit is delivered
        s.mail("someone@elsewhere.test")
        assert s.rcpt("sizer@small.test")[0] == 250
        assert s.data(message(900))[0] == 250
    wait_for(lambda: len(server.messages("sizer", "small.test")) == 1, what="delivery")
    assert len(server.messages("sizer", "small.test")) == 1
    assert "message too big for sizer@small.test" in server.log_text()
