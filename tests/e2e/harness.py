"""A real ``twistd cgtwist`` process in a temporary base directory, for end-to-end tests.

Owns starting, stopping and killing the server, its bootstrap file, and running
``cgtwist-admin`` against it. Listeners use port 0 on 127.0.0.1; the bound ports are read back
from ``<base>/cgtwist.ports``. Waiting is always for a condition (a log line, a file), with a
deadline, never a fixed sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
POSTMASTER_PASSWORD = "postmaster-e2e-secret"
NOBODY = 65534  # the uid and gid a server started as root drops to (start_as_nobody)

ALL_LISTENERS = [
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "starttls", "submission": True},
    {"protocol": "smtp", "address": "127.0.0.1", "port": 0, "tls": "implicit", "submission": True},
    {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "pop3", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "starttls"},
    {"protocol": "imap", "address": "127.0.0.1", "port": 0, "tls": "implicit"},
]


# Test zones for the loopback DNS server every e2e server is pointed at: senders' domains
# exist (Return-path check), nothing resolves to a non-loopback address.
DEFAULT_ZONE: dict[str, list[str]] = {
    "example.test": ["MX 10 mail.example.test", "A 127.0.0.1"],
    "mail.example.test": ["A 127.0.0.1"],
    "elsewhere.test": ["MX 10 mx.elsewhere.test", "A 127.0.0.1"],
    "mx.elsewhere.test": ["A 127.0.0.1"],
    "client.elsewhere.test": ["A 127.0.0.1"],
}


_RUNNING: set[DNSServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test that failed before its teardown must not leave DNS servers behind."""
    for dns_server in list(_RUNNING):
        dns_server.stop()


class DNSServer:
    """``python -m tests.dnsserver`` in a subprocess, serving zones on 127.0.0.1."""

    def __init__(
        self,
        records: dict[str, list[str]],
        workdir: str,
        behaviours: Optional[dict[str, Any]] = None,
    ) -> None:
        path = os.path.join(workdir, "zone.json")
        with open(path, "w") as f:
            json.dump(records, f)
        faults: list[str] = []
        if behaviours:
            faults = ["--behaviours", os.path.join(workdir, "faults.json")]
            with open(faults[1], "w") as f:
                json.dump(behaviours, f)
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.dnsserver", "--json", path, *faults],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        _RUNNING.add(self)
        self.address = self.proc.stdout.readline().decode().strip()
        if not self.address:
            self.stop()
            raise AssertionError("the test DNS server did not start")

    def stop(self) -> None:
        _RUNNING.discard(self)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns a true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def as_nobody_wrapper(workdir: str) -> tuple[str, ...]:
    """Run the server in a private mount namespace where ``nobody`` can read the Python
    installation: this machine's interpreter lives under /root (mode 0700), and the server
    imports modules after it dropped root. Nothing changes outside the namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    python_home = os.path.realpath(os.path.join(BIN, "python"))
    if not python_home.startswith("/root/"):
        return ()
    top = "/root/" + python_home.split("/")[2]
    keep = os.path.join(workdir, "root-top")
    os.makedirs(keep)
    script = (
        f"mount --bind {top} {keep} && mount -t tmpfs -o mode=755 tmpfs /root && "
        f'mkdir -p {top} && mount --bind {keep} {top} && exec "$@"'
    )
    return ("unshare", "-m", "sh", "-c", script, "sh")


class Server:
    """One cgtwist server process under test."""

    def __init__(
        self,
        base: str,
        main_domain: str = "example.test",
        extra_config: str = "",
        env: Optional[dict[str, str]] = None,
        dns_records: Optional[dict[str, list[str]]] = None,
        dns_behaviours: Optional[dict[str, Any]] = None,
        server_config: str = "",
    ) -> None:
        """``server_config``: more lines for the ``[server]`` section (``node = "n1"``);
        ``extra_config``: more sections after ``[dns]``."""
        self.base = base
        self.main_domain = main_domain
        self.conf = os.path.join(base, "cgtwist.conf")
        self.logfile = os.path.join(base, "cgtwist.log")
        self.pidfile = os.path.join(base, "twistd.pid")
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.extra_env = env or {}
        os.makedirs(base, exist_ok=True)
        # dns_behaviours: faults per name, e.g. {"x.test/TXT": "servfail", "y.test": "timeout"}
        self.dns = DNSServer(
            DEFAULT_ZONE if dns_records is None else dns_records, base, dns_behaviours
        )
        with open(self.conf, "w") as f:
            f.write(
                f'[server]\nbase_dir = "{base}"\nmain_domain = "{main_domain}"\n'
                f'hostname = "mail.{main_domain}"\nunprivileged_ports = true\n{server_config}'
                f'[dns]\nnameservers = ["{self.dns.address}"]\ntimeout = 5.0\n{extra_config}'
            )

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env["CGTWIST_CONFIG"] = self.conf
        env["CGTWIST_POSTMASTER_PASSWORD"] = POSTMASTER_PASSWORD
        env.update(self.extra_env)
        return env

    def admin(
        self, *args: str, stdin: Optional[str] = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cgtwist-admin`` with this server's config; before the server's first start,
        ``cgtwist-admin init`` first (no other command creates the store)."""
        if args[:1] != ("init",) and not os.path.exists(os.path.join(self.base, "cgtwist.db")):
            self.admin("init")
        r = subprocess.run(
            [sys.executable, "-m", "cgtwist.cli", "--config", self.conf, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"cgtwist-admin {' '.join(args)} failed: {r.stderr}{r.stdout}")
        return r

    def set_listeners(self, listeners: list[dict[str, Any]]) -> None:
        self.admin("settings", "set", "listeners", json.dumps(listeners))

    def log_text(self) -> str:
        """The whole log, oldest line first: twistd rotates ``cgtwist.log`` at 1 MB into
        ``cgtwist.log.1`` (the newest), ``.2``, ...; a test under load must not miss a line
        (a worker's 'started' line, 'cgtwist ready') because it moved into a rotated file."""
        folder, name = os.path.split(self.logfile)
        try:
            rotated = sorted(
                (
                    int(n[len(name) + 1 :])
                    for n in os.listdir(folder)
                    if n.startswith(name + ".") and n[len(name) + 1 :].isdigit()
                ),
                reverse=True,
            )
        except FileNotFoundError:
            return ""
        parts = []
        for path in [f"{self.logfile}.{n}" for n in rotated] + [self.logfile]:
            try:
                with open(path, errors="replace") as f:
                    parts.append(f.read())
            except FileNotFoundError:  # rotated away between listing and reading
                continue
        return "".join(parts)

    def twistd_argv(self, *twistd_args: str, daemon: bool = False) -> list[str]:
        """The command line that runs this server: twistd with its pidfile and logfile in the
        base directory, ``twistd_args`` (``--uid``, ...) before the plugin name, in the
        foreground (``-n``) unless ``daemon``."""
        return [
            os.path.join(BIN, "twistd"),
            *(() if daemon else ("-n",)),
            "--pidfile",
            self.pidfile,
            "--logfile",
            self.logfile,
            *twistd_args,
            "cgtwist",
            "--config",
            self.conf,
        ]

    def start(
        self,
        ready_timeout: float = 120.0,
        extra_env: Optional[dict[str, str]] = None,
        twistd_args: tuple[str, ...] = (),
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """``twistd_args``: more twistd options, e.g. ``("--uid", "65534")``; ``wrapper``: a
        command that runs twistd (its argv follows), e.g. ``unshare``."""
        env = self.env
        env.update(extra_env or {})
        marker = self.log_text().count("cgtwist ready")
        self.proc = subprocess.Popen(
            [*wrapper, *self.twistd_argv(*twistd_args)],
            env=env,
            cwd=self.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise AssertionError(
                    f"server exited with {self.proc.returncode}: {out}\n{self.log_text()[-4000:]}"
                )
            return self.log_text().count("cgtwist ready") > marker

        wait_for(ready, ready_timeout, "the server to log 'cgtwist ready'")

    def start_as_nobody(self, workdir: str) -> None:
        """Start as root with ``--uid``/``--gid`` ``NOBODY``: the base directory is handed to
        nobody first, and the server runs in ``as_nobody_wrapper(workdir)``'s namespace.
        ``workdir`` must be reachable by nobody (mode 0755)."""
        for root, dirs, files in os.walk(self.base):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), NOBODY, NOBODY)
        os.chown(self.base, NOBODY, NOBODY)
        self.start(
            twistd_args=("--uid", str(NOBODY), "--gid", str(NOBODY)),
            wrapper=as_nobody_wrapper(workdir),
        )

    def run_to_exit(self, timeout: float = 60.0, daemon: bool = False) -> tuple[int, str]:
        """Start the server expecting it to fail: its exit status, and what it printed followed
        by its log. ``daemon``: without ``-n``; the status is then the daemonizing parent's,
        which reports the outcome of binding (``privilegedStartService``)."""
        proc = subprocess.Popen(
            self.twistd_argv(daemon=daemon),
            env=self.env,
            cwd=self.base,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        return proc.returncode, out.decode(errors="replace") + self.log_text()

    def ports(self) -> list[dict[str, Any]]:
        with open(os.path.join(self.base, "cgtwist.ports")) as f:
            result: list[dict[str, Any]] = json.load(f)
            return result

    def port(self, protocol: str, tls: str = "starttls", submission: bool = False) -> int:
        for p in self.ports():
            if (
                p["protocol"] == protocol
                and p["tls"] == tls
                and bool(p["submission"]) == submission
                and p["bound"]
            ):
                return int(p["port"])
        raise AssertionError(f"no bound {protocol} listener tls={tls} submission={submission}")

    def kill(self) -> None:
        """SIGKILL: the crash a power cut or OOM killer would cause."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait: the graceful stop an init system does."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(90)  # server.shutdown_grace (30 s) and a busy machine's margin
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.proc = None
        return rc

    def worker_pids(self, ready: bool = False, kind: str = "smtp") -> list[int]:
        """Pids of the workers of ``kind`` (``smtp``, ``imap``, ``outbound``) the server says it started
        (``ready``: that have also said they are ready), still alive (and not zombies)."""
        pids = []
        pattern = (
            kind + r" worker \d+ ready \(pid (\d+)\)"
            if ready
            else kind + r" worker \d+ started \(pid (\d+)\)"
        )
        for pid in map(int, re.findall(pattern, self.log_text())):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state != "Z":
                pids.append(pid)
        return pids

    def close(self) -> None:
        """Kill the server if it still runs, its SMTP workers (a server killed with SIGKILL
        cannot stop them: never leave one behind a failed test), and the DNS server."""
        self.kill()
        for kind in ("smtp", "imap"):
            for pid in self.worker_pids(kind=kind):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.dns.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        """Start the server for a fixture and always stop it (SIGTERM) and close it after,
        also when the fixture's own set-up after start (accounts, settings) fails: a
        ``yield`` fixture runs no teardown for an exception before its yield, and the
        twistd process would outlive the test run."""
        try:
            self.start()
            yield self
        finally:
            self.stop()
            self.close()

    def maildir(self, account: str, domain: Optional[str] = None) -> str:
        return os.path.join(self.base, "Domains", domain or self.main_domain, account, "Maildir")

    def messages(self, account: str, domain: Optional[str] = None) -> list[bytes]:
        """Every message file in the account's INBOX (new/ and cur/), oldest first."""
        out = []
        md = self.maildir(account, domain)
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            if os.path.isdir(d):
                for name in sorted(os.listdir(d)):
                    with open(os.path.join(d, name), "rb") as f:
                        out.append(f.read())
        return out

    def wait_messages(
        self,
        account: str,
        count: int,
        timeout: float = 60.0,
        containing: bytes = b"",
        domain: Optional[str] = None,
    ) -> list[bytes]:
        """Wait until the account's INBOX holds at least ``count`` messages that contain
        ``containing`` (any message, by default); return those messages, oldest first."""

        def matching() -> list[bytes]:
            return [m for m in self.messages(account, domain) if containing in m]

        return wait_for(  # type: ignore[no-any-return]
            lambda: (m := matching()) and len(m) >= count and m,
            timeout,
            f"{count} message(s) with {containing!r} in {account}'s Maildir",
        )

    def tls_context(self) -> ssl.SSLContext:
        """A client context that verifies the server's generated certificate, whose name is
        'localhost' (connect to 127.0.0.1 with ``server_hostname="localhost"``)."""
        return ssl.create_default_context(cafile=os.path.join(self.base, "tls", "cert.pem"))

    def send(
        self, sender: str, rcpts: list[str], message: bytes | str, helo: Optional[str] = None
    ) -> None:
        """One message from a remote client over port 25 (no TLS, no AUTH); every recipient
        must be accepted. ``helo``: the EHLO name (smtplib's default: this host's name)."""
        with smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=60) as s:
            if helo is not None:
                s.ehlo(helo)
            refused = s.sendmail(sender, rcpts, message)
        assert not refused, refused

    def submit(
        self, user: str, rcpts: list[str], message: bytes | str, password: Optional[str] = None
    ) -> None:
        """One message from a local account over submission (587: STARTTLS, verified against
        the generated certificate, then AUTH); ``password`` defaults to the tests'
        ``<name>-secret``."""
        with smtplib.SMTP("127.0.0.1", self.port("smtp", submission=True), timeout=60) as s:
            s._host = "localhost"  # type: ignore[attr-defined]  # the certificate's name
            s.starttls(context=self.tls_context())
            s.login(user, password or user.partition("@")[0] + "-secret")
            refused = s.sendmail(user, rcpts, message)
        assert not refused, refused
