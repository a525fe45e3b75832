"""The GROUP agent: a Group or a Forwarder with several targets sends one copy on to each,
with its hop marker; a loop fails 5.4.6; a queue that is full is retried."""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.trial import unittest

from cgtwist.delivery.group import GroupDelivery
from cgtwist.errors import MailError
from cgtwist.router import Group
from cgtwist.types import Envelope, QueueName, Recipient

MESSAGE = b"From: a@far.dom\r\nSubject: hi\r\n\r\nbody\r\n"


class Groups:
    def __init__(self) -> None:
        self.groups = {"team@example.com": Group("group", ("alice@example.com", "x@far.dom"))}

    def resolve_group(self, name: str, domain: str) -> defer.Deferred[Optional[Group]]:
        return defer.succeed(self.groups.get(f"{name}@{domain}"))


class Submission:
    def __init__(self) -> None:
        self.sent: list[tuple[Envelope, bytes]] = []
        self.error: Optional[Exception] = None

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        if self.error is not None:
            return defer.fail(self.error)
        self.sent.append((envelope, data))
        return defer.succeed(f"id{len(self.sent)}")


class GroupDeliveryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.submission = Submission()
        self.agent = GroupDelivery(Groups(), self.submission)

    def deliver(self, address: str = "team@example.com", data: bytes = MESSAGE) -> Recipient:
        rcpt = Recipient(address, route=f"GROUP({address})")
        env = Envelope("a@far.dom", [rcpt], {"protocol": "SMTP"}, {"BODY": "8BITMIME"})
        result = self.successResultOf(
            self.agent.deliver("m1", env, data, [rcpt], QueueName("GROUP", address))
        )
        return result[0]

    def test_one_copy_to_every_member_with_the_hop_marker(self) -> None:
        r = self.deliver()
        self.assertEqual(
            (r.state, r.detail), ("delivered", "2.1.5 sent on as id1 to 2 address(es)")
        )
        env, data = self.submission.sent[0]
        self.assertEqual(env.sender, "a@far.dom")
        self.assertEqual([x.address for x in env.recipients], ["alice@example.com", "x@far.dom"])
        self.assertEqual(env.submit["rules"], "server")
        self.assertEqual(env.params, {"BODY": "8BITMIME"})
        self.assertTrue(data.startswith(b"Delivered-To: team@example.com\r\n"))

    def test_a_message_that_passed_before_is_a_loop(self) -> None:
        r = self.deliver(data=b"Delivered-To: team@example.com\r\n" + MESSAGE)
        self.assertEqual(r.state, "failed")
        self.assertTrue(r.detail.startswith("5.4.6"), r.detail)
        self.assertEqual(self.submission.sent, [])

    def test_a_removed_group_fails_and_a_full_queue_retries(self) -> None:
        self.assertEqual(self.deliver("gone@example.com").state, "failed")
        self.submission.error = MailError(452, "4.3.1", "Insufficient system storage")
        r = self.deliver()
        self.assertEqual((r.state, r.detail), ("pending", "4.3.1 Insufficient system storage"))

    def test_a_nested_group_does_not_send_back_to_its_parent(self) -> None:
        """Groups that name each other (``all`` holds ``staff``, ``staff`` holds ``all``) give
        every member one copy and the sender no loop DSN: ``staff`` does not send the copy
        back to ``all``, which had it (and would fail it with 5.4.6)."""
        r = self.deliver(data=b"Delivered-To: alice@example.com\r\n" + MESSAGE)
        self.assertEqual(r.state, "delivered")
        env, _data = self.submission.sent[0]
        self.assertEqual([x.address for x in env.recipients], ["x@far.dom"])

    def test_nothing_left_to_send_to_is_a_loop(self) -> None:
        r = self.deliver(
            data=b"Delivered-To: x@far.dom\r\nDelivered-To: Alice@example.com\r\n" + MESSAGE
        )
        self.assertEqual(r.state, "failed")
        self.assertIn("5.4.6", r.detail)
        self.assertEqual(self.submission.sent, [])
