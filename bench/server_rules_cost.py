"""Instructions (or CPU) the Server Rules cost per message, at the end of DATA and at the enqueuer.

    PYTHONPATH=. .venv/bin/python bench/server_rules_cost.py N receive|enqueue [--time]
    bench/server-rules-instructions.sh N receive|enqueue     (callgrind: the count per message)

Runs the Server Rules of ``bench/server_rules.py N`` (0: none) over the SMTP benchmarks' 5 KB
message from a Client IP, through the server's own code: ``ReceptionRules`` (the end-of-DATA
check, as in each SMTP worker) or ``RulesRunner.server_rules`` (the enqueuer, with the mark the
check left). The rule store is in memory and the Router answers at once, so the figure is the
rules' own work, the same from run to run under callgrind (rounds of 100 and 500 messages,
each inside ``functools.reduce``). ``--time``: CPU microseconds per message instead.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(__file__))
from server_rules import rule_set  # noqa: E402

from cgtwist.core.rules import RulesRunner  # noqa: E402
from cgtwist.core.rules_receive import ReceptionRules  # noqa: E402
from cgtwist.settings import Settings, SettingsHolder  # noqa: E402
from cgtwist.storage.rules import StoredRules  # noqa: E402
from cgtwist.types import Envelope, Recipient, Route, SessionInfo  # noqa: E402

DATA = (
    b"From: <loadgen@example.test>\r\nTo: <smtpbench@example.test>\r\nSubject: receive cpu\r\n"
    b"Message-Id: <1@loadgen.example.test>\r\n\r\n" + (b"La de da de da " * 5 + b"\r\n") * 66
)


class Store:
    """The rule store: the Server Rules' text, revision 1."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def get(self, scope: str, owner: str) -> StoredRules:
        text = self.text if scope == "server" else ""
        return StoredRules(scope, owner, text, 1 if text else 0, 0)

    async def remembered(self, owner: str, name: str) -> list[str]:
        return []


class Accounts:
    main_domain = "example.test"


def main() -> None:
    n, what = int(sys.argv[1]), sys.argv[2]
    clock = task.Clock()
    clock.advance(1_800_000_000)
    runner = RulesRunner(
        Store(rule_set(n) if n else ""),  # type: ignore[arg-type]
        Accounts(),
        SettingsHolder(Settings({})),
        clock=clock,
        hostname="bench.example.test",
        submission=None,
        route=lambda a: defer.succeed(Route("LOCAL", "example.test", a)),
        is_client_ip=lambda ip: True,
    )
    check = ReceptionRules(runner)
    session = SessionInfo("s1", "127.0.0.1", 40000, "127.0.0.1", 2625)

    def envelope(extra: Any) -> Envelope:
        submit = {"peer": "127.0.0.1", "protocol": "ESMTP", **extra}
        return Envelope("loadgen@example.test", [Recipient("smtpbench@example.test")], submit)

    def receive() -> Any:
        d = check.check_message(session, envelope({}), DATA)
        out: list[Any] = []
        d.addBoth(out.append)
        return out[0]

    mark = receive() or {}

    def enqueue() -> None:
        defer.ensureDeferred(runner.server_rules("m1", envelope(mark), DATA))

    step = receive if what == "receive" else enqueue
    for _ in range(200):  # caches filled, code paths taken once
        step()

    def run(count: int) -> None:
        for _ in range(count):
            step()

    if "--time" in sys.argv:
        start = time.process_time()
        run(20000)
        print(
            f"{what}, {n} rules (mark {mark}): {(time.process_time() - start) / 20000 * 1e6:.1f} us/msg"
        )
        return
    functools.reduce(lambda _a, _b: run(100), [0, 0])
    functools.reduce(lambda _a, _b: run(500), [0, 0])


if __name__ == "__main__":
    main()
