"""How often CPython's cyclic garbage collector runs in a long-running server process.

CPython collects its youngest generation every 700 net container allocations, the middle one
every tenth of those and the whole heap every hundredth (once the heap has grown by a quarter
since the last). A mail server allocates hundreds of short-lived containers per message
(Deferreds, coroutines, envelopes, log events) that reference counting frees; the collector
finds little among them, but each full collection walks every object the process holds, and
a queue keeps up to ``queue.active_window`` messages in memory. Measured in a cold outbound
drain of 9,500 messages (``bench/outbound-profile.sh`` with a ``gc.callbacks`` probe): 682
young, 61 middle and 4 full collections, 1.1 s of the server's 8.3 s CPU, the full ones
stopping the reactor for 80-320 ms each. With the young threshold at ``YOUNG`` the same drain
ran 21 young collections, one middle and no full one.

``tune(on)`` sets that threshold (``[server] runtime = tuned``) or leaves Python's own
(``plain``). Nothing here touches Twisted; it sits with the runtime's other process-wide
switches because it is chosen by the same setting.
"""

from __future__ import annotations

import gc

YOUNG = 7000  # CPython's default is 700; the two older generations keep their factor of 10


def tune(on: bool) -> None:
    """Collect the young generation every ``YOUNG`` net allocations when ``on``."""
    if on:
        _young, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG, middle, old)
