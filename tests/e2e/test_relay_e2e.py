"""No open relay, end to end: a real twistd, real SMTP, a loopback DNS server and a loopback MX.

Unauthenticated clients on port 25 cannot relay in any address form; authenticated users on 587
relay every real remote address to the remote MX (a sink in this process); Client IPs relay
without AUTH; the Roaming and Relay services of an account restrict who relays from where.
Other loopback addresses (127.0.0.5, ...) stand in for other client hosts.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import subprocess
import uuid
from typing import Callable, Iterator, Optional

import pytest

from tests.e2e.harness import ALL_LISTENERS, DEFAULT_ZONE, Server, wait_for
from tests.e2e.sink import Sink

pytestmark = pytest.mark.e2e

EXT = "ext.test"
ZONE = dict(
    DEFAULT_ZONE,
    **{
        EXT: ["MX 10 mx.ext.test"],
        "mx.ext.test": ["A 127.0.0.1"],
    },
)
CLIENT_IP = "127.0.0.5"  # made a Client IP below
LITERAL_IP = "127.0.0.9"  # the sink listens here too, for user@[127.0.0.9]

# Every spelling of "deliver to victim at another domain" an open-relay tester tries
# (RFC 5321 §3.6.1 source routes, §4.1.2 quoted local parts, %-hack, UUCP bang paths,
# address literals §4.1.3, a trailing root dot, case changes).
RELAY_FORMS = [
    f"victim@{EXT}",
    f"victim%{EXT}@example.test",
    f"@example.test:victim@{EXT}",
    f'"victim@{EXT}"@example.test',
    f"{EXT}!victim@example.test",
    f"victim@[{LITERAL_IP}]",
    f"victim@{EXT}.",
    f"VICTIM@{EXT.upper()}",
    "victim@Ext.Test",
    f"victim%{EXT}@EXAMPLE.TEST",
    f"victim%{EXT}@example.test.",
    f'"victim%{EXT}"@example.test',
    f"@mail.example.test,@example.test:victim@{EXT}",
]


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink(also=[LITERAL_IP])
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("relay"))
    srv = Server(os.path.join(base, "base"), dns_records=ZONE)
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "smtp.remote_port", str(sink.port))
    srv.admin("settings", "set", "queue.retry_schedule", "[1]")
    with srv.running():
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        srv.admin(
            "account",
            "add",
            "home@example.test",
            "--password",
            "home-secret",
            "--services",
            "mail,pop,imap,relay",
        )
        srv.admin(
            "account",
            "add",
            "norelay@example.test",
            "--password",
            "norelay-secret",
            "--services",
            "mail,pop,imap,roaming",
        )
        yield srv


def connect(server: Server, port: int, source: Optional[str] = None) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0) if source else None)
    s.ehlo("client.elsewhere.test")
    return s


def login(server: Server, user: str, password: str, source: Optional[str] = None) -> smtplib.SMTP:
    s = connect(server, server.port("smtp", submission=True), source)
    s._host = "localhost"  # type: ignore[attr-defined]  # verify the certificate's name
    s.starttls(context=server.tls_context())
    s.ehlo("client.elsewhere.test")
    s.login(user, password)
    return s


def rcpt(s: smtplib.SMTP, address: str) -> tuple[int, bytes]:
    """RCPT with the address exactly as written (smtplib's quoting would rewrite some forms)."""
    return s.docmd(f"RCPT TO:<{address}>")


def send_raw(
    s: smtplib.SMTP, sender: str, recipients: list[str], marker: str
) -> list[tuple[int, bytes]]:
    """One transaction; returns the RCPT replies. DATA only when a recipient was accepted."""
    code, text = s.docmd(f"MAIL FROM:<{sender}>")
    assert code == 250, (code, text)
    replies = [rcpt(s, r) for r in recipients]
    if any(c == 250 for c, _ in replies):
        code, text = s.data(f"From: <{sender}>\r\nSubject: {marker}\r\n\r\n{marker}\r\n".encode())
        assert code == 250, (code, text)
    else:
        s.rset()
    return replies


def delivered(sink: Sink, marker: str, done: Callable[[list[str]], bool] = bool) -> list[str]:
    """The recipients the remote MX got for messages carrying ``marker``, once ``done`` says so."""

    def recipients() -> list[str]:
        return sorted(r for m in sink.find(marker.encode()) for r in m.recipients)

    return wait_for(lambda: done(recipients()) and recipients(), 30, f"{marker} at the remote MX")


def test_unauthenticated_relay_refused_in_every_form(server: Server, sink: Sink) -> None:
    """An open-relay test from a stranger on port 25 gets 554 5.7.1 for every address form and
    nothing leaves the server."""
    marker = uuid.uuid4().hex
    before = len(sink.messages())
    # Five forms per connection: each refusal counts toward smtp.max_errors (then 421).
    for i in range(0, len(RELAY_FORMS), 5):
        with connect(server, server.port("smtp")) as s:
            s.docmd("MAIL FROM:<probe@elsewhere.test>")
            for form in RELAY_FORMS[i : i + 5]:
                code, text = rcpt(s, form)
                assert (code, text[:5]) == (554, b"5.7.1"), (form, code, text)
            code, _ = s.docmd("DATA")
            assert code in (503, 554), code  # no valid recipients: nothing to accept
            s.rset()
            # A local recipient in the same session still works: the refusals were per address.
            replies = send_raw(s, "probe@elsewhere.test", ["alice@example.test"], marker)
            assert replies[0][0] == 250
    wait_for(
        lambda: len([m for m in server.messages("alice") if marker.encode() in m]) == 3,
        30,
        "the local messages",
    )
    accepted = [
        line
        for line in server.log_text().splitlines()
        if " accepted msg_id=" in line and "sender=probe@elsewhere.test" in line
    ]
    assert accepted and not [line for line in accepted if "victim" in line], (
        "a relay attempt was queued"
    )
    assert len(sink.messages()) == before, (
        "the remote MX received mail from an unauthenticated relay"
    )
    assert "relaying denied" in server.log_text()


def test_authenticated_relay_delivers_every_real_remote_form(server: Server, sink: Sink) -> None:
    """A logged-in user on 587 reaches remote addresses in every spelling that names one; the
    remote MX receives the message with the canonical recipient."""
    # A list of source routes is relayed toward its first hop (RFC 5321 Appendix C), not here.
    # A quoted "victim@ext" local part is unquoted and routed on, as CommuniGate does.
    forms = [f for f in RELAY_FORMS if not f.startswith("@mail.")]
    marker = uuid.uuid4().hex
    with login(server, "alice@example.test", "alice-secret") as s:
        replies = send_raw(s, "alice@example.test", forms, marker)
    for form, (code, text) in zip(forms, replies, strict=True):
        assert code == 250, (form, code, text)
    # Each destination gets its own delivery: wait for both the domain and the literal.
    got = delivered(
        sink, marker, lambda rs: f"victim@{EXT}" in rs and f"victim@[{LITERAL_IP}]" in rs
    )
    assert set(got) == {f"victim@{EXT}", f"victim@[{LITERAL_IP}]"}, got


def test_client_ips_relay_without_auth(server: Server, sink: Sink) -> None:
    """A host on the Client IPs list relays on port 25 without AUTH; other hosts still cannot."""
    server.admin("settings", "set", "clients.ips", json.dumps(f"{CLIENT_IP} ; office network"))
    try:
        marker = uuid.uuid4().hex
        with connect(server, server.port("smtp"), source=CLIENT_IP) as s:
            assert send_raw(s, "alice@example.test", [f"victim@{EXT}"], marker)[0][0] == 250
        assert delivered(sink, marker) == [f"victim@{EXT}"]
        with connect(server, server.port("smtp")) as s:
            s.docmd("MAIL FROM:<alice@example.test>")
            assert rcpt(s, f"victim@{EXT}")[0] == 554
    finally:
        server.admin("settings", "unset", "clients.ips")


def test_roaming_off_allows_only_client_ips(server: Server, sink: Sink) -> None:
    """CommuniGate's Roaming: an account without it can connect only from the Client IPs. From
    elsewhere its login is refused like a wrong password; from a Client IP it logs in and
    relays."""
    s = connect(server, server.port("smtp", submission=True), None)
    try:
        s._host = "localhost"  # type: ignore[attr-defined]
        s.starttls(context=server.tls_context())
        s.ehlo("client.elsewhere.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("home@example.test", "home-secret")
    finally:
        s.close()
    server.admin("settings", "set", "clients.ips", CLIENT_IP)
    try:
        marker = uuid.uuid4().hex
        with login(server, "home@example.test", "home-secret", source=CLIENT_IP) as s:
            assert send_raw(s, "home@example.test", [f"victim@{EXT}"], marker)[0][0] == 250
        assert delivered(sink, marker) == [f"victim@{EXT}"]
    finally:
        server.admin("settings", "unset", "clients.ips")
    assert "has no Roaming and 127.0.0.1 is not a Client IP" in server.log_text()


def test_relay_service_disabled_refuses_relaying(server: Server) -> None:
    """An account whose Relay service is off gets 554 5.7.1 for remote recipients; enabling it
    with the CLI lets the next transaction through without a restart."""
    with login(server, "norelay@example.test", "norelay-secret") as s:
        s.docmd("MAIL FROM:<norelay@example.test>")
        code, text = rcpt(s, f"victim@{EXT}")
        assert (code, text[:5]) == (554, b"5.7.1"), (code, text)
        assert rcpt(s, "alice@example.test")[0] == 250
    server.admin(
        "account", "set", "norelay@example.test", "--services", "mail,pop,imap,roaming,relay"
    )
    with login(server, "norelay@example.test", "norelay-secret") as s:
        s.docmd("MAIL FROM:<norelay@example.test>")
        assert rcpt(s, f"victim@{EXT}")[0] == 250
    assert "Relay service disabled" in server.log_text()


def test_swaks_open_relay_check(server: Server, sink: Sink) -> None:
    """The open-relay check an administrator runs with swaks fails (554); swaks with STARTTLS
    and AUTH on 587 relays to the remote MX."""
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed")
    r = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{server.port('smtp')}",
            "--from",
            "probe@elsewhere.test",
            "--to",
            f"victim@{EXT}",
            "--helo",
            "client.elsewhere.test",
            "--quit-after",
            "RCPT",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and "<** 554 5.7.1" in r.stdout, r.stdout
    marker = uuid.uuid4().hex
    r = subprocess.run(
        [
            swaks,
            "--server",
            f"127.0.0.1:{server.port('smtp', submission=True)}",
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            "alice-secret",
            "--from",
            "alice@example.test",
            "--to",
            f"victim@{EXT}",
            "--helo",
            "client.elsewhere.test",
            "--header",
            f"Subject: {marker}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert delivered(sink, marker) == [f"victim@{EXT}"]
