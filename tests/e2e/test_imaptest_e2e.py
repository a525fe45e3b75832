"""Dovecot's imaptest against a real twistd: the scripted RFC 3501 compliance groups.

imaptest (MIT licence; the project keeps its source, a build script and a runner in
``../shared/tools/imaptest``) holds 71 scripted groups of IMAP commands with the exact
replies the RFCs require. A mail client notices every group that fails: a FETCH BODY[1.1]
answered with the wrong part, a \\Recent counted twice, an EXISTS after an EXPUNGE that
overstates the mailbox. The test builds imaptest once into a cache directory (``build.sh``
apt-installs its build packages when missing, as ``.ci/run`` can as root), starts a server
through the harness and runs every group with ``compliance.sh``: each group in PASSING must
pass; the others (groups for extensions cgtwist does not offer are skipped by the tool) are
reported in the output (``pytest -rP``). ``stress_errors`` runs the tool's multi-client state
tracking: every session's view of one mailbox checked against every reply it gets, with and
without LOCAL delivery into that mailbox at the same time; a single error fails the test.

Skipped, with the reason, when the imaptest sources are not found or the build fails.
"""

from __future__ import annotations

import fcntl
import imaplib
import os
import re
import smtplib
import ssl
import subprocess
import threading
from typing import Iterator, Optional

import pytest

from tests.e2e.harness import REPO, Server

pytestmark = pytest.mark.e2e

USER = "imaptest@example.test"  # imaptest refuses '%' in user names
PASSWORD = "imaptest-secret"

# Every group that passes today; a group leaving this list is a regression.
PASSING = frozenset(
    {
        "append",
        "atoms",
        "close",
        "copy",
        "expunge",
        "expunge2",
        "fetch",
        "fetch-body",
        "fetch-body-message-rfc822",
        "fetch-body-message-rfc822-mime",
        "fetch-body-message-rfc822-x2",
        "fetch-body-mime",
        "fetch-bodystructure",
        "fetch-envelope",
        "id",
        "list",
        "logout",
        "move",
        "esearch",
        "esearch-condstore",  # CONDSTORE (RFC 7162)
        # CONTEXT=SEARCH (RFC 5267) and PARTIAL (RFC 9394)
        "search-context-update",
        "search-context-update2",
        "search-context-update3",
        "search-partial",
        "sort-partial",  # CONTEXT=SORT
        "listext",
        "multiappend",
        "append-binary",
        "fetch-binary-mime",
        "fetch-binary-mime-base64",
        "fetch-binary-mime-qp",
        "mutf7",
        "nil",
        "pipeline",
        "search-addresses",
        "search-body",
        "search-date",
        "search-flags",
        "search-header",
        "search-sets",
        "search-size",
        "select",
        "store",
        "subscribe",
        "uidplus",
        "uidvalidity",
        "uidvalidity-rename",
        # SORT, SORT=DISPLAY and THREAD (RFC 5256, RFC 5957).
        "esort",  # RFC 5267 SORT RETURN
        "sort-addresses",
        "sort-arrival",
        "sort-date",
        "sort-display-from",
        "sort-display-to",
        "sort-size",
        "sort-subject",
        "thread",
        "thread-orderedsubject",
        "thread-orderedsubject2",
        "thread2",
        "thread3",
        "thread4",
        "thread5",
        "thread6",
        "thread7",
        "thread8",
    }
)

_LINE = re.compile(r"^(PASS|FAIL|SKIP) ([^:\s]+)")


def tools_dir() -> Optional[str]:
    """Where build.sh, compliance.sh and the sources are: $CGTWIST_IMAPTEST_TOOLS, or the
    shared tools directory beside the checkout."""
    for d in (
        os.environ.get("CGTWIST_IMAPTEST_TOOLS", ""),
        os.path.join(os.path.dirname(REPO), "shared", "tools", "imaptest"),
        "/work/shared/tools/imaptest",
    ):
        if (
            d
            and os.path.isfile(os.path.join(d, "build.sh"))
            and os.path.isfile(os.path.join(d, "compliance.sh"))
        ):
            return d
    return None


def build(tools: str) -> str:
    """Build imaptest once into a cache directory (a lock keeps parallel runs from building
    twice); return the prefix, or skip the test with the build's own words."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    prefix = os.path.join(cache, "cgtwist", "imaptest-924f619")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(
            ["bash", os.path.join(tools, "build.sh"), prefix],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if r.returncode != 0 or not os.access(os.path.join(prefix, "imaptest"), os.X_OK):
        pytest.skip(
            f"imaptest did not build (build.sh exit {r.returncode}): {(r.stderr or r.stdout)[-400:]}"
        )
    return prefix


@pytest.fixture(scope="module")
def imaptest() -> tuple[str, str]:
    """(tools directory, build prefix)."""
    tools = tools_dir()
    if tools is None:
        pytest.skip(
            "imaptest sources not found (set CGTWIST_IMAPTEST_TOOLS to the directory "
            "holding build.sh and compliance.sh)"
        )
    return tools, build(tools)


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with one implicit-TLS IMAP listener and a test account. All of imaptest's
    connections come from 127.0.0.1 as one user: the per-IP and per-user-and-IP caps
    (protection for a real server) would refuse its parallel sessions."""
    srv = Server(os.path.join(str(tmp_path_factory.mktemp("imaptest")), "base"))
    srv.set_listeners(
        [
            {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
            {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
        ]
    )
    srv.admin("settings", "set", "access.max_connections_per_ip", "0")
    srv.admin("settings", "set", "auth.max_concurrent_per_ip", "0")
    # imaptest logs in one user many times from one address: the per-account-and-IP session
    # cap (10, Dovecot's mail_max_userip_connections) would refuse a client reconnecting
    # while its previous session is still closing
    srv.admin("settings", "set", "auth.max_userip_connections", "0")
    with srv.running():
        srv.admin("account", "add", USER, "--password", PASSWORD)
        yield srv


def _env(server: Server, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        IMAPTEST=prefix,
        HOST="127.0.0.1",
        PORT=str(server.port("imap", tls="implicit")),
        SSL="1",
        IMAP_USER=USER,
        IMAP_PASS=PASSWORD,
        **extra,
    )
    return env


def run_groups(
    server: Server, tools: str, prefix: str, groups: tuple[str, ...] = ()
) -> tuple[dict[str, str], str]:
    """Run compliance.sh (every group, or those named; no stress run): ({group: PASS|FAIL|SKIP},
    the whole output)."""
    r = subprocess.run(
        ["bash", os.path.join(tools, "compliance.sh"), *groups],
        env=_env(server, prefix, STRESS="0"),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    results = {m.group(2): m.group(1) for m in map(_LINE.match, r.stdout.splitlines()) if m}
    return results, r.stdout + r.stderr


def stress_errors(
    server: Server, prefix: str, clients: int = 5, secs: int = 15, box: str = "imaptest-stress"
) -> list[str]:
    """imaptest's random multi-client load with state tracking, as compliance.sh runs it
    (tests/default.mbox as the source of messages) on ``box``: the ``Error:`` lines, each a
    reply that contradicts some session's view of the mailbox."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4_SSL(
        "127.0.0.1", server.port("imap", tls="implicit"), ssl_context=ctx, timeout=60
    )
    try:
        c.login(USER, PASSWORD)
        c.create(box)  # NO when it exists: fine
    finally:
        c.logout()
    r = subprocess.run(
        [
            os.path.join(prefix, "imaptest"),
            "host=127.0.0.1",
            f"port={server.port('imap', tls='implicit')}",
            f"user={USER}",
            f"pass={PASSWORD}",
            "ssl=any-cert",
            f"mbox={os.path.join(prefix, 'tests', 'default.mbox')}",
            f"box={box}",
            f"clients={clients}",
            f"secs={secs}",
        ],
        capture_output=True,
        text=True,
        timeout=secs + 120,
    )
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error:")]


def test_compliance_groups(imaptest: tuple[str, str], imap_server: Server) -> None:
    """Every group that passes today still passes; the rest are listed in the output."""
    tools, prefix = imaptest
    results, output = run_groups(imap_server, tools, prefix)
    assert results, f"compliance.sh reported no groups:\n{output[-3000:]}"
    broken = sorted(g for g in PASSING if results.get(g) != "PASS")
    others = {g: r for g, r in sorted(results.items()) if g not in PASSING}
    print(
        f"imaptest: {sum(r == 'PASS' for r in results.values())} passed; outside the list: "
        + ", ".join(f"{g} {r}" for g, r in others.items())
    )
    newly = sorted(g for g, r in others.items() if r == "PASS")
    if newly:
        print("passing now but not in PASSING (add them): " + ", ".join(newly))
    assert not broken, (
        f"imaptest groups no longer passing: {broken}\n"
        + "\n".join(
            line for line in output.splitlines() if not line.startswith(("PASS ", "SKIP "))
        )[-6000:]
    )


def test_stress_sessions_never_desync(imaptest: tuple[str, str], imap_server: Server) -> None:
    """Ten clients at random on one mailbox (STORE, EXPUNGE, APPEND, FETCH, SEARCH, COPY,
    logins and logouts): no session ever gets a reply that contradicts what it was told
    (imaptest found 300-600 such errors a run before the per-session view)."""
    _tools, prefix = imaptest
    errors = stress_errors(imap_server, prefix, clients=10, secs=10)
    assert not errors, f"{len(errors)} state errors, e.g.:\n" + "\n".join(errors[:20])


def test_stress_with_local_delivery_never_desyncs(
    imaptest: tuple[str, str], imap_server: Server
) -> None:
    """The same on INBOX while LOCAL delivery puts mail into it: new messages, other sessions'
    expunges and FETCH of messages expunged meanwhile (NO [EXPUNGEISSUED], never an empty
    body)."""
    _tools, prefix = imaptest
    stop = threading.Event()
    sent: list[int] = []

    def deliver() -> None:
        port = imap_server.port("smtp")
        while not stop.is_set():
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                for _ in range(5):
                    n = len(sent)
                    s.sendmail(
                        "carol@example.test",
                        [USER],
                        f"Subject: load {n}\r\nMessage-ID: <load{n}@example.test>\r\n\r\nbody\r\n",
                    )
                    sent.append(n)

    sender = threading.Thread(target=deliver, daemon=True)
    sender.start()
    try:
        errors = stress_errors(imap_server, prefix, clients=10, secs=10, box="INBOX")
    finally:
        stop.set()
        sender.join(60)
    assert sent, "no message was delivered during the run"
    assert not errors, f"{len(errors)} state errors, e.g.:\n" + "\n".join(errors[:20])
