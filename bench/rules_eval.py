"""CPU cost of Server Rules per message: facts plus evaluation of N rules, on one core.

    PYTHONPATH=. .venv/bin/python bench/rules_eval.py [--rules 50] [--seconds 2]

Prints microseconds per message for a typical message against N rules whose conditions do not
match (the ordinary case: the rule index, cgtwist.rules.index, leaves few to try) and against the same
set where one in ten rules fires, and the first without the rule index (every rule tried), and
the facts alone. Compare with the per-message CPU of SMTP receiving
(bench/smtp-cpu-profile.sh) to judge the share Rules take; issue #14 asks at most 5%.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

from cgtwist.rules.evaluate import evaluate
from cgtwist.rules.facts import message_facts
from cgtwist.rules.text import parse_rules

MESSAGE = (
    b"Received: from client.example.net (client.example.net [192.0.2.7])\r\n"
    b"\tby mx.example.com with ESMTPS id 1.1; Mon, 7 Dec 2026 12:00:00 +0000\r\n"
    b"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=bob@example.net\r\n"
    b"From: Bob Sender <bob@example.net>\r\nTo: alice@example.com, carol@example.com\r\n"
    b"Cc: dave@example.org\r\nSubject: quarterly figures\r\n"
    b"Message-ID: <20261207120000.1@example.net>\r\nDate: Mon, 7 Dec 2026 12:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"x" * 3000
)


def rule_set(n: int, firing_every: int = 0) -> str:
    kinds = [
        'if From is "*@spam{i}.example"',
        'if Subject is "*viagra{i}*"',
        'if Header Field is "X-Mailer: bulk{i}*"',
        'if Any To or Cc in "list{i}@*, *@news{i}.example"',
        'if SPF Result is "fail"',
        'if Message Size greater than "{i}0M"',
    ]
    out = ["version 1"]
    for i in range(n):
        cond = kinds[i % len(kinds)].format(i=i)
        if firing_every and i % firing_every == 0:
            cond = 'if From is "*@example.net"'
        out.append(f'rule "r{i}"\n  priority {1 + i % 10}\n  {cond}\n  do Add Header "X-R{i}: 1"')
    return "\n".join(out) + "\n"


def measure(text: str, seconds: float, indexed: bool = True) -> float:
    rules = parse_rules(text)
    submit = {"peer": "192.0.2.7", "protocol": "ESMTPS", "tls": "TLSv1.3"}
    now = datetime(2026, 12, 7, 12, 0)
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        facts = message_facts(
            "bob@example.net",
            ["alice@example.com"],
            submit,
            MESSAGE,
            authserv_id="mx.example.com",
            now=now,
        )
        evaluate(rules, facts, server=True, indexed=indexed)
        n += 1
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rules", type=int, default=50)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    facts = measure(rule_set(0), a.seconds)
    none = measure(rule_set(a.rules), a.seconds)
    some = measure(rule_set(a.rules, 10), a.seconds)
    every = measure(rule_set(a.rules), a.seconds, indexed=False)
    print(f"no rules (the facts alone): {facts:.0f} us/message")
    print(f"{a.rules} rules, none firing: {none:.0f} us/message")
    print(f"{a.rules} rules, 1 in 10 firing: {some:.0f} us/message")
    print(f"{a.rules} rules, none firing, every rule tried (no index): {every:.0f} us/message")


if __name__ == "__main__":
    main()
