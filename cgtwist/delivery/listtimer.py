"""The LIST module's clock: digests, moderation timeouts and removals of bouncing subscribers.

Owns one round every ``lists.sweep_interval`` seconds on the clock it is given (never the
global reactor): for each list, send the digest and the index when ``digest_interval`` has
passed since the last, reject held posts older than ``lists.moderation_timeout`` (the poster is
told), and remove subscribers suspended for bounces ``lists.remove_after`` ago (the owner is
told). One round at a time; a failing list is logged and the others still get their turn.
"""

from __future__ import annotations

import email.utils
from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cgtwist.delivery.listagent import ListAgent
from cgtwist.lists import bounces, digest
from cgtwist.lists.model import MailingList
from cgtwist.logs import Logger
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.lists import DIGEST, HELD, ListStore

log = Logger(namespace="cgtwist.delivery.list")


class ListTimer:
    """``ListTimer(lists, agent, settings, clock)``: ``start()``, ``stop()``, ``sweep()``."""

    def __init__(
        self, lists: ListStore, agent: ListAgent, settings: SettingsHolder, clock: IReactorTime
    ) -> None:
        self.lists = lists
        self.agent = agent
        self.settings = settings
        self.clock = clock
        self._call: Any = None
        self._interval = 0.0  # the lists.sweep_interval self._call was scheduled with
        self._running: Optional[defer.Deferred[None]] = None
        self._stopped = True
        settings.subscribe(self._settings_changed)

    def start(self) -> None:
        self._stopped = False
        self._schedule()

    def _schedule(self) -> None:
        if not self._stopped:
            self._interval = float(self.settings.current.lists.sweep_interval)
            self._call = self.clock.callLater(self._interval, self._tick)

    def _settings_changed(self, settings: Settings) -> None:
        """A changed ``lists.sweep_interval`` moves the waiting round to the new interval from
        the last one, at once: an administrator who shortens an hour to a minute should not
        wait out the hour. (A round in progress schedules the next with the new value.)"""
        interval = float(settings.lists.sweep_interval)
        if self._call is None or not self._call.active() or interval == self._interval:
            return
        since = self._call.getTime() - self._interval
        self._interval = interval
        self._call.reset(max(0.0, since + interval - self.clock.seconds()))

    def _tick(self) -> None:
        self._call = None
        d = self.sweep()
        d.addErrback(lambda f: log.failure("list timer round failed", f))
        d.addBoth(lambda _: self._schedule())

    async def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._running is not None:
            await self._running

    def sweep(self) -> defer.Deferred[None]:
        """One round over every list (the test's and the timer's entry point)."""
        if self._running is not None:
            return self._running
        d = defer.Deferred.fromCoroutine(self._sweep())

        def done(result: Any) -> Any:
            self._running = None
            return result

        self._running = d
        d.addBoth(done)
        return d

    async def _sweep(self) -> None:
        for lst in await self.lists.list_lists():
            try:
                await self._one(lst)
            except Exception:
                log.failure("list timer: {list} failed", list=lst.address)

    async def _one(self, lst: MailingList) -> None:
        now = self.clock.seconds()
        if now - lst.last_digest >= lst.digest_interval:
            await self.send_digest(lst)
        timeout = self.settings.current.lists.moderation_timeout
        for held in await self.lists.kept(lst.address, HELD):
            if now - held.created >= timeout:
                await self.agent.decide(lst, held.id, False, "no moderator decided in time")
        remove_after = self.settings.current.lists.remove_after
        for sub in await self.lists.subscribers(lst.address, state="suspended"):
            if bounces.due_for_removal(sub, now, remove_after):
                await self.lists.remove_subscriber(lst.address, sub.address)
                log.info(
                    "list {list}: {who} removed after bounces", list=lst.address, who=sub.address
                )
                if lst.owner:
                    await self.agent.notify(
                        lst,
                        lst.owner,
                        f"{lst.address}: {sub.address} removed",
                        f"{sub.address} was suspended for bounces on "
                        f"{lst.address} and has now been removed.\n",
                    )

    async def send_digest(self, lst: MailingList) -> int:
        """Send the digest and index of the posts since the last one; fires with the number
        of posts (0: nothing was sent, the time is still noted). The posts are forgotten only
        once both are submitted: a refusal (disk full) keeps them for the next round, and a
        crash in between sends that issue twice rather than never."""
        kept = await self.lists.kept(lst.address, DIGEST, with_data=True)
        if not kept:
            await self.lists.finish_digest(lst.address, [])
            return 0
        number = lst.digest_number + 1
        subs = await self.lists.subscribers(lst.address)
        parsed = [digest.post_of(p.data) for p in kept]
        date = email.utils.formatdate(self.clock.seconds())
        for mode in ("digest", "index"):
            to = [s.address for s in subs if s.receives == mode]
            if not to:
                continue
            msg_id = email.utils.make_msgid(domain=self.agent.hostname)
            data = digest.build(lst, parsed, number, date, msg_id, index=mode == "index")
            await self.agent.send(to, data, lst)
            log.info(
                "list {list}: {mode} #{number} of {n} post(s) to {m} subscriber(s)",
                list=lst.address,
                mode=mode,
                number=number,
                n=len(kept),
                m=len(to),
            )
        await self.lists.finish_digest(lst.address, [p.id for p in kept])
        return len(kept)
