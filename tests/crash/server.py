"""The e2e harness's ``Server``, started under the fsync tracer.

Owns only what differs from ``tests.e2e.harness.Server``: ``twistd`` runs under
``FsyncTracer`` (so its fsyncs, and those of its SMTP worker processes, are numbered and can be
cut at), and killing it kills the traced tree, not just strace. Everything else (the bootstrap
file, the loopback DNS server, ``cgtwist-admin``, ports, Maildir paths) is the harness's.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from tests.crash.tracer import FsyncTracer
from tests.e2e.harness import Server, wait_for


class TracedServer(Server):
    """``Server`` whose process tree runs under an ``FsyncTracer`` (``start_traced``)."""

    tracer: Optional[FsyncTracer] = None

    def start_traced(
        self,
        armed: bool = False,
        extra_env: Optional[dict[str, str]] = None,
        workers: int = 0,
        ready_timeout: float = 180.0,
    ) -> FsyncTracer:
        """Start ``twistd cgtwist`` under strace. Unarmed, return once the server logged
        'cgtwist ready' and ``workers`` SMTP worker processes run (ptrace makes every system
        call slower: the deadline is generous). ``armed``: fsyncs are numbered from the start
        and the tree stops at the first: return at once (the caller cuts its way through the
        start-up)."""
        env = self.env
        env.update(extra_env or {})
        text = self.log_text()
        marker = text.count("cgtwist ready")
        started = len(re.findall(r"smtp worker \d+ started", text))
        for stale in ("twistd.pid", "cgtwist.ctl"):
            try:
                os.unlink(os.path.join(self.base, stale))
            except FileNotFoundError:
                pass
        self.tracer = FsyncTracer(
            self.twistd_argv(),
            env=env,
            cwd=self.base,
            log_path=os.path.join(self.base, "..", "twistd.out"),
            armed=armed,
        )
        tracer = self.tracer
        if armed:
            return tracer

        def ready() -> bool:
            if not tracer.alive():
                raise AssertionError(f"traced server exited: {self.log_text()[-4000:]}")
            log = self.log_text()
            return (
                log.count("cgtwist ready") > marker
                and len(re.findall(r"smtp worker \d+ started", log)) >= started + workers
            )

        wait_for(ready, ready_timeout, "the traced server to be ready")
        return tracer

    def kill(self) -> None:
        if self.tracer is not None:
            self.tracer.kill()
            self.tracer = None
        super().kill()
