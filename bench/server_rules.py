"""N realistic Server Rules in the text form, for the SMTP benchmarks (CG_SERVER_RULES=N).

    PYTHONPATH=. .venv/bin/python bench/server_rules.py 50 > rules.txt
    cgtwist-admin rules set --server rules.txt

The kinds an administrator writes (issue #14): refusals by sender, DNSBL listing, SPF result and
size; discards of bulk mailers; subject tags and headers for spam signs; a redirect of abuse
mail; a Stop Processing for partners; one rule on the Router's answer. None of them matches the
benchmark's traffic (smtp-source to smtpbench@example.test from a Client IP), so each message
pays for checking every rule's first conditions, the ordinary case, and is delivered as is.
"""

from __future__ import annotations

import sys

KINDS = [
    ('if From is "*@spam{i}.example"', 'do Reject with "5.7.1 sender {i} refused"'),
    ('if RBL Listed is "zen{i}.example"', 'do Reject with "listed in zen{i}"'),
    ('if Header Field is "X-Mailer: bulk{i}*"', "do Discard"),
    ('if Subject is "*viagra{i}*"\n  if Human Generated', 'do Tag Subject "[SPAM{i}]"'),
    ('if SPF Result is "fail"\n  if From is "*@bank{i}.example"', 'do Reject with "forged"'),
    ('if Any To or Cc in "abuse{i}@*, security{i}@*"', 'do Redirect to "abuse@example.test"'),
    ('if Message Size greater than "{big}M"', 'do Reject with "5.3.4 too big"'),
    ('if Source is "trusted"\n  if From is "*@partner{i}.example"', "do Stop Processing"),
    ('if Subject is "[list{i}]*"', 'do Add Header "X-List: {i}"'),
    ('if Return-Path is "bounce{i}-*@*"', 'do Add Header "X-Bounce: {i}"'),
]
ROUTED = ('if Any Route is "SMTP(*)*"\n  if From is "*@outbound{i}.example"', "do Discard")


def rule_set(n: int) -> str:
    out = ["version 1"]
    for i in range(n):
        cond, act = ROUTED if i == n - 1 and n >= 10 else KINDS[i % len(KINDS)]
        text = (cond + "\n  " + act).format(i=i, big=40 + i)
        out.append(f'\nrule "server rule {i}"\n  priority {1 + i % 10}\n  {text}')
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(rule_set(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
