"""The running server's queue as an administrator sees it: list, show, hold, release, retry,
drop, bounce.

Owns the queue operations as calls of the server's control commands (``queue-*``, handled by
cgtwist.queue.admin): over the control socket from cgtwist-admin, directly in the process for
the web. It never touches the spool; every change is made by the server, so these need it
running (ServerDown otherwise).
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable, Optional

from cgtwist.admin.errors import AdminError, ServerDown

# Sends one control command: (cmd, **args) -> the reply's fields; raises ServerDown when the
# server is not running and AdminError when it refuses.
Call = Callable[..., Awaitable[dict[str, Any]]]

ID_RE = re.compile(r"^[0-9]{16}-[0-9]{1,10}-[0-9]{1,12}$")  # cgtwist.spool.format.ID_RE


class QueueAdmin:
    """Queue operations through ``call``; ``note(change)`` logs who changed what."""

    def __init__(self, call: Optional[Call], note: Callable[[str], None]) -> None:
        self._call = call
        self._note = note

    async def _send(self, cmd: str, **args: Any) -> dict[str, Any]:
        if self._call is None:
            raise ServerDown("the server is not running")
        return await self._call(cmd, **args)

    @staticmethod
    def check_id(msg_id: str) -> str:
        if not ID_RE.match(msg_id):
            raise AdminError(f"not a message id: {msg_id!r} (ids look like 1764408000123456-123-1)")
        return msg_id

    async def messages(self, **filters: Any) -> dict[str, Any]:
        """``messages`` (each with id, sender, age, held, recipients, queues), ``active``
        and ``backlog``; filters: queue, sender, recipient, min_age, max_age, held, limit."""
        return await self._send("queue-list", **{k: v for k, v in filters.items() if v is not None})

    async def queues(self) -> list[dict[str, Any]]:
        """Every logical queue with its state and counts."""
        return list((await self._send("queue-queues")).get("queues") or [])

    async def show(self, msg_id: str) -> dict[str, Any]:
        return await self._send("queue-show", id=self.check_id(msg_id))

    async def act(self, action: str, msg_id: str) -> dict[str, Any]:
        """``hold``, ``release``, ``retry``, ``drop`` or ``bounce`` one message (retry: also
        ``all``)."""
        if action not in ("hold", "release", "retry", "drop", "bounce"):
            raise AdminError(f"unknown queue action {action!r}")
        if not (action == "retry" and msg_id == "all"):
            self.check_id(msg_id)
        reply = await self._send(f"queue-{action}", id=msg_id)
        self._note(f"queue {action} {msg_id}")
        return reply
