"""The lines between the server and an IMAP/POP3 worker process: names and framing only.

One ASCII line per message, fields separated by one space, the last field free text where a
message has one (a login name, a reason). Upper case from the worker, lower case the server's
answers to them; ``R`` and ``E`` are the server's own.

Worker -> server::

    O <n> <listener> <ip>       a connection on listener number <listener>: may it stay?
    X <listener> <ip>           an admitted connection from <ip> ended
    P <n> <ip>                  a login attempt starts (auth.max_concurrent_per_ip)
    D <ip>                      that attempt ended (only after "p <n> 1")
    F <n> <ip> <proto> <0|1> <digest> <login>   a failed login (1: the server writes its
                                log line): answered after the penalty's delay
    K <ip>                      a correct password from <ip>: forget its failures
    B <n> <ip> <digest> <account>   a wrong password for <account> (auth.account_max_failures):
                                answered after the server's account delay
    U <n> <ip> <account>        a logged-in session of <account> from <ip>: within the limit?
    V <n>                       that session ended (only after "u <n> 1")
    L <n> <proto> <0|1> <ip> <account>   list a session for WebUser (1: over TLS)
    G <n>                       take it off the list
    S <kind> <name> <count>     counters (cgtwist.stats.forwarded_lines)

Server -> worker::

    o <n> <0|1>    p <n> <0|1>    u <n> <0|1>    f <n> <delay>    b <n> <delay>
    Z <seconds> <account>       <account> is locked for <seconds> (also at a worker's start)
    E <n> <reason>              end listed session <n> with <reason> in its goodbye
    R                           reload settings and TLS certificate

A number ``<n>`` is the worker's own (one counter per worker); the server keys what it holds
by worker and number, and gives all of a worker's holdings back when that worker ends.
"""

from __future__ import annotations

MAX_LINE = 4096


def line(*fields: object) -> bytes:
    """One message: fields joined by spaces, newline-terminated. A field may not contain a
    newline (free text has them replaced), nor a space unless it is the last."""
    text = " ".join(str(f) for f in fields).replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8", "replace")[: MAX_LINE - 1] + b"\n"


def fields(raw: bytes, count: int) -> list[str]:
    """Split ``raw`` (without its newline) into ``count`` fields, the last one keeping its
    spaces; ValueError when there are fewer."""
    parts = raw.decode("utf-8", "replace").split(" ", count - 1)
    if len(parts) != count:
        raise ValueError(f"expected {count} fields in {raw[:100]!r}")
    return parts


def flag(value: bool) -> str:
    return "1" if value else "0"
