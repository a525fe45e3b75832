"""Start a cgtwist from the current checkout for imaptest (limits off, as the e2e module does).

``python bench/imaptest_serve.py BASE [WORKERS]``: prints ``IMAPS <port> SMTP <port>`` once
ready; WORKERS sets ``imap.workers`` (default 0: sessions in the server process). SIGTERM stops
the server and its workers. Used by bench/imaptest-compliance.sh.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.getcwd())
from tests.e2e.harness import Server  # noqa: E402

srv = Server(sys.argv[1])
srv.set_listeners(
    [
        {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
        {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    ]
)
for k in (
    "access.max_connections_per_ip",
    "auth.max_concurrent_per_ip",
    "auth.max_userip_connections",
):
    srv.admin("settings", "set", k, "0")
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
srv.admin("settings", "set", "imap.workers", str(workers))
srv.start()
srv.admin("account", "add", "bob@example.test", "--password", "secret")
if workers:
    deadline = time.monotonic() + 120
    while len(srv.worker_pids(ready=True, kind="imap")) < workers:
        if time.monotonic() > deadline:
            sys.exit("imap workers not ready")
        time.sleep(0.2)
print("IMAPS", srv.port("imap", tls="implicit"), "SMTP", srv.port("smtp"), flush=True)
signal.signal(signal.SIGTERM, lambda *a: (srv.stop(), srv.close(), sys.exit(0)))
while srv.proc and srv.proc.poll() is None:
    time.sleep(1)
