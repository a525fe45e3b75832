"""The GROUP delivery agent: Forwarders with several targets and Groups send a copy on to each.

Owns one step: for the logical queue ``GROUP(name@domain)``, read the forwarder's or group's
current targets from the store, refuse a message that already passed through it (its
``Delivered-To:`` hop marker, RFC 9228: 5.4.6, a DSN instead of a storm) and submit one new
message, with the marker added and the envelope sender kept, to every target the message has
not passed before (cgtwist.message.loops: a group nested in one of its members does not send
the members' copies back). The copy goes
through the queue like any message (Router, logical queues, retries); Server Rules already ran
on the original, so the copy is marked not to be ruled again. It never delivers to a mailbox
and never talks to a client.
"""

from __future__ import annotations

from typing import Optional, Protocol

from twisted.internet import defer
from zope.interface import implementer

from cgtwist.delivery import agent
from cgtwist.errors import MailError
from cgtwist.interfaces import IDeliveryAgent, ISubmission
from cgtwist.logs import Logger
from cgtwist.message import loops
from cgtwist.router import Group
from cgtwist.types import Envelope, QueueName, Recipient

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
SERVER_RULES_DONE = "server"  # submit["rules"] of a copy (cgtwist.core.rules.SERVER_DONE)


class IGroupSource(Protocol):
    """Where forwarders and groups are kept (the AccountStore)."""

    def resolve_group(self, name: str, domain: str) -> defer.Deferred[Optional[Group]]:
        """Fire with the Group named ``name@domain`` or None."""


@implementer(IDeliveryAgent)
class GroupDelivery(agent.DeliveryAgent):
    """IDeliveryAgent for module "GROUP" over ``groups`` and ``submission`` (ISubmission)."""

    module = "GROUP"
    log = Logger()

    def __init__(self, groups: IGroupSource, submission: ISubmission) -> None:
        self._groups = groups
        self._submission = submission

    async def attempt(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName],
    ) -> list[Recipient]:
        address = queue.queue if queue is not None else ""
        name, _, domain = address.rpartition("@")
        try:
            group = await self._groups.resolve_group(name, domain)
        except Exception as e:
            self.log.failure(
                "group: {msg_id} {group}: store lookup failed", msg_id=msg_id, group=address
            )
            return agent.settle(
                recipients, PENDING, f"4.3.0 temporary local problem ({type(e).__name__})"
            )
        if group is None:
            return agent.settle(
                recipients, FAILED, f"5.1.1 <{address}>: no such forwarder or group"
            )
        passed = loops.hops(data)
        loop = loops.refusal(address, passed, done="expanded by")
        if loop:
            self.log.warn(
                "group: {msg_id} mail loop: message from <{sender}> passed {group} before",
                msg_id=msg_id,
                sender=envelope.sender,
                group=address,
            )
            return agent.settle(recipients, FAILED, loop)
        targets, back = loops.never_back(group.targets, passed)
        if back:  # a member that had it (a group nested in its member) would refuse it
            self.log.info(
                "group: {msg_id} {group} does not send the message from <{sender}> back to "
                "{targets}, which had it before",
                msg_id=msg_id,
                group=address,
                sender=envelope.sender,
                targets=", ".join(back),
            )
            if not targets:
                return agent.settle(recipients, FAILED, loops.nowhere_left(back))
        copy = loops.marked(data, address)
        submit = {"protocol": "GROUP", "group": address, "rules": SERVER_RULES_DONE}
        params = {k: v for k, v in envelope.params.items() if k in ("BODY", "SMTPUTF8")}
        new = Envelope(envelope.sender, [Recipient(t) for t in targets], submit, params)
        try:
            new_id = await self._submission.submit(new, copy)
        except MailError as e:
            state = PENDING if e.temporary else FAILED
            return agent.settle(recipients, state, f"{e.enhanced} {e.text}")
        except Exception as e:
            self.log.failure(
                "group: {msg_id} {group}: submission failed", msg_id=msg_id, group=address
            )
            return agent.settle(
                recipients, PENDING, f"4.3.0 temporary local problem ({type(e).__name__})"
            )
        self.log.info(
            "group: {msg_id} {kind} {group} sent on as {new_id} to {n} address(es)",
            msg_id=msg_id,
            kind=group.kind,
            group=address,
            new_id=new_id,
            n=len(targets),
        )
        return agent.settle(
            recipients, DELIVERED, f"2.1.5 sent on as {new_id} to {len(targets)} address(es)"
        )
