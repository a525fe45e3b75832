"""The errors administration raises: one line an administrator can act on, nothing internal.

Owns the mapping from an exception to the text an edge shows (``user_message``); it must not
log or format for a particular edge.
"""

from __future__ import annotations

from typing import Optional

from cgtwist.errors import ConfigError, StoreError, StoreUnavailable


class AdminError(Exception):
    """A refused or failed operation; ``str(e)`` is the message for the administrator."""


class ServerDown(AdminError):
    """The operation needs the running server and nothing listens on the control socket."""


def user_message(e: BaseException) -> Optional[str]:
    """The one-line message for an expected failure, or None for an internal error (which the
    edge logs with its traceback and reports without details)."""
    if isinstance(e, StoreUnavailable):
        return f"database unavailable: {e}".splitlines()[0]
    if isinstance(e, (AdminError, StoreError, ValueError, ConfigError)):
        return (str(e) or type(e).__name__).splitlines()[0]
    return None
