"""What an idling IMAP session holds, from inside the server: a probe for bench/idle_bench.py.

Put this directory first on the server's PYTHONPATH (``PROBE=1 bench/idle-vs-dovecot.sh`` does
it through ``EXTRA_PYTHONPATH``); Python imports it at start. Each SIGUSR2 then writes
``$IDLE_PROBE_DIR/probe-<n>.json`` after a full collection: for each type, the number of live
objects the garbage collector tracks and the sum of their ``sys.getsizeof`` (a dict's or list's
own table, not what it points to), the number of each container type's items besides, and,
with ``PYTHONTRACEMALLOC=N`` in the environment, the traced bytes per allocating source line
(N frames deep). ``bench/idle_probe/diff.py`` divides the growth between two probes by the
connections opened between them. Not for production: the walk stops the reactor for a moment
(about a second per million objects).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from types import FrameType
from typing import Optional

_DIR = os.environ.get("IDLE_PROBE_DIR", "/tmp")
_seq = [0]


def _probe(_signum: int, _frame: Optional[FrameType]) -> None:
    gc.collect()
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for o in gc.get_objects():
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        count[name] += 1
        size[name] += sys.getsizeof(o)
    out = {"count": count, "size": size, "traced": {}}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snap.statistics("traceback")
        out["traced"] = {
            " <- ".join(
                f"{f.filename.rsplit('/site-packages/', 1)[-1]}:{f.lineno}" for f in s.traceback
            ): s.size
            for s in stats
            if s.size >= 4096
        }
    _seq[0] += 1
    path = os.path.join(_DIR, f"probe-{os.getpid()}-{_seq[0]}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.rename(path + ".tmp", path)


signal.signal(signal.SIGUSR2, _probe)
