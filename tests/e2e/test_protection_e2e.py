"""Receiving protection end to end: a real twistd, real SMTP/IMAP, a loopback DNS server with
faults, and a loopback MX for Reverse Connect.

SPF results x actions with the trace headers they leave, RBL listed / error code / timeout (other
clients are served meanwhile), Return-path DNS, Reverse Connect against an MX that accepts,
rejects and stalls, AUTH brute force with small real delays, static and automatic blacklists,
and ``cgtwist-admin settings set`` refusing bad values. Every setting is changed with the CLI
while the server runs. Other loopback addresses (127.0.0.2, ...) stand in for other client
hosts, so one test's offender does not disturb the next test.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import re
import select
import smtplib
import socket
import time
import uuid
from typing import Any, Iterator, Optional

import pytest

from tests.e2e.harness import ALL_LISTENERS, DEFAULT_ZONE, Server, wait_for
from tests.e2e.sink import Sink

pytestmark = pytest.mark.e2e

SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
_MX = "MX 10 mail.example.test"
ZONE: dict[str, list[str]] = dict(
    DEFAULT_ZONE,
    **{
        "spf-pass.test": [_MX, 'TXT "v=spf1 ip4:127.0.0.1 -all"'],
        "spf-fail.test": [_MX, 'TXT "v=spf1 -all"'],
        "spf-softfail.test": [_MX, 'TXT "v=spf1 ~all"'],
        "spf-neutral.test": [_MX, 'TXT "v=spf1 ?all"'],
        "spf-none.test": [_MX],
        "spf-permerror.test": [_MX, 'TXT "v=spf1 ip4:127.0.0.1 bogus:example.test -all"'],
        "spf-temperror.test": [_MX],  # its TXT lookup answers SERVFAIL (below)
        "helo-fail.test": ["A 127.0.0.1", 'TXT "v=spf1 -all"'],
        "1.0.0.127.listed.rbl.test": ["A 127.0.0.2", 'TXT "listed: see http://rbl.test/lookup"'],
        "1.0.0.127.error.rbl.test": ["A 127.255.255.254"],
        "1.0.0.127.slow.rbl.test": ["A 127.0.0.2"],  # never answered (below)
        "rp-servfail.test": [_MX],
        "rp-timeout.test": [_MX],  # never answered (below)
        "rc-ok.test": ["MX 10 mx.rc.test"],
        "rc-bad.test": ["MX 10 mx.rc.test"],
        "rc-stall.test": ["MX 10 mx.rc.test"],
        "rc-rate.test": ["MX 10 mx.rc.test"],
        "mx.rc.test": ["A 127.0.0.1"],
    },
)
FAULTS = {
    "spf-temperror.test/TXT": "servfail",
    "rp-servfail.test": "servfail",
    "rp-timeout.test": "timeout",
    "1.0.0.127.slow.rbl.test": "timeout",
}
DNS_TIMEOUT = 3.0  # seconds for one lookup: the two DNS timeout tests wait this long once each


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    s.set_rule("rc-bad.test", "reject")
    s.set_rule("rc-stall.test", "stall")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Server]:
    base = str(tmp_path_factory.mktemp("protection"))
    srv = Server(os.path.join(base, "base"), dns_records=ZONE, dns_behaviours=FAULTS)
    with open(srv.conf) as f:
        conf = f.read()
    with open(srv.conf, "w") as f:
        f.write(conf.replace("timeout = 5.0", f"timeout = {DNS_TIMEOUT}"))
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "smtp.remote_port", str(sink.port))
    # The per-IP penalty and blacklist are what this module tests; the per-account delay
    # (test_account_guard_e2e's subject) would hold alice's wrong passwords here 1, 2, 4, ...
    # up to 16 s each, adding ~40 s of waiting to this module and showing nothing more.
    srv.admin("settings", "set", "auth.account_delay", "0.05")
    srv.admin("settings", "set", "auth.account_max_delay", "0.1")
    with srv.running():
        srv.admin("account", "add", "alice@example.test", "--password", "alice-secret")
        yield srv


@contextlib.contextmanager
def settings(server: Server, **values: Any) -> Iterator[None]:
    """Set dynamic settings (dots spelled ``__``) with the CLI for the block, then unset them."""
    keys = [k.replace("__", ".") for k in values]
    for key, value in zip(keys, values.values(), strict=True):
        server.admin("settings", "set", key, json.dumps(value))
    try:
        yield
    finally:
        for key in keys:
            server.admin("settings", "unset", key)


def smtp(
    server: Server,
    source: Optional[str] = None,
    submission: bool = False,
    helo: str = "client.elsewhere.test",
) -> smtplib.SMTP:
    s = smtplib.SMTP(
        "127.0.0.1",
        server.port("smtp", submission=submission),
        timeout=30,
        source_address=(source, 0) if source else None,
    )
    s.ehlo(helo)
    return s


def starttls(server: Server, s: smtplib.SMTP) -> None:
    s._host = "localhost"  # type: ignore[attr-defined]  # the certificate's name
    s.starttls(context=server.tls_context())
    s.ehlo("client.elsewhere.test")


def raw_connect(
    server: Server, source: str = "127.0.0.1", port: Optional[int] = None
) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", port or server.port("smtp")), timeout=30, source_address=(source, 0)
    )
    return sock


def read_reply(sock: socket.socket) -> bytes:
    """One (possibly multi-line) SMTP reply."""
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return buf
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) > 1 and re.match(rb"^\d{3} ", lines[-2]):
            return buf


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def greeting(server: Server, source: str = "127.0.0.1", port: Optional[int] = None) -> bytes:
    with raw_connect(server, source, port) as sock:
        return read_reply(sock)


def message(sender: str, marker: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <alice@example.test>\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@test>\r\n\r\n{marker}\r\n"
    ).encode()


def delivered_trace(server: Server, marker: str, original: bytes) -> bytes:
    """The header block the server put in front of ``original`` in alice's mailbox."""

    (got,) = server.wait_messages("alice", 1, 30, marker.encode())
    assert got.endswith(original), "message body was altered"
    return got[: len(got) - len(original)]


def header_fields(trace: bytes) -> list[tuple[str, str]]:
    """(name, unfolded value) of every header field in the trace block."""
    fields: list[tuple[str, str]] = []
    for line in trace.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            assert fields, "a continuation line without a field"
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip().decode("latin-1"))
        else:
            name, colon, value = line.decode("latin-1").partition(":")
            assert colon, f"not a header line: {line!r}"
            fields.append((name, value.strip()))
    return fields


# -- SPF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["reject", "tempfail", "tag", "accept"])
def test_spf_results_by_action(server: Server, action: str) -> None:
    """Every SPF result gets the reply its configured action says, and accepted mail carries
    Received-SPF / Authentication-Results exactly when the action is "tag"."""
    with settings(server, protection__spf__actions={r: action for r in SPF_RESULTS}):
        with smtp(server) as s:
            for result in SPF_RESULTS:
                sender = f"probe@spf-{result}.test"
                code, text = s.mail(sender)
                if action == "reject":
                    enhanced = b"5.7.24" if result in ("temperror", "permerror") else b"5.7.23"
                    assert (code, text[:6]) == (550, enhanced), (result, code, text)
                elif action == "tempfail":
                    enhanced = b"4.4.3" if result == "temperror" else b"4.7.23"
                    assert (code, text[: len(enhanced)]) == (451, enhanced), (result, code, text)
                else:
                    assert code == 250, (result, code, text)
                    marker = uuid.uuid4().hex
                    original = message(sender, marker)
                    assert s.rcpt("alice@example.test")[0] == 250
                    assert s.data(original)[0] == 250
                    fields = dict(header_fields(delivered_trace(server, marker, original)))
                    if action == "tag":
                        assert fields["Received-SPF"].split()[0] == result, fields
                        assert f"spf={result}" in fields["Authentication-Results"], fields
                        assert fields["Authentication-Results"].startswith("mail.example.test;")
                        assert f"smtp.mailfrom={sender}" in fields["Authentication-Results"]
                    else:
                        assert (
                            "Received-SPF" not in fields and "Authentication-Results" not in fields
                        )
                s.rset()
    if action in ("reject", "tempfail"):
        assert "protection refused: check=spf peer=127.0.0.1" in server.log_text()
    # One verdict line per transaction records every check with its outcome and timing.
    verdicts = [line for line in server.log_text().splitlines() if "verdict session=" in line]
    expected = "action=accept" if action in ("tag", "accept") else f"action={action}"
    for result in SPF_RESULTS:
        assert [
            v
            for v in verdicts
            if f"sender=probe@spf-{result}.test" in v
            and expected in v
            and re.search(rf"returnpath=pass\(\d+ms\) spf={result}\(\d+ms\)", v)
        ], (result, action)


def test_spf_helo_identity_for_null_sender(server: Server) -> None:
    """For MAIL FROM:<> the HELO name is the SPF identity (RFC 7208 §2.3): a HELO domain whose
    policy fails this client is rejected with the default actions."""
    with smtp(server, helo="helo-fail.test") as s:
        code, text = s.docmd("MAIL FROM:<>")
        assert (code, text[:6]) == (550, b"5.7.23"), (code, text)
    with smtp(server, helo="client.elsewhere.test") as s:
        assert s.docmd("MAIL FROM:<>")[0] == 250  # no SPF record for that name: none -> tag


def test_spf_header_injection(server: Server) -> None:
    """HELO names and MAIL FROM local parts full of header syntax never become header lines of
    their own, nor a second SPF result in Authentication-Results."""
    allowed = {"Received-SPF", "Authentication-Results", "Received", "Return-Path", "Delivered-To"}
    attempts = [
        # (HELO, MAIL FROM path): <> makes SPF use the HELO identity (RFC 7208 §2.3).
        ("helo-fail.test;spf=pass(X-Injected:1)", ""),
        ("[127.0.0.1]\tX-Injected: 1", ""),
        ("client.elsewhere.test", '"a;spf=pass)X-Injected:1 smtp.mailfrom=x"@spf-softfail.test'),
        ("client.elsewhere.test", '"a\\"\\\\X-Injected: 1;spf=pass"@spf-neutral.test'),
    ]
    refused: list[str] = []
    for helo, path in attempts:
        marker = uuid.uuid4().hex
        with smtp(server, helo=helo) as s:
            code, text = s.docmd(f"MAIL FROM:<{path}>")
            if code != 250:  # refusing such a path is fine too; never a crash
                assert code in (501, 553, 550), (helo, path, code, text)
                refused.append(path)
                continue
            assert s.rcpt("alice@example.test")[0] == 250
            original = message(path or "<>", marker)
            assert s.data(original)[0] == 250
        fields = header_fields(delivered_trace(server, marker, original))
        names = {n for n, _ in fields}
        assert names <= allowed, (helo, path, names)
        (ar,) = [v for n, v in fields if n == "Authentication-Results"]
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"|\([^()]*\)', "", ar)
        assert len(re.findall(r"\bspf=", unquoted)) == 1, ar
        spf_lines = [v for n, v in fields if n == "Received-SPF"]
        assert len(spf_lines) == 1, fields
    assert len(refused) < len(attempts) - 1, "the injection paths were not exercised"
    # A bare LF or CR inside the HELO line (RFC 5321 §2.3.8) cannot start a header line either.
    for junk in (b"\n", b"\r"):
        marker = uuid.uuid4().hex
        original = message("someone@elsewhere.test", marker)
        with raw_connect(server) as sock:
            read_reply(sock)
            sock.sendall(b"EHLO evil.test" + junk + b"X-Injected: 1\r\n")
            if not read_reply(sock).startswith(b"250"):
                continue  # refusing the line is fine
            for line in (
                b"MAIL FROM:<someone@elsewhere.test>",
                b"RCPT TO:<alice@example.test>",
                b"DATA",
            ):
                sock.sendall(line + b"\r\n")
                assert read_reply(sock)[:1] in (b"2", b"3")
            sock.sendall(original + b".\r\n")
            assert read_reply(sock).startswith(b"250")
        names = {n for n, _ in header_fields(delivered_trace(server, marker, original))}
        assert names <= allowed, names


# -- RBL ---------------------------------------------------------------------------------------


def test_rbl_listed_refused_at_connect(server: Server) -> None:
    """A client listed in a DNSBL gets 554 instead of a greeting (logged with check and peer);
    a listener made lenient (the submission port) still greets it."""
    submission = server.port("smtp", submission=True)
    with settings(
        server,
        protection__rbl__zones=["listed.rbl.test"],
        protection__listeners={str(submission): {"rbl": "off"}},
    ):
        reply = greeting(server)
        assert reply.startswith(b"554 5.7.1") and b"listed.rbl.test" in reply, reply
        assert greeting(server, port=submission).startswith(b"220 ")
        assert greeting(server, source="127.0.0.2").startswith(b"220 ")  # not listed
        # Client IPs and white-holed IPs are exempt (mode "nonclients").
        with settings(server, clients__ips="127.0.0.1"):
            assert greeting(server).startswith(b"220 ")
        with settings(server, protection__whitehole__ips="127.0.0.0/30"):
            assert greeting(server).startswith(b"220 ")
        assert greeting(server).startswith(b"554 ")
    wait_for(lambda: "protection refused: check=rbl peer=127.0.0.1" in server.log_text(), 60, "log")
    assert greeting(server).startswith(b"220 ")  # zones removed with the CLI: accepted again


def test_rbl_error_code_is_not_a_listing(server: Server) -> None:
    """127.255.255.x answers are the list's error channel: the client is served, the error logged."""
    with settings(server, protection__rbl__zones=["error.rbl.test"]):
        assert greeting(server).startswith(b"220 ")
    assert "answered error code 127.255.255.254" in server.log_text()


def test_rbl_timeout_fails_open_and_others_are_served(server: Server) -> None:
    """While one client's DNSBL lookup hangs, another client completes a whole transaction; the
    first is greeted when the lookup times out."""
    with settings(server, protection__rbl__zones=["slow.rbl.test"]):
        started = time.monotonic()
        with raw_connect(server) as hanging:
            marker = uuid.uuid4().hex
            with smtp(server, source="127.0.0.2") as s:
                s.sendmail(
                    "someone@elsewhere.test",
                    ["alice@example.test"],
                    message("someone@elsewhere.test", marker),
                )
            assert time.monotonic() - started < DNS_TIMEOUT
            ready, _, _ = select.select([hanging], [], [], 0)
            assert not ready, "the hanging client was greeted before its lookup ended"
            assert read_reply(hanging).startswith(b"220 ")
        assert time.monotonic() - started >= DNS_TIMEOUT * 0.9
    wait_for(lambda: [m for m in server.messages("alice") if marker.encode() in m], 30, "message")
    assert re.search(r"rbl zone slow\.rbl\.test lookup failed for 127\.0\.0\.1", server.log_text())


# -- Return-path DNS and Reverse Connect ------------------------------------------------------


def test_return_path_dns(server: Server) -> None:
    """A sender domain that does not exist gets 550 5.1.8; a DNS failure 451 4.4.3 (retry)."""
    with smtp(server) as s:
        code, text = s.mail("someone@no-such-domain.test")
        assert (code, text[:5]) == (550, b"5.1.8"), (code, text)
        s.rset()
        code, text = s.mail("someone@rp-servfail.test")
        assert (code, text[:5]) == (451, b"4.4.3"), (code, text)
        s.rset()
        assert s.mail("someone@elsewhere.test")[0] == 250
    with settings(server, protection__returnpath__mode="off"):
        with smtp(server) as s:
            assert s.mail("someone@no-such-domain.test")[0] == 250


def test_return_path_dns_timeout_keeps_others_served(server: Server) -> None:
    """While one sender's domain lookup hangs, another client's transaction completes; the
    hanging one then gets 451 4.4.3 (try later), never a bounce."""
    started = time.monotonic()
    with raw_connect(server) as hanging:
        read_reply(hanging)
        hanging.sendall(b"EHLO client.elsewhere.test\r\n")
        read_reply(hanging)
        hanging.sendall(b"MAIL FROM:<someone@rp-timeout.test>\r\n")
        marker = uuid.uuid4().hex
        with smtp(server, source="127.0.0.2") as s:
            s.sendmail(
                "someone@elsewhere.test",
                ["alice@example.test"],
                message("someone@elsewhere.test", marker),
            )
        assert time.monotonic() - started < DNS_TIMEOUT
        ready, _, _ = select.select([hanging], [], [], 0)
        assert not ready, "the MAIL FROM was answered before its lookup ended"
        assert read_reply(hanging).startswith(b"451 4.4.3")
    assert time.monotonic() - started >= DNS_TIMEOUT * 0.9
    wait_for(lambda: [m for m in server.messages("alice") if marker.encode() in m], 30, "message")


def test_reverse_connect(server: Server, sink: Sink) -> None:
    """Callback verification asks the sender's MX (MAIL FROM:<>, RCPT TO:<sender>): accepted
    senders pass (and are cached), refused ones get 550 5.1.7, a stalling MX fails open or
    answers 451 4.1.7 as configured; authenticated senders are never probed."""
    with settings(
        server,
        protection__reverse_connect__mode="nonclients",
        protection__reverse_connect__timeout=1,
    ):
        with smtp(server) as s:
            assert s.mail("good@rc-ok.test")[0] == 250
            s.rset()
            code, text = s.mail("gone@rc-bad.test")
            assert (code, text[:5]) == (550, b"5.1.7"), (code, text)
            s.rset()
            assert s.mail("good@rc-ok.test")[0] == 250  # cached: no second probe
            s.rset()
            started = time.monotonic()
            assert s.mail("slow@rc-stall.test")[0] == 250  # fail open
            assert time.monotonic() - started >= 0.9
        probes = sink.rcpts()
        assert probes.count(("", "good@rc-ok.test")) == 1, probes
        assert ("", "gone@rc-bad.test") in probes and ("", "slow@rc-stall.test") in probes
        with settings(server, protection__reverse_connect__fail_open=False):
            with smtp(server) as s:
                code, text = s.mail("slower@rc-stall.test")
                assert (code, text[:5]) == (451, b"4.1.7"), (code, text)
        with (
            settings(server, smtp__send_as="other@rc-bad.test"),
            smtp(server, submission=True) as s,
        ):
            starttls(server, s)
            s.login("alice@example.test", "alice-secret")
            assert s.mail("other@rc-bad.test")[0] == 250  # alice may send as it (smtp.send_as)
        assert ("", "other@rc-bad.test") not in sink.rcpts()
    assert "protection refused: check=reverse-connect" in server.log_text()


def test_reverse_connect_rate_limit(server: Server, sink: Sink) -> None:
    """Probes per sender domain are rate-limited: past the limit a new sender is not probed
    (the MX is not hammered) and the check fails open."""
    with settings(
        server,
        protection__reverse_connect__mode="nonclients",
        protection__reverse_connect__rate_limit=1,
    ):
        with smtp(server) as s:
            assert s.mail("first@rc-rate.test")[0] == 250
            s.rset()
            assert s.mail("second@rc-rate.test")[0] == 250
    probes = [p for p in sink.rcpts() if p[1].endswith("@rc-rate.test")]
    assert probes == [("", "first@rc-rate.test")], probes
    assert "reverse-connect rate limit for domain=rc-rate.test" in server.log_text()


# -- AUTH brute force --------------------------------------------------------------------------


def auth_plain(s: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return s.docmd("AUTH", f"PLAIN {token}")


def failure_lines(server: Server, ip: str) -> list[str]:
    return [
        line
        for line in server.log_text().splitlines()
        if "auth failed:" in line and re.search(rf"\bip={re.escape(ip)}\b", line)
    ]


def test_auth_brute_force(server: Server) -> None:
    """Failed logins are delayed more each time, unknown users and wrong passwords get the same
    reply, the connection is closed after auth.max_failures, every failure is one fail2ban line,
    and the right password still works afterwards (no lock-out)."""
    ip = "127.0.0.7"
    with settings(server, auth__fail_delays=[0.2, 0.4], auth__max_failures=3):
        with smtp(server, source=ip, submission=True) as s:
            starttls(server, s)
            t0 = time.monotonic()
            wrong = auth_plain(s, "alice@example.test", "wrong-1")
            t1 = time.monotonic()
            unknown = auth_plain(s, "nobody@example.test", "wrong-2")
            t2 = time.monotonic()
            assert wrong == unknown and wrong[0] == 535, (wrong, unknown)
            assert t1 - t0 >= 0.2 and t2 - t1 >= 0.4, (t1 - t0, t2 - t1)
            assert auth_plain(s, "alice@example.test", "wrong-3")[0] == 535
            code, text = s.getreply()  # then the server gives up on this connection
            assert (code, text[:5]) == (421, b"4.7.0"), (code, text)
            with pytest.raises(smtplib.SMTPServerDisconnected):
                s.noop()
        lines = wait_for(
            lambda: len(failure_lines(server, ip)) >= 3 and failure_lines(server, ip), 60, "log"
        )
        assert len(lines) == 3, lines
        assert "login=nobody@example.test" in lines[1] and "protocol=smtp" in lines[1]
        assert "failures=1 delay=0.2" in lines[0] and "failures=2 delay=0.4" in lines[1], lines
        assert "wrong-" not in server.log_text(), "a password reached the log"
        with smtp(server, source=ip, submission=True) as s:
            starttls(server, s)
            assert auth_plain(s, "alice@example.test", "alice-secret")[0] == 235


def test_auth_penalty_shared_with_imap_and_pop3(server: Server) -> None:
    """Failures over IMAP, POP3 and SMTP from one host count together (one penalty per IP), each
    with its own fail2ban line."""
    ip = "127.0.0.8"
    ctx = server.tls_context()
    with settings(server, auth__fail_delays=[0.05, 0.1]):
        imap = imaplib.IMAP4("localhost", server.port("imap"), timeout=30)
        try:
            imap.sock.close()  # reconnect from the chosen source address
            imap.sock = socket.create_connection(
                ("127.0.0.1", server.port("imap")), 30, source_address=(ip, 0)
            )
            imap.file = imap.sock.makefile("rb")
            imap._get_response()  # the new greeting
            imap.starttls(ssl_context=ctx)
            for attempt in range(2):
                with pytest.raises(imaplib.IMAP4.error):
                    imap.login("alice@example.test", f"wrong-{attempt}")
        finally:
            with contextlib.suppress(Exception):
                imap.logout()
        with socket.create_connection(
            ("127.0.0.1", server.port("pop3")), 30, source_address=(ip, 0)
        ) as raw:
            pop = raw.makefile("rb")
            assert pop.readline().startswith(b"+OK")
            raw.sendall(b"STLS\r\n")
            assert pop.readline().startswith(b"+OK")
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                pop = tls.makefile("rb")
                tls.sendall(b"USER alice@example.test\r\n")
                assert pop.readline().startswith(b"+OK")
                tls.sendall(b"PASS wrong-pop\r\n")
                assert pop.readline().startswith(b"-ERR")
        with smtp(server, source=ip, submission=True) as s:
            starttls(server, s)
            assert auth_plain(s, "alice@example.test", "wrong-2")[0] == 535
        lines = wait_for(
            lambda: len(failure_lines(server, ip)) >= 4 and failure_lines(server, ip), 60, "log"
        )
        assert sum("proto=imap" in line for line in lines) == 2, lines
        assert sum("proto=pop3" in line for line in lines) == 1, lines
        assert "failures=4" in lines[-1], lines


def test_auto_blacklist_expires(server: Server) -> None:
    """Enough failed logins blacklist the host for a while (554 at connect), never for good."""
    ip = "127.0.0.11"
    with settings(
        server,
        auth__fail_delays=[0],
        auth__max_failures=10,
        protection__autoblacklist__threshold=3,
        protection__autoblacklist__duration=3,
    ):
        with smtp(server, source=ip, submission=True) as s:
            starttls(server, s)
            for n in range(3):
                assert auth_plain(s, "alice@example.test", f"wrong-{n}")[0] == 535
        assert greeting(server, source=ip).startswith(b"554 5.7.1")
        assert greeting(server, source="127.0.0.12").startswith(b"220 ")  # others unaffected
        wait_for(
            lambda: greeting(server, source=ip).startswith(b"220 "),
            60,
            "the blacklisting to expire",
        )
        with smtp(server, source=ip, submission=True) as s:
            starttls(server, s)
            assert auth_plain(s, "alice@example.test", "alice-secret")[0] == 235
    assert re.search(r"auto-blacklisted ip=127\.0\.0\.11\b", server.log_text())


def test_full_disk_does_not_blacklist_the_client(server: Server) -> None:
    """The server's own 452 4.3.1 (disk nearly full) is not the client's error: however many
    a client gets, it is never cut off with 421 nor auto-blacklisted, and once there is space
    again its mail goes through. A client that sends junk still is (Client IPs never)."""
    ip = "127.0.0.21"
    with settings(
        server,
        smtp__max_errors=3,
        protection__autoblacklist__threshold=2,
        protection__autoblacklist__duration=1800,
    ):
        # More free space than the disk has: every MAIL FROM finds the disk "nearly full".
        with settings(server, smtp__max_message_size=10**15):
            for _session in range(3):
                with smtp(server, source=ip) as s:
                    for _ in range(5):
                        code, text = s.mail("someone@elsewhere.test")
                        assert (code, text[:5]) == (452, b"4.3.1"), (code, text)
                        s.rset()
                    assert s.noop()[0] == 250
        assert greeting(server, source=ip).startswith(b"220 ")
        marker = "full-disk-then-free"
        with smtp(server, source=ip) as s:
            s.sendmail(
                "someone@elsewhere.test",
                ["alice@example.test"],
                message("someone@elsewhere.test", marker),
            )
        wait_for(
            lambda: any(marker.encode() in m for m in server.messages("alice")),
            30,
            "the message sent once there is space",
        )
        # The client's own errors still count: junk twice -> auto-blacklisted ...
        junk = "127.0.0.22"
        for _ in range(2):
            with raw_connect(server, junk) as sock:
                read_reply(sock)
                sock.sendall(b"FOO\r\nBAR\r\nBAZ\r\n")
                assert b"421 4.7.0" in until_closed(sock)
        assert greeting(server, source=junk).startswith(b"554 5.7.1")
        # ... but never a Client IP.
        client = "127.0.0.23"
        with settings(server, clients__ips=client):
            for _ in range(3):
                with raw_connect(server, client) as sock:
                    read_reply(sock)
                    sock.sendall(b"FOO\r\nBAR\r\nBAZ\r\n")
                    assert b"421 4.7.0" in until_closed(sock)
            assert greeting(server, source=client).startswith(b"220 ")


# -- Static blacklists, changed at run time ----------------------------------------------------


def test_blacklisted_ip_refused_at_connect(server: Server) -> None:
    """A blacklisted IP gets 554 at connect; the change and its removal need no restart."""
    ip = "127.0.0.6"
    assert greeting(server, source=ip).startswith(b"220 ")
    with settings(server, protection__blacklist__ips=f"10.0.0.0/8\n{ip}  ; abuser"):
        assert greeting(server, source=ip).startswith(b"554 5.7.1")
        assert greeting(server).startswith(b"220 ")
    assert greeting(server, source=ip).startswith(b"220 ")
    assert f"protection refused: check=blacklist peer={ip}" in server.log_text()


def test_blacklisted_sender_refused_at_mail_from(server: Server) -> None:
    """A blacklisted sender address or domain gets 550 5.7.1 at MAIL FROM; others are served."""
    with settings(
        server, protection__blacklist__senders="spammer@elsewhere.test\n*.spam.test, bad.test"
    ):
        with smtp(server) as s:
            code, text = s.mail("spammer@elsewhere.test")
            assert (code, text[:5]) == (550, b"5.7.1"), (code, text)
            s.rset()
            code, text = s.mail("x@mail.spam.test")
            assert (code, text[:5]) == (550, b"5.7.1"), (code, text)
            s.rset()
            code, text = s.mail("anyone@BAD.test")
            assert (code, text[:5]) == (550, b"5.7.1"), (code, text)
            s.rset()
            assert s.mail("someone@elsewhere.test")[0] == 250
    with smtp(server) as s:
        assert s.mail("spammer@elsewhere.test")[0] == 250


# -- Administration ----------------------------------------------------------------------------


def test_settings_set_refuses_bad_values(server: Server) -> None:
    """cgtwist-admin refuses a bad protection or Router setting and names the line; the
    running server keeps its previous value."""
    r = server.admin(
        "settings", "set", "protection.blacklist.ips", "10.0.0.1\n10.0.0.0/33\n", check=False
    )
    assert r.returncode != 0 and "line 2" in r.stderr, (r.returncode, r.stderr)
    r = server.admin("settings", "set", "protection.spf.mode", "sometimes", check=False)
    assert r.returncode != 0 and "nonclients" in r.stderr
    r = server.admin("settings", "set", "router.table", "<a@b> = c\nnot a record\n", check=False)
    assert r.returncode != 0 and "line 2" in r.stderr, r.stderr
    assert greeting(server).startswith(b"220 ")
    shown = server.admin("settings", "show", "protection.blacklist.ips").stdout
    assert "(default)" in shown
