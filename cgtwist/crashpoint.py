"""Test-only crash points: kill the process with SIGKILL at a named step of a durable write.

Owns the names of the crash points and the one function that checks them. It does nothing unless
the environment variable ``CGTWIST_CRASHPOINT`` names the point being passed, so the crash tests
of RELIABILITY.md b-A.2 can stop a real server between two steps of the spool or Maildir protocol.
"""

from __future__ import annotations

import os
import signal

ENV = "CGTWIST_CRASHPOINT"

# Spool (cgtwist.spool): the .tmp file is written but not yet fsynced.
SPOOL_BEFORE_FSYNC = "spool-before-fsync"
# Spool: the .tmp file is fsynced, not yet renamed to .msg (the client never got a 250).
SPOOL_BEFORE_RENAME = "spool-before-rename"
# Spool: renamed to .msg, before the directory fsync and before the caller is told (no 250 yet).
SPOOL_AFTER_RENAME = "spool-after-rename"
# LOCAL delivery: the Maildir tmp/ file is written and fsynced, not yet renamed into new/.
LOCAL_BEFORE_RENAME = "local-before-rename"
# LOCAL delivery: the message is in new/ (and new/ fsynced), not yet recorded in the journal.
LOCAL_AFTER_RENAME = "local-after-rename"

ALL = (
    SPOOL_BEFORE_FSYNC,
    SPOOL_BEFORE_RENAME,
    SPOOL_AFTER_RENAME,
    LOCAL_BEFORE_RENAME,
    LOCAL_AFTER_RENAME,
)


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``$CGTWIST_CRASHPOINT`` equals ``name``; otherwise return at once.

    Safe to call from any thread: SIGKILL ends the whole process, with no cleanup and no flush,
    like a power cut for the process (not for the page cache).
    """
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
