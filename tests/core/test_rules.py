"""Tests for cgtwist.core.rules: the runner behind the queue's and LOCAL's Rules hooks.

The store, the accounts and the submission are in-memory fakes; the clock is task.Clock.
"""

from __future__ import annotations

import email
import email.policy
from typing import Any, Optional

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.core import rules as core_rules
from cgtwist.core.rules import SERVER_DONE, RulesRunner
from cgtwist.rules.text import parse_rules
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.rules import StoredRules
from cgtwist.types import Account, Envelope, Recipient

MSG = (
    b"Received: from client\r\n"
    b"Authentication-Results: mx.example.com; spf=softfail smtp.mailfrom=x@spam.example\r\n"
    b"From: Bob <bob@elsewhere.example>\r\nTo: alice@example.com\r\n"
    b"Subject: offer\r\nMessage-ID: <m1@elsewhere.example>\r\n\r\nbody\r\n"
)


class FakeRuleStore:
    def __init__(self) -> None:
        self.texts: dict[tuple[str, str], str] = {}
        self.replied: set[tuple[str, str]] = set()
        self.lists: dict[tuple[str, str], set[str]] = {}

    async def get(self, scope: str, owner: str) -> StoredRules:
        text = self.texts.get((scope, owner.lower()), "")
        return StoredRules(scope, owner, text, 1 if text else 0, 0)

    async def claim_reply(self, account: str, sender: str, interval: float) -> bool:
        key = (account, sender.lower())
        if key in self.replied:
            return False
        self.replied.add(key)
        return True

    async def remember(self, owner: str, name: str, address: str) -> None:
        self.lists.setdefault((owner, name), set()).add(address)

    async def remembered(self, owner: str, name: str) -> list[str]:
        return sorted(self.lists.get((owner, name), ()))


class FakeAccounts:
    main_domain = "example.com"

    def __init__(self) -> None:
        self.account: dict[str, Any] = {}
        self.domain: dict[str, Any] = {}

    async def get_account_settings(self, name: str, domain: str) -> dict[str, Any]:
        return dict(self.account)

    async def get_domain_settings(self, domain: str) -> dict[str, Any]:
        return dict(self.domain)


class FakeSubmission:
    def __init__(self) -> None:
        self.sent: list[tuple[Envelope, bytes]] = []

    def submit(self, envelope: Envelope, data: bytes) -> defer.Deferred[str]:
        self.sent.append((envelope, data))
        return defer.succeed(f"new-{len(self.sent)}")


def rules(*body: str) -> str:
    return "version 1\n" + "".join(body)


def rule(name: str, *lines: str, priority: int = 5) -> str:
    return f'rule "{name}"\n  priority {priority}\n' + "".join(f"  {x}\n" for x in lines)


class RunnerCase(unittest.TestCase):
    def setUp(self) -> None:
        self.store = FakeRuleStore()
        self.accounts = FakeAccounts()
        self.submission = FakeSubmission()
        self.executed: list[tuple[str, Recipient]] = []
        self.settings = SettingsHolder(Settings({}))
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.runner = RulesRunner(
            self.store,  # type: ignore[arg-type]
            self.accounts,
            self.settings,
            clock=self.clock,
            hostname="mx.example.com",
            submission=self.submission,
            execute=self.execute,
        )

    def execute(self, msg_id: str, env: Envelope, data: bytes, rcpts: list[Recipient]) -> Any:
        self.executed.append((msg_id, rcpts[0]))
        rcpts[0].state = "delivered"
        return defer.succeed(rcpts)

    def envelope(self, sender: str = "bob@elsewhere.example", *rcpts: str) -> Envelope:
        return Envelope(
            sender,
            [Recipient(r, orcpt=f"rfc822;{r}") for r in (rcpts or ("alice@example.com",))],
            {"peer": "192.0.2.1", "protocol": "ESMTP", "session": "s1.1"},
        )

    def server(self, text: str, env: Envelope, data: bytes = MSG) -> Envelope:
        self.store.texts[("server", "")] = text
        self.runner.forget()
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m1", env, data)))
        return env

    def local(
        self, text: str = "", domain: str = "", data: bytes = MSG, env: Optional[Envelope] = None
    ) -> Any:
        self.store.texts[("account", "alice@example.com")] = text
        self.store.texts[("domain", "example.com")] = domain
        self.runner.forget()
        d = defer.ensureDeferred(
            self.runner.local_rules(Account("alice", "example.com"), env or self.envelope(), data)
        )
        return self.successResultOf(d)


class RuleSetCacheTests(RunnerCase):
    def test_unchanged_text_is_not_parsed_again(self) -> None:
        """After the TTL the stored text is read again (a change made elsewhere applies), but
        a large rule set that did not change is not parsed again on the event loop."""
        parsed: list[str] = []

        def counting(text: str) -> Any:
            parsed.append(text)
            return parse_rules(text)

        self.patch(core_rules, "parse_rules", counting)
        first = rules(rule("a", "do Discard"))
        self.store.texts[("account", "alice@example.com")] = first

        def get() -> Any:
            d = defer.ensureDeferred(self.runner.rules("account", "alice@example.com"))
            return self.successResultOf(d)

        self.assertEqual([r.name for r in get().rules], ["a"])
        self.clock.advance(RulesRunner.TTL + 1)
        self.assertEqual([r.name for r in get().rules], ["a"])
        self.assertEqual(parsed, [first])
        second = rules(rule("b", "do Discard"))
        self.store.texts[("account", "alice@example.com")] = second
        self.clock.advance(RulesRunner.TTL + 1)
        self.assertEqual([r.name for r in get().rules], ["b"])
        self.assertEqual(parsed, [first, second])


class ServerRulesTests(RunnerCase):
    def test_discard_and_reject_settle_recipients(self) -> None:
        """Discard delivers nowhere (no DSN); Reject with fails each recipient with the text."""
        env = self.server(
            rules(rule("d", 'if SPF Result is "softfail"', "do Discard")), self.envelope()
        )
        self.assertEqual(env.recipients[0].state, "delivered")
        self.assertIn("discarded by server rules", env.recipients[0].detail)
        env = self.server(rules(rule("r", 'do Reject with "no spam here"')), self.envelope())
        self.assertEqual(
            (env.recipients[0].state, env.recipients[0].detail),
            ("failed", "550 5.7.1 no spam here"),
        )
        self.assertEqual(self.submission.sent, [])

    def test_tagged_message_continues_once_as_a_new_submission(self) -> None:
        """An edited message is submitted again to the same recipients (DSN parameters kept),
        marked so the Server Rules skip it; the original is settled."""
        text = rules(
            rule(
                "t",
                'if SPF Result is "softfail"',
                'do Tag Subject "[SPAM]"',
                'do Add Header "X-Spam: yes"',
            )
        )
        env = self.server(text, self.envelope())
        ((copy_env, copy),) = self.submission.sent
        self.assertIn(b"Subject: [SPAM] offer\r\n", copy)
        self.assertTrue(copy.startswith(b"X-Spam: yes\r\n"))
        self.assertEqual([r.address for r in copy_env.recipients], ["alice@example.com"])
        self.assertEqual(copy_env.recipients[0].orcpt, "rfc822;alice@example.com")
        self.assertEqual(copy_env.submit["rules"], SERVER_DONE)
        self.assertEqual(env.recipients[0].state, "delivered")
        self.assertIn("continued by server rules as new-1", env.recipients[0].detail)
        again = self.server(text, copy_env, copy)
        self.assertEqual(again.recipients[0].state, "pending")
        self.assertEqual(len(self.submission.sent), 1)

    def test_redirect_and_mirror(self) -> None:
        """Redirect replaces the recipients (sender kept); Mirror adds a copy and leaves them."""
        env = self.server(
            rules(rule("r", 'do Redirect to "quarantine@example.com"')), self.envelope()
        )
        ((copy_env, _),) = self.submission.sent
        self.assertEqual(copy_env.sender, "bob@elsewhere.example")
        self.assertEqual([r.address for r in copy_env.recipients], ["quarantine@example.com"])
        self.assertEqual(env.recipients[0].state, "delivered")
        env = self.server(rules(rule("m", 'do Mirror to "audit@example.com"')), self.envelope())
        self.assertEqual(env.recipients[0].state, "pending")
        self.assertEqual(
            [r.address for r in self.submission.sent[1][0].recipients], ["audit@example.com"]
        )

    def test_unreadable_stored_rules_change_nothing(self) -> None:
        """A stored text this version cannot parse is logged and the message goes on as is."""
        env = self.server("version 9\n", self.envelope())
        self.assertEqual(env.recipients[0].state, "pending")
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_execute_only_when_allowed(self) -> None:
        """Execute runs the program through PIPE only with rules.execute on."""
        text = rules(rule("x", 'do Execute "archive --fast"'))
        self.server(text, self.envelope())
        self.assertEqual(self.executed, [])
        self.settings.replace(Settings({"rules.execute": True}))
        self.server(text, self.envelope())
        ((_, r),) = self.executed
        self.assertEqual(r.route, "PIPE(archive --fast)")


class LocalRulesTests(RunnerCase):
    def test_decision_from_domain_then_account(self) -> None:
        """Domain Rules run first; Store in, Add Header and Tag Subject make one decision."""
        d = self.local(
            rules(rule("a", 'do Store in "Junk"', 'do Add Header "X-Acct: 1"', 'do Mark "Read"')),
            domain=rules(rule("d", 'do Tag Subject "[D]"')),
        )
        self.assertEqual(d.folder, "Junk")
        self.assertEqual(d.flags, ("\\Seen",))
        self.assertEqual(d.add_headers, ("X-Acct: 1",))
        self.assertIn(b"Subject: [D] offer", d.data)

    def test_tag_subject_edits_an_obsolete_form_subject_in_place(self) -> None:
        """'Subject : offer' (RFC 5322 §4.5.3) is the message's Subject, as the conditions
        read it: Tag Subject tags it, it does not add a second Subject field (§3.6)."""
        data = MSG.replace(b"Subject: offer", b"Subject :  offer")
        d = self.local(rules(rule("t", 'if Subject is "offer"', 'do Tag Subject "[T]"')), data=data)
        self.assertEqual(d.data.lower().count(b"\r\nsubject"), 1, d.data)
        self.assertIn(b"Subject: [T] offer\r\n", d.data)

    def test_domain_stop_processing_skips_account_rules(self) -> None:
        d = self.local(
            rules(rule("a", "do Discard")),
            domain=rules(rule("d", 'do Add Header "X-D: 1"', "do Stop Processing")),
        )
        self.assertFalse(d.discard)
        self.assertEqual(d.add_headers, ("X-D: 1",))

    def test_rules_allowed_none_and_downgrade(self) -> None:
        """RulesAllowed None: account rules do not run; a Redirect stored before a downgrade to
        Filter Only is skipped, the rest of the rule runs."""
        self.accounts.account = {"rules.allowed": "None"}
        self.assertFalse(self.local(rules(rule("a", "do Discard"))).discard)
        self.accounts.account = {}
        self.accounts.domain = {"rules.allowed": "Filter Only"}
        self.runner.forget()  # as a settings reload does (cgtwist-admin settings set)
        d = self.local(rules(rule("a", 'do Redirect to "x@y.example"', "do Discard")))
        self.assertTrue(d.discard)
        self.assertEqual(self.submission.sent, [])

    def test_loop_and_hop_limit_fail_with_546(self) -> None:
        """A message that already went through this account, or too many hops, fails 5.4.6."""
        looped = b"Delivered-To: Alice@example.com\r\n" + MSG
        self.assertTrue(
            self.local(rules(rule("a", "do Discard")), data=looped).reject.startswith("5.4.6 ")
        )
        hops = b"".join(b"Delivered-To: u%d@example.com\r\n" % i for i in range(11)) + MSG
        self.assertIn("hops", self.local(data=hops).reject)

    def test_never_redirects_back_to_an_address_that_had_it(self) -> None:
        """A redirect to an address in the hop markers fails the copy with 5.4.6 (a DSN to the
        sender) instead of sending it round again; nothing is submitted."""
        looped = b"Delivered-To: Dave@example.com\r\n" + MSG
        d = self.local(
            rules(rule("a", 'do Redirect to "dave@example.com"', "do Discard")), data=looped
        )
        self.assertEqual(d.reject, "5.4.6 mail loop: dave@example.com had this message before")
        self.assertEqual(self.submission.sent, [])

    def test_redirect_forward_carry_the_hop_marker(self) -> None:
        """Redirect keeps the envelope sender; Forward resends from the account with Resent-*."""
        self.local(rules(rule("a", 'do Redirect to "x@y.example"', 'do Forward to "z@y.example"')))
        (r_env, r_data), (f_env, f_data) = self.submission.sent
        self.assertEqual(r_env.sender, "bob@elsewhere.example")
        self.assertTrue(r_data.startswith(b"Delivered-To: alice@example.com\r\n"))
        self.assertEqual(f_env.sender, "alice@example.com")
        self.assertIn(b"Resent-From: alice@example.com\r\n", f_data)
        self.assertIn(b"Delivered-To: alice@example.com\r\n", f_data)

    def test_vacation_once_per_sender(self) -> None:
        """The first message from a sender is answered from <> with Auto-Submitted; the next
        is not (the store's claim)."""
        text = rules(rule("v", 'do Reply with "Away."'))
        self.local(text)
        self.local(text)
        ((env, data),) = self.submission.sent
        self.assertEqual(
            (env.sender, [r.address for r in env.recipients]), ("", ["bob@elsewhere.example"])
        )
        self.assertIn(b"Auto-Submitted: auto-replied", data)
        self.assertIn(b"In-Reply-To: <m1@elsewhere.example>", data)
        self.assertIn(b"Subject: Re: offer", data)

    def test_vacation_reply_shows_the_real_name(self) -> None:
        """The account's Real Name is the display name of its automatic reply's From:
        (control characters dropped, non-ASCII encoded)."""
        self.store.texts[("account", "alice@example.com")] = rules(
            rule("v", 'do Reply with "Away."')
        )
        self.store.texts[("domain", "example.com")] = ""
        self.runner.forget()
        account = Account("alice", "example.com", real_name="Alice Lidd\u00e9ll\r\nBcc: x@y")
        self.successResultOf(
            defer.ensureDeferred(self.runner.local_rules(account, self.envelope(), MSG))
        )
        ((_env, data),) = self.submission.sent
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(str(msg["From"]), '"Alice Lidd\u00e9ll Bcc: x@y" <alice@example.com>')
        self.assertNotIn(b"\r\nBcc:", data)

    def test_remember_from(self) -> None:
        self.local(rules(rule("r", "do Remember 'From' in \"Correspondents\"")))
        self.assertEqual(
            self.store.lists[("alice@example.com", "Correspondents")], {"bob@elsewhere.example"}
        )
