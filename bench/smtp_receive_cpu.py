"""CPU per message of an SMTP worker's receiving code, in one process, without the network.

    PYTHONPATH=TREE python bench/smtp_receive_cpu.py CONFIG [MESSAGES] [SESSIONS]
        [--rounds R] [--no-spool] [--profile FILE] [--callgrind]

Builds the receiving half of the server from CONFIG (cgtwist.conf of a base directory whose
store has the account ``smtpbench@example.test`` and ``127.0.0.1`` among the Client IPs, as
``bench/lib.sh``'s ``cg_smtp_server`` leaves it), as an SMTP worker does, and runs rounds of
MESSAGES sessions of one message each (EHLO, MAIL, RCPT, DATA of about 5 KB, QUIT; SESSIONS
of them at once, like ``smtp-source -s``) through the SMTP listener's protocol over an
in-memory transport. The stored files go to ``Queue/incoming/`` as in a worker; nothing
adopts them (empty it after a run).

Prints the reactor thread's and the whole process's CPU time per message (user, system;
the minimum and median of R rounds): the Python work of receiving (dialogue, policy,
submission, spool calls) without the socket system calls and the client, which
``smtp-cpu-profile.sh`` includes. It runs against an older tree as well (``PYTHONPATH``
names the tree), for a comparison by role while modules move. ``--no-spool``: every message
is taken at once and stored nowhere, the dialogue and the policy alone. ``--profile FILE``:
a cProfile of the measured rounds. ``--callgrind``: instructions instead of time, the same
from run to run on a busy machine (``bench/smtp-receive-instructions.sh`` runs it).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import os
import resource
import sys
import time
from typing import Any, Callable, Optional

from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address

HEADER = (
    b"From: <loadgen@example.test>\r\n"
    b"To: <smtpbench@example.test>\r\n"
    b"Subject: receive cpu\r\n"
    b"Message-Id: <%d@loadgen.example.test>\r\n\r\n"
)
BODY = (b"La de da de da " * 5 + b"\r\n") * 66  # about 5 KB, as smtp-source -l 5120
SCRIPT = (
    b"EHLO loadgen.example.test\r\n",
    b"MAIL FROM:<loadgen@example.test>\r\n",
    b"RCPT TO:<smtpbench@example.test>\r\n",
    b"DATA\r\n",
    None,  # the message
    b"QUIT\r\n",
)


class Transport:
    """Just enough of a TCP transport for the SMTP protocol: writes are the client's input."""

    disconnecting = False

    def __init__(self, client: Client, port: int) -> None:
        self.client = client
        self.peer = IPv4Address("TCP", "127.0.0.1", port)
        self.host = IPv4Address("TCP", "127.0.0.1", 2625)

    def write(self, data: bytes) -> None:
        self.client.received(data)

    def writeSequence(self, seq: list[bytes]) -> None:
        self.write(b"".join(seq))

    def getPeer(self) -> IPv4Address:
        return self.peer

    def getHost(self) -> IPv4Address:
        return self.host

    def setTcpNoDelay(self, on: bool) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self.client.closed()

    abortConnection = loseConnection


class Client:
    """One session: each complete reply sends the next line of SCRIPT (outside the write)."""

    def __init__(self, run: Run, n: int) -> None:
        self.run = run
        self.n = n
        self.step = 0
        self.buf = b""
        self.proto: Any = None

    def start(self, factory: Any, port: int) -> None:
        self.proto = factory.buildProtocol(None)
        self.proto.makeConnection(Transport(self, port))

    def received(self, data: bytes) -> None:
        self.buf += data
        if not self.buf.endswith(b"\r\n"):
            return
        last = self.buf[:-2].rsplit(b"\r\n", 1)[-1]
        if last[3:4] != b" ":
            return  # more lines of a multi-line reply to come
        reply, self.buf = self.buf, b""
        if reply[:1] not in (b"2", b"3"):
            raise SystemExit(f"session {self.n}: unexpected reply {reply!r}")
        if self.step < len(SCRIPT):
            line = SCRIPT[self.step]
            self.step += 1
            self.run.later(self, line if line is not None else HEADER % self.n + BODY + b".\r\n")

    def closed(self) -> None:
        self.run.later(self, None)


class NoSpool:
    """A submission that takes every message at once and stores nothing (``--no-spool``)."""

    def __init__(self) -> None:
        self.n = 0

    def check_capacity(self, size: int = 0) -> defer.Deferred[None]:
        return defer.succeed(None)

    def submit(self, envelope: Any, data: bytes) -> defer.Deferred[str]:
        self.n += 1
        return defer.succeed(f"nospool-{self.n}")


class Run:
    """Feeds the sessions from a trampoline, so no reply handler runs inside another."""

    def __init__(self, factory: Any, messages: int, sessions: int, done: Callable[[], None]):
        self.factory = factory
        self.messages = messages
        self.sessions = sessions
        self.started = 0
        self.finished = 0
        self.pending: list[tuple[Client, Optional[bytes]]] = []
        self.pumping = False
        self.done = done

    def begin(self) -> None:
        for _ in range(min(self.sessions, self.messages)):
            self.new_session()
        self.pump()

    def new_session(self) -> None:
        self.started += 1
        Client(self, self.started).start(self.factory, 40000 + self.started % 20000)

    def later(self, client: Client, data: Optional[bytes]) -> None:
        self.pending.append((client, data))
        if not self.pumping:
            reactor.callLater(0, self.pump)

    def pump(self) -> None:
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.pending:
                client, data = self.pending.pop(0)
                if data is not None:
                    client.proto.dataReceived(data)
                    continue
                client.proto.connectionLost(None)
                self.finished += 1
                if self.started < self.messages:
                    self.new_session()
                elif self.finished == self.messages:
                    self.done()
        finally:
            self.pumping = False


def thread_ticks() -> tuple[int, int]:
    """(user, system) clock ticks of the calling thread (Linux)."""
    with open("/proc/thread-self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


async def measure(
    factory: Any, n: int, sessions: int, prof: Optional[cProfile.Profile]
) -> tuple[float, float, float, float, float]:
    """One round of ``n`` messages: (reactor user, reactor sys, process user, process sys)
    microseconds per message, and messages per second."""
    finished: defer.Deferred[None] = defer.Deferred()
    r0, k0, w0 = resource.getrusage(resource.RUSAGE_SELF), thread_ticks(), time.time()
    if prof is not None:
        prof.enable()
    Run(factory, n, sessions, lambda: finished.callback(None)).begin()
    await finished
    if prof is not None:
        prof.disable()
    k1, w1, r1 = thread_ticks(), time.time(), resource.getrusage(resource.RUSAGE_SELF)
    tick = 1e6 / os.sysconf("SC_CLK_TCK") / n
    return (
        (k1[0] - k0[0]) * tick,
        (k1[1] - k0[1]) * tick,
        (r1.ru_utime - r0.ru_utime) / n * 1e6,
        (r1.ru_stime - r0.ru_stime) / n * 1e6,
        n / (w1 - w0),
    )


def freeze_caches(app: Any) -> None:
    """Stop the clocks of the receiving side's answer caches (the Router's facts and routes,
    account limits): under valgrind a round takes minutes, longer than their few seconds
    of life, and an answer asked again would wait for the store (no longer one synchronous
    round, nor the same count from run to run)."""
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 5 or not hasattr(obj, "__dict__"):
            return
        seen.add(id(obj))
        for name, value in list(vars(obj).items()):
            if name == "_now" and callable(value):
                frozen = value()
                setattr(obj, name, lambda frozen=frozen: frozen)
            elif type(value).__module__.startswith("cgtwist."):
                walk(value, depth + 1)

    walk(app, 0)


def counted(factory: Any, n: int, sessions: int) -> None:
    """One round of ``n`` messages run to its end inside ``functools.reduce`` (a C function
    nothing else calls here), so that callgrind counts the instructions of exactly this
    round: without the spool every reply is given at once, the round never waits for the
    reactor, and the count is the same from run to run (a measure of work that the load of
    a shared machine does not blur)."""
    run = Run(factory, n, sessions, lambda: None)
    gc.collect()  # each round starts with the collector's generations empty
    functools.reduce(lambda _a, _b: run.begin(), [0, 0])
    if run.finished != n:
        raise SystemExit(f"--callgrind: {run.finished} of {n} sessions ended in the round")
    print(f"{n} messages counted, {sessions} sessions", flush=True)


async def build(config: str) -> tuple[Any, Any]:
    """The receiving components of this tree, as an SMTP worker builds them, and the SMTP
    listener's factory."""
    from cgtwist import config as cgconfig
    from cgtwist.app import Components
    from cgtwist.settings import SettingsHolder
    from cgtwist.tls import ServerTLS
    from cgtwist.types import ListenerSpec

    cfg = cgconfig.load(config)
    tls = ServerTLS(cfg.certificate, cfg.key)
    tls.reload()
    settings = SettingsHolder()
    if hasattr(Components, "open_reception"):
        app = Components(cfg, reactor, settings, tls)
        await app.open_reception()
        app.spool.subscribe(lambda msg_id, envelope, data: None)
    else:  # a tree before cgtwist.smtpworker (a59906c): the worker passed a link
        link = type("Link", (), {"enqueue": lambda self, *a: defer.succeed(None)})()
        app = Components(cfg, reactor, settings, tls, link=link)
        await app.open()
    spec = ListenerSpec(protocol="smtp", address="127.0.0.1", port=2625, tls="starttls")
    return app, app.factory_for(spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("messages", nargs="?", type=int, default=3000)
    parser.add_argument("sessions", nargs="?", type=int, default=10)
    parser.add_argument("--profile")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="a round of MESSAGES / 5 then one of MESSAGES, each inside functools.reduce, "
        "for valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce "
        "--dump-after=functools_reduce (implies --no-spool): the difference of the two "
        "counts divided by the difference of the messages is the instructions per message",
    )
    parser.add_argument(
        "--no-spool",
        action="store_true",
        help="accept each message without storing it: the dialogue and policy alone",
    )
    args = parser.parse_args()
    args.no_spool = args.no_spool or args.callgrind
    try:  # the runtime pieces an SMTP worker runs with ([server] runtime = tuned)
        from cgtwist.runtime.mode import Runtime

        Runtime("tuned", reactor).start_worker()
    except ImportError:
        from cgtwist.reactor import streamline

        streamline(reactor)

    async def go() -> None:
        app, factory = await build(args.config)
        if args.no_spool:
            factory.submission = NoSpool()
        if args.warmup:  # caches filled, pools started, code paths taken once
            finished: defer.Deferred[None] = defer.Deferred()
            Run(factory, args.warmup, args.sessions, lambda: finished.callback(None)).begin()
            await finished
        if args.callgrind:  # a short round, then the full one: their difference is per message
            freeze_caches(app)
            counted(factory, args.messages // 5, args.sessions)
            counted(factory, args.messages, args.sessions)
            await app.close()
            return
        prof = cProfile.Profile() if args.profile else None
        rounds = []
        for _ in range(args.rounds):
            rounds.append(await measure(factory, args.messages, args.sessions, prof))
        if prof is not None:
            prof.dump_stats(args.profile)
        n = args.messages
        for label, i in (
            ("reactor user", 0),
            ("reactor sys", 1),
            ("process user", 2),
            ("process sys", 3),
        ):
            values = sorted(r[i] for r in rounds)
            print(f"{label:12} min {values[0]:5.0f} median {values[len(values) // 2]:5.0f} us/msg")
        print(
            f"{n} messages x {args.rounds} rounds, {args.sessions} sessions, "
            f"{min(r[4] for r in rounds):.0f}-{max(r[4] for r in rounds):.0f} msg/s"
        )
        await app.close()

    def stop(result: Any) -> Any:
        if isinstance(result, Exception) or hasattr(result, "printTraceback"):
            result.printTraceback()  # type: ignore[union-attr]
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()).addBoth(stop))
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
