"""Tests for the LIST agent and its timer: posts, moderation, subscription by mail, bounces,
digests, over a real list store (SQLite) with a recording submission and a task.Clock."""

from __future__ import annotations

import email
import os
import re
import stat
from typing import Any

from twisted.internet import defer, task

from cgtwist import router
from cgtwist.delivery.listagent import ListAgent, load_secret
from cgtwist.delivery.listtimer import ListTimer
from cgtwist.lists import tokens
from cgtwist.lists.model import Subscriber
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.lists import DIGEST, HELD, ListStore
from cgtwist.types import Envelope, QueueName, Recipient
from tests.storage.dbcase import DatabaseCase, temp_dir

LIST = "dev@example.org"
QUEUE = QueueName("LIST", LIST)


class RecordingSubmission:
    """ISubmission that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        self.sent.append((envelope, data))
        return defer.succeed(f"id{len(self.sent)}")

    def to(self, address: str) -> list[email.message.Message]:
        return [
            email.message_from_bytes(d)
            for e, d in self.sent
            if address in [r.address for r in e.recipients]
        ]


def post(sender: str = "bob@example.net", subject: str = "Hello", body: str = "hi") -> bytes:
    return (
        f"From: {sender}\r\nTo: {LIST}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash(subject))}@x>\r\n\r\n{body}\r\n"
    ).encode()


class ListAgentTests(DatabaseCase):
    async def build(self, **fields: Any) -> ListAgent:
        store = await self.open_store()
        await store.add_domain("example.org")
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.lists = ListStore(store.db, now=self.clock.seconds)
        await self.lists.add_list(LIST, {"owner": "alice@example.org", **fields})
        await self.lists.put_subscribers(
            LIST,
            [
                Subscriber("bob@example.net"),
                Subscriber("carol@example.com"),
                Subscriber("dave@example.org", mode="digest"),
                Subscriber("erin@example.net", mode="index"),
                Subscriber("frank@example.net", mode="null"),
                Subscriber("mallory@example.net", mode="banned"),
                Subscriber("gone@example.net", state="suspended", suspended_at=1_000_000),
            ],
        )
        self.sub = RecordingSubmission()
        self.settings = SettingsHolder(Settings({}))
        self.archived: list[tuple[str, str, bytes]] = []

        def archive(msg_id: str, account: str, folder: str, data: bytes) -> Any:
            self.archived.append((account, folder, data))
            return defer.succeed(True)

        self.agent = ListAgent(
            self.lists, self.sub, self.settings, b"k" * 32, "mx.example.org", self.clock, archive
        )
        self.timer = ListTimer(self.lists, self.agent, self.settings, self.clock)
        return self.agent

    async def deliver(
        self, rcpt: str, data: bytes, sender: str = "bob@example.net", account: str = ""
    ) -> Recipient:
        r = Recipient(rcpt, route=str(QUEUE))
        env = Envelope(sender, [r], submit={"account": account} if account else {})
        [out] = await self.agent.deliver("m1", env, data, [r], QUEUE)
        return out

    def token_in(self, msg: email.message.Message) -> str:
        m = re.search(r"(\w+\.\d+\.[\w-]+\.[\w-]+)", msg["Subject"] + msg.get_payload())
        assert m, msg.as_string()
        return m.group(1)

    async def test_post_is_one_message_to_every_feed_subscriber(self) -> None:
        """A subscriber's post becomes one spool message for every feed subscriber (not
        digest, index, null, banned or suspended ones), from the list's bounce address, with
        List-Id and the RFC 2369 fields; it is kept for the digest and archived."""
        await self.build(archive_folder="Lists/dev", subject_tag="[dev]")
        r = await self.deliver(LIST, post())
        self.assertEqual(r.state, "delivered", r.detail)
        [(env, data)] = self.sub.sent
        self.assertEqual(env.sender, "dev-bounce@example.org")
        self.assertEqual(
            sorted(x.address for x in env.recipients), ["bob@example.net", "carol@example.com"]
        )
        msg = email.message_from_bytes(data)
        self.assertEqual(msg["List-Id"], "<dev.example.org>")
        self.assertEqual(msg["Precedence"], "list")
        self.assertEqual(msg["Subject"], "[dev] Hello")
        for name in ("List-Post", "List-Help", "List-Subscribe", "List-Unsubscribe"):
            self.assertTrue(msg[name].startswith("<mailto:"), name)
        self.assertEqual(len(await self.lists.kept(LIST, DIGEST)), 1)
        self.assertEqual(
            [(a, f) for a, f, _ in self.archived], [("alice@example.org", "Lists/dev")]
        )

    async def test_policy_size_loop_and_banned(self) -> None:
        """Non-subscribers, banned subscribers and oversized posts are refused with a DSN
        status; our own copy coming back is dropped without a second distribution."""
        await self.build(size_limit=300)
        self.assertIn("5.7.1", (await self.deliver(LIST, post("x@y.org"), "x@y.org")).detail)
        r = await self.deliver(LIST, post("mallory@example.net"), "mallory@example.net")
        self.assertEqual((r.state, r.detail[:9]), ("failed", "550 5.7.1"))
        big = post(body="x" * 400)
        self.assertEqual((await self.deliver(LIST, big)).detail[:9], "552 5.3.4")
        await self.deliver(LIST, post())
        [(_env, copy)] = self.sub.sent
        r = await self.deliver(LIST, copy)
        self.assertEqual((r.state, len(self.sub.sent)), ("delivered", 1))

    async def test_two_lists_subscribed_to_each_other_do_not_loop(self) -> None:
        """A list subscribed to another list that is subscribed back (ops@ to dev@ and dev@
        to ops@) must not send a post around for ever: each list replaces the other's
        List-Id, so the list's own hop marker (Delivered-To, kept by every list) stops the
        copy that comes back."""
        await self.build(policy="anyone")
        await self.lists.add_list("ops@example.org", {"policy": "anyone"})
        await self.lists.put_subscribers("ops@example.org", [Subscriber(LIST)])
        await self.lists.put_subscribers(LIST, [Subscriber("ops@example.org")])
        ops = QueueName("LIST", "ops@example.org")
        await self.deliver(LIST, post())
        copy_to_ops = next(d for e, d in self.sub.sent if "ops@example.org" in str(e.recipients))
        r = Recipient("ops@example.org", route=str(ops))
        env = Envelope("dev-bounce@example.org", [r])
        await self.agent.deliver("m2", env, copy_to_ops, [r], ops)
        self.assertEqual(r.state, "delivered", r.detail)
        [back] = [d for e, d in self.sub.sent[1:] if LIST in [x.address for x in e.recipients]]
        sent = len(self.sub.sent)
        again = await self.deliver(LIST, back, sender="ops-bounce@example.org")
        self.assertEqual(again.state, "delivered", again.detail)
        self.assertIn("loop", again.detail)
        self.assertEqual(len(self.sub.sent), sent)  # nothing distributed a second time

    async def test_moderation_approve_by_reply_and_reject(self) -> None:
        """A moderated list holds a post and mails the owner tokens; a reply with the approve
        token distributes it, the reject token tells the poster; a token works once."""
        await self.build(policy="moderated")
        r = await self.deliver(LIST, post("x@y.org", "first"), "x@y.org")
        self.assertEqual((r.state, r.detail), ("delivered", "250 2.0.0 held for moderation"))
        [note] = self.sub.to("alice@example.org")
        approve = re.search(r"approve (\w+\.\d+\.\S+)", note.get_payload()).group(1)
        reject_tok = re.search(r"reject (\w+\.\d+\.\S+)", note.get_payload()).group(1)
        self.sub.sent.clear()
        await self.deliver(
            "dev-request@example.org",
            post("alice@example.org", f"Re: approve {approve}"),
            "alice@example.org",
        )
        self.assertEqual(len(self.sub.to("bob@example.net")), 1)
        self.assertEqual(await self.lists.kept(LIST, HELD), [])
        await self.deliver(LIST, post("x@y.org", "second"), "x@y.org")
        [held] = await self.lists.kept(LIST, HELD)
        self.sub.sent.clear()
        self.assertTrue(await self.agent.decide(await self.lists.get_list(LIST), held.id, False))
        self.assertFalse(await self.agent.decide(await self.lists.get_list(LIST), held.id, True))
        self.assertEqual(len(self.sub.to("x@y.org")), 1)
        self.assertEqual(self.sub.to("bob@example.net"), [])
        self.assertTrue(reject_tok)

    async def test_subscribe_and_unsubscribe_by_mail_with_confirmation(self) -> None:
        """-on mails a confirmation token; the reply subscribes; -off the same way; a forged
        or missing token does nothing."""
        await self.build()
        await self.deliver(
            "dev-on@example.org", post("new@example.net", "please"), "new@example.net"
        )
        self.assertIsNone(await self.lists.get_subscriber(LIST, "new@example.net"))
        [confirm] = self.sub.to("new@example.net")
        self.assertEqual(confirm["Reply-To"], "dev-request@example.org")
        token = self.token_in(confirm)
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        await self.deliver(
            "dev-request@example.org",
            post("new@example.net", f"Re: confirm {forged}"),
            "new@example.net",
        )
        self.assertIsNone(await self.lists.get_subscriber(LIST, "new@example.net"))
        await self.deliver(
            "dev-request@example.org",
            post("new@example.net", f"Re: {confirm['Subject']}"),
            "new@example.net",
        )
        sub = await self.lists.get_subscriber(LIST, "new@example.net")
        self.assertEqual((sub.mode, sub.state), ("feed", "active"))
        self.sub.sent.clear()
        await self.deliver("dev-off@example.org", post("new@example.net", ""), "new@example.net")
        [confirm] = self.sub.to("new@example.net")
        await self.deliver(
            "dev-request@example.org",
            post("new@example.net", f"Re: {confirm['Subject']}"),
            "new@example.net",
        )
        self.assertIsNone(await self.lists.get_subscriber(LIST, "new@example.net"))

    async def test_automatic_messages_get_no_answer(self) -> None:
        """An autoresponder's message to -request (Auto-Submitted, or Precedence: bulk) gets
        no help reply: two robots must not answer each other for ever (RFC 3834 §2)."""
        await self.build()
        for extra in ("Auto-Submitted: auto-replied\r\n", "Precedence: bulk\r\n"):
            data = (
                extra + "From: robot@example.net\r\nSubject: Out of office\r\n\r\nx\r\n"
            ).encode()
            r = await self.deliver("dev-request@example.org", data, "robot@example.net")
            self.assertEqual(r.state, "delivered")
        self.assertEqual(self.sub.sent, [])
        await self.deliver(
            "dev-request@example.org", post("human@example.net", "what?"), "human@example.net"
        )
        self.assertEqual(len(self.sub.to("human@example.net")), 1)

    async def test_refused_submission_retries_without_a_second_digest_entry(self) -> None:
        """When the spool refuses the copy for now (452 4.3.1), the post stays pending and is
        not kept for the digest until its copy is out, so a retry does not digest it twice."""
        await self.build()
        refuse = [True]
        real = self.sub.submit

        def submit(envelope: Envelope, data: bytes) -> defer.Deferred[str]:
            if refuse[0]:
                from cgtwist.errors import MailError

                return defer.fail(MailError(452, "4.3.1", "Insufficient system storage"))
            return real(envelope, data)

        self.sub.submit = submit  # type: ignore[method-assign]
        r = await self.deliver(LIST, post())
        self.assertEqual((r.state, r.detail[:9]), ("pending", "452 4.3.1"))
        refuse[0] = False
        self.assertEqual((await self.deliver(LIST, post())).state, "delivered")
        self.assertEqual(len(await self.lists.kept(LIST, DIGEST)), 1)

    async def test_only_the_logged_in_owner_skips_moderation(self) -> None:
        """On a moderated list a post with the owner's address as envelope sender is held
        like any other (anyone can write that address); the owner logged in is not held."""
        await self.build(policy="moderated")
        r = await self.deliver(LIST, post("alice@example.org"), "alice@example.org")
        self.assertEqual(r.detail, "250 2.0.0 held for moderation")
        self.assertEqual(self.sub.to("bob@example.net"), [])
        r = await self.deliver(
            LIST, post("alice@example.org"), "alice@example.org", "alice@example.org"
        )
        self.assertEqual(r.detail, "250 2.0.0 accepted by list dev@example.org")
        self.assertEqual(len(self.sub.to("bob@example.net")), 1)

    async def test_a_failed_archive_copy_does_not_send_the_post_again(self) -> None:
        """The copies are out when the archive copy fails: the post is done (logged), since
        a retry would send every subscriber the post a second time."""
        await self.build(archive_folder="Lists/dev")
        self.agent.archive = lambda *a: defer.succeed(False)
        r = await self.deliver(LIST, post())
        self.assertEqual(r.state, "delivered")
        self.assertEqual(len(self.sub.sent), 1)

    async def test_bounces_suspend_then_remove(self) -> None:
        """VERP and DSN bounces count against the subscriber; at lists.bounce_limit it is
        suspended (gets nothing, the owner is told), and removed lists.remove_after later."""
        await self.build()
        self.settings.replace(Settings({"lists.bounce_limit": 2, "lists.remove_after": 3600}))
        await self.deliver(
            "dev-bounce+bob=example.net@example.org", b"Subject: x\r\n\r\nfail\r\n", ""
        )
        self.assertEqual((await self.lists.get_subscriber(LIST, "bob@example.net")).bounces, 1)
        dsn = (
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
            b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
        )
        await self.deliver("dev-bounce@example.org", dsn, "")
        bob = await self.lists.get_subscriber(LIST, "bob@example.net")
        self.assertEqual(bob.state, "suspended")
        self.assertEqual(len(self.sub.to("alice@example.org")), 1)
        self.sub.sent.clear()
        await self.deliver(LIST, post("carol@example.com"), "carol@example.com")
        [(env, _)] = self.sub.sent
        self.assertEqual([r.address for r in env.recipients], ["carol@example.com"])
        self.clock.advance(3600)
        await self.timer.sweep()
        self.assertIsNone(await self.lists.get_subscriber(LIST, "bob@example.net"))

    async def test_digest_after_the_interval(self) -> None:
        """The timer sends a multipart/digest to digest subscribers and an index to index
        subscribers once digest_interval has passed, then nothing until new posts arrive."""
        await self.build(digest_interval=3600)
        await self.deliver(LIST, post(subject="one"))
        await self.deliver(LIST, post(subject="two"))
        self.sub.sent.clear()
        self.clock.advance(3600)
        await self.timer.sweep()
        [dig] = self.sub.to("dave@example.org")
        self.assertEqual(dig.get_content_type(), "multipart/digest")
        self.assertIn("one", dig.get_payload()[0].get_payload())
        self.assertEqual(len(dig.get_payload()), 3)
        [idx] = self.sub.to("erin@example.net")
        self.assertEqual(idx.get_content_type(), "text/plain")
        self.sub.sent.clear()
        self.clock.advance(3600)
        await self.timer.sweep()
        self.assertEqual(self.sub.sent, [])

    async def test_a_refused_digest_keeps_its_posts_for_the_next_round(self) -> None:
        """When the spool refuses the digest for now (452), its posts stay for the next
        round instead of being lost; the issue number counts digests actually sent."""
        await self.build(digest_interval=3600)
        await self.deliver(LIST, post(subject="kept"))
        real = self.sub.submit

        def refuse(envelope: Envelope, data: bytes) -> defer.Deferred[str]:
            from cgtwist.errors import MailError

            return defer.fail(MailError(452, "4.3.1", "Insufficient system storage"))

        self.sub.submit = refuse  # type: ignore[method-assign]
        self.clock.advance(3600)
        await self.timer.sweep()
        self.flushLoggedErrors()
        self.sub.submit = real  # type: ignore[method-assign]
        self.sub.sent.clear()
        self.clock.advance(3600)
        await self.timer.sweep()
        [dig] = self.sub.to("dave@example.org")
        self.assertIn("kept", dig.get_payload()[0].get_payload())
        self.assertIn("Digest #1", dig["Subject"])

    async def test_timer_runs_on_its_clock_and_rejects_stale_held_posts(self) -> None:
        """Started, the timer runs every lists.sweep_interval on the given clock; a held post
        past lists.moderation_timeout is rejected and its poster told."""
        await self.build(policy="moderated")
        self.settings.replace(
            Settings({"lists.moderation_timeout": 100, "lists.sweep_interval": 10})
        )
        await self.deliver(LIST, post("x@y.org"), "x@y.org")
        self.timer.start()
        self.addCleanup(self.timer.stop)
        self.clock.advance(10)
        self.assertEqual(len(await self.lists.kept(LIST, HELD)), 1)
        for _ in range(10):
            self.clock.advance(10)
            await self.timer.sweep()
        self.assertEqual(await self.lists.kept(LIST, HELD), [])
        [note] = self.sub.to("x@y.org")
        self.assertIn("no moderator decided in time", note.get_payload())

    async def test_a_new_sweep_interval_applies_at_once(self) -> None:
        """Shortening lists.sweep_interval while the server runs takes effect without waiting
        out the round already scheduled at the old interval (an hour here): the held post is
        rejected after the new interval."""
        await self.build(policy="moderated")
        self.settings.replace(
            Settings({"lists.moderation_timeout": 5, "lists.sweep_interval": 3600})
        )
        await self.deliver(LIST, post("x@y.org"), "x@y.org")
        self.timer.start()
        self.addCleanup(self.timer.stop)
        self.clock.advance(5)
        self.settings.replace(Settings({"lists.moderation_timeout": 5, "lists.sweep_interval": 10}))
        self.clock.advance(5)
        from twisted.internet import reactor

        deadline = reactor.seconds() + 30  # type: ignore[attr-defined]
        while await self.lists.kept(LIST, HELD):
            self.assertLess(reactor.seconds(), deadline, "the round at the new interval never ran")  # type: ignore[attr-defined]
            await task.deferLater(reactor, 0.05, lambda: None)  # type: ignore[arg-type]
        [note] = self.sub.to("x@y.org")
        self.assertIn("no moderator decided in time", note.get_payload())

    async def test_personalized_copies_carry_verp_and_one_click(self) -> None:
        """A personalised list sends each subscriber its own copy from its VERP bounce
        address, with a signed RFC 8058 one-click URL and a mailto: that unsubscribes at once."""
        await self.build(personalize=True)
        self.settings.replace(Settings({"lists.unsubscribe_url": "https://mail.example.org/"}))
        await self.deliver(LIST, post())
        senders = sorted(e.sender for e, _ in self.sub.sent)
        self.assertEqual(
            senders,
            ["dev-bounce+bob=example.net@example.org", "dev-bounce+carol=example.com@example.org"],
        )
        [msg] = self.sub.to("bob@example.net")
        self.assertEqual(msg["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        url = re.search(r"<(https://[^>]+)>", msg["List-Unsubscribe"]).group(1)
        token = url.rpartition("token=")[2]
        ok = tokens.check(b"k" * 32, token, LIST, self.clock.seconds(), "unsubscribe")
        self.assertEqual(ok.subject, "bob@example.net")
        mailto = re.search(r"<mailto:([^?]+)\?subject=([^>]+)>", msg["List-Unsubscribe"])
        subject = mailto.group(2).replace("%20", " ")
        await self.deliver(mailto.group(1), post("bob@example.net", subject), "bob@example.net")
        self.assertIsNone(await self.lists.get_subscriber(LIST, "bob@example.net"))

    def test_secret_file_is_private_and_kept(self) -> None:
        """The token secret is made once, 0600, and read back the same after a restart."""
        base = temp_dir(self)
        first = load_secret(base)
        self.assertEqual(load_secret(base), first)
        mode = stat.S_IMODE(os.stat(os.path.join(base, "lists.secret")).st_mode)
        self.assertEqual(mode, 0o600)

    def test_a_secret_interrupted_while_made_does_not_stop_the_server(self) -> None:
        """A first start that fails while writing the secret (disk full, a crash) must not
        leave an empty lists.secret behind that refuses every later start."""
        base = temp_dir(self)
        real = os.write, os.writev

        def full(fd: int, data: Any) -> int:
            raise OSError(28, "No space left on device")

        os.write = os.writev = full  # type: ignore[assignment]
        try:
            with self.assertRaises(OSError):
                load_secret(base)
        finally:
            os.write, os.writev = real
        secret = load_secret(base)
        self.assertEqual(len(secret), 32)
        self.assertEqual(load_secret(base), secret)
        self.assertEqual(os.listdir(base), ["lists.secret"])


class ListRoutingTests(DatabaseCase):
    def test_router_sends_every_list_address_to_its_queue(self) -> None:
        """The Router routes a list and its role addresses to LIST(list@domain), keeping the
        address (the role); an account of the same name wins, as CommuniGate's objects do."""
        facts = router.StaticFacts(
            domains=frozenset({"example.org"}),
            accounts=frozenset({"alice@example.org"}),
            lists={"dev-on@example.org": LIST, "dev@example.org": LIST, "alice@example.org": "x"},
        )
        res = router.resolve_with(facts, router.Table(), "dev-on@example.org", "example.com")
        self.assertEqual(str(res.route), "LIST(dev@example.org)dev-on@example.org")
        res = router.resolve_with(facts, router.Table(), "alice@example.org", "example.com")
        self.assertEqual(res.route.module, "LOCAL")
        res = router.resolve_with(facts, router.Table(), "ops@example.org", "example.com")
        self.assertEqual(res.route.module, "ERROR")
