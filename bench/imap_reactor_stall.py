"""How long can IMAP work hold the server's reactor? An SMTP session's NOOP round trips, measured
while IMAP clients SEARCH BODY/TEXT and FETCH BODYSTRUCTURE/BODY[n] over large multipart messages.

The reactor serves SMTP, POP3, IMAP and the web panel: any IMAP command that works on it for
long stalls every other session. The longest NOOP round trip is the stall a user would feel.

    .venv/bin/python bench/imap_reactor_stall.py [--large 4] [--size-mb 20] [--clients 3] [--secs 30]

Prints the NOOP round-trip maximum and percentiles with and without the IMAP load. A number,
not a pass/fail: compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import base64
import imaplib
import os
import random
import smtplib
import ssl
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.harness import Server  # noqa: E402

USER, PASSWORD = "stall@example.test", "stall-secret"


def large_message(size: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    blob = base64.encodebytes(rnd.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    text = b"".join(b"line %d of some ordinary text words here\r\n" % i for i in range(size // 400))
    return (
        b"From: big@example.test\r\nTo: stall@example.test\r\nSubject: large %d\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n'
        b"--b%d\r\nContent-Type: text/plain\r\n\r\n%s\r\n"
        b"--b%d\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"%s\r\n--b%d--\r\n"
    ) % (seed, seed, seed, text, seed, blob, seed)


def imap(srv: Server) -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4_SSL(
        "127.0.0.1", srv.port("imap", tls="implicit"), ssl_context=ctx, timeout=600
    )
    c.login(USER, PASSWORD)
    return c


def probe(srv: Server, secs: float) -> list[float]:
    """NOOP round trips over one SMTP session for ``secs`` seconds."""
    out = []
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=600) as s:
        s.ehlo("probe.example.test")
        end = time.monotonic() + secs
        while time.monotonic() < end:
            t = time.monotonic()
            s.noop()
            out.append(time.monotonic() - t)
            time.sleep(0.005)
    return out


def summary(rtts: list[float]) -> str:
    r = sorted(rtts)
    pick = lambda q: r[min(len(r) - 1, int(q * len(r)))] * 1000  # noqa: E731
    return f"n={len(r)} p50={pick(0.5):.1f} ms p99={pick(0.99):.1f} ms max={r[-1] * 1000:.1f} ms"


COMMANDS = {
    "search-body": ("search", None, "BODY", "zz-not-there"),
    "search-text": ("search", None, "TEXT", "ordinary"),
    "bodystructure": ("fetch", "1:*", "(BODYSTRUCTURE)"),
    "body-part": ("fetch", "1:*", "(BODY.PEEK[1])"),
    "append": None,
}


def load(srv: Server, stop: threading.Event, counts: list[int], only: list[str]) -> None:
    c = imap(srv)
    c.select("INBOX")
    n = 0
    while not stop.is_set():
        for name in only:
            if stop.is_set():
                break
            cmd = COMMANDS[name]
            if cmd is None:
                # New messages now and then, so BODYSTRUCTURE is computed again, not only cached.
                c.append("INBOX", None, None, large_message(2 << 20, random.randrange(1 << 30)))
            else:
                typ, data = getattr(c, cmd[0])(*cmd[1:])
                assert typ == "OK", (name, typ, data)
            n += 1
    counts.append(n)
    c.logout()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--large", type=int, default=4)
    ap.add_argument("--size-mb", type=int, default=20)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--secs", type=float, default=30)
    ap.add_argument(
        "--only", default=",".join(COMMANDS), help="comma-separated: " + ", ".join(COMMANDS)
    )
    a = ap.parse_args()
    srv = Server(os.path.join(tempfile.mkdtemp(prefix="imapstall-", dir="/var/tmp"), "base"))
    srv.set_listeners(
        [
            {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
            {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
        ]
    )
    srv.admin("settings", "set", "access.max_connections_per_ip", "0")
    srv.admin("settings", "set", "auth.max_concurrent_per_ip", "0")
    with srv.running():
        srv.admin("account", "add", USER, "--password", PASSWORD)
        c = imap(srv)
        for i in range(a.large):
            c.append("INBOX", None, None, large_message(a.size_mb << 20, i))
        for i in range(200):
            c.append(
                "INBOX",
                None,
                None,
                b"From: a@example.test\r\nSubject: small %d\r\n\r\nhello\r\n" % i,
            )
        c.logout()
        print("idle:   ", summary(probe(srv, 5)))
        stop = threading.Event()
        counts: list[int] = []
        threads = [
            threading.Thread(target=load, args=(srv, stop, counts, a.only.split(",")))
            for _ in range(a.clients)
        ]
        for t in threads:
            t.start()
        rtts = probe(srv, a.secs)
        stop.set()
        for t in threads:
            t.join()
        print("loaded: ", summary(rtts), f"({sum(counts)} IMAP commands by {a.clients} clients)")


if __name__ == "__main__":
    main()
