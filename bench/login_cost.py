"""Server CPU per IMAP login with the verified-credential cache off and on (#17 lever 3).

    .venv/bin/python bench/login_cost.py [--logins 100] [--rounds 2]

Starts a cgtwist server through the e2e harness (loopback only, its own DNS server), adds one
account and times ``--logins`` IMAP LOGIN + LOGOUT sessions in a row, alternating
``auth.credential_cache_ttl`` 0 (every login runs argon2id, m=19 MiB, t=2) and 300 (the first
login verifies, the rest hit the cache) for ``--rounds`` rounds, cache off first. Prints, per
pass, logins/s and the server process's CPU per login (utime + stime of all its threads from
/proc, so the argon2 threads count), and the load average before and after: on a shared
machine the CPU per login is the steady number, logins/s follows the load.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.harness import ALL_LISTENERS, Server  # noqa: E402

ACCOUNT, PASSWORD = "loginbench@example.test", "login-bench-secret"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_pass(srv: Server, pid: int, ttl: int, logins: int) -> None:
    srv.admin("settings", "set", "auth.credential_cache_ttl", str(ttl))
    port = srv.port("imap")
    c0, t0 = cpu_seconds(pid), time.monotonic()
    for _ in range(logins):
        m = imaplib.IMAP4("127.0.0.1", port, timeout=60)
        m.login(ACCOUNT, PASSWORD)
        m.logout()
    c1, t1 = cpu_seconds(pid), time.monotonic()
    print(
        f"cache ttl={ttl:3d}: {logins} logins in {t1 - t0:.2f} s, {logins / (t1 - t0):.1f}/s, "
        f"server CPU {1000 * (c1 - c0) / logins:.1f} ms/login",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logins", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    srv = Server(os.path.join(tempfile.mkdtemp(prefix="cgtwist-loginbench-"), "base"))
    srv.set_listeners(ALL_LISTENERS)
    srv.admin("settings", "set", "auth.allow_plaintext", "true")
    with srv.running():
        srv.admin("account", "add", ACCOUNT, "--password", PASSWORD)
        assert srv.proc is not None
        for _ in range(args.rounds):
            for ttl in (0, 300):
                one_pass(srv, srv.proc.pid, ttl, args.logins)
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
