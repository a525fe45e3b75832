"""Tests for cgtwist.core.rules_receive: the Server Rules that answer before the 250.

The rule store and accounts are the in-memory fakes of tests/core/test_rules.py; the clock is
task.Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from cgtwist.core.rules import RulesRunner
from cgtwist.core.rules_receive import ReceptionRules, deciding, rejection
from cgtwist.errors import MailError
from cgtwist.interfaces import DISCARD
from cgtwist.rules.text import parse_rules
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.types import Envelope, Recipient, Route, SessionInfo
from tests.core.test_rules import MSG, FakeAccounts, FakeRuleStore, FakeSubmission, rule, rules

# The mark of a message no Server Rule fired on (the fake store's revision is 1), and none
# of whose rules can fire at the enqueuer.
NONE_FIRED = {"rules": "none-fired@1/"}


class ReceptionCase(unittest.TestCase):
    def setUp(self) -> None:
        self.store = FakeRuleStore()
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.routed: list[str] = []
        self.submission = FakeSubmission()
        self.runner = RulesRunner(
            self.store,  # type: ignore[arg-type]
            FakeAccounts(),
            SettingsHolder(Settings({})),
            clock=self.clock,
            hostname="mx.example.com",
            submission=self.submission,
            route=self.route,
        )
        self.check = ReceptionRules(self.runner)
        self.session = SessionInfo("s1", "192.0.2.1", 40000, "127.0.0.1", 25)

    def route(self, address: str) -> Any:
        self.routed.append(address)
        module = "SMTP" if address.endswith("@remote.example") else "LOCAL"
        return defer.succeed(Route(module, address.rpartition("@")[2], address))

    def outcome(self, text: str, env: Envelope | None = None, data: bytes = MSG) -> Any:
        self.store.texts[("server", "")] = text
        self.runner.forget()
        env = env or Envelope(
            "x@spam.example",
            [Recipient("alice@example.com")],
            {"peer": "192.0.2.1", "protocol": "ESMTP", "spf": "softfail"},
        )
        return self.check.check_message(self.session, env, data)

    def test_reject_with_is_the_reply(self) -> None:
        """A Reject with rule refuses the message with 550 5.7.1 and the rule's text."""
        d = self.outcome(
            rules(rule("No spam", 'if Subject is "offer"', 'do Reject with "go away"'))
        )
        err = self.failureResultOf(d, MailError).value
        self.assertEqual(err.reply(), "550 5.7.1 go away")

    def test_rule_text_with_status_keeps_it(self) -> None:
        """A text that starts with an enhanced status keeps it; 4.x.y is a temporary refusal."""
        self.assertEqual(rejection("5.7.0 policy says no").reply(), "550 5.7.0 policy says no")
        self.assertEqual(rejection("4.7.1 later please").reply(), "451 4.7.1 later please")
        self.assertEqual(rejection("  ").reply(), "550 5.7.1 rejected by rules")

    def test_discard_answers_discard(self) -> None:
        d = self.outcome(rules(rule("Drop", 'if SPF Result is "softfail"', "do Discard")))
        self.assertEqual(self.successResultOf(d), DISCARD)

    def test_no_deciding_rule_takes_the_message(self) -> None:
        """Rules that only edit (headers, subject) are left to the queue; nothing is looked
        up for them at the end of DATA."""
        d = self.outcome(rules(rule("Tag", 'if Any Route is "LOCAL(*)"', 'do Tag Subject "[x]"')))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.routed, [])

    def test_stop_processing_above_shields_a_lower_reject(self) -> None:
        text = rules(
            rule("Friends", 'if From is "*@elsewhere.example"', "do Stop Processing", priority=9),
            rule("No offers", 'if Subject is "offer"', 'do Reject with "no"', priority=5),
        )
        self.assertIsNone(self.successResultOf(self.outcome(text)))

    def test_route_conditions_work_at_end_of_data(self) -> None:
        """Conditions on the Router's answer are evaluated before the 250 too."""
        text = rules(rule("No relay", 'if Any Route is "SMTP(*)*"', 'do Reject with "no relay"'))
        env = Envelope("a@b.example", [Recipient("bob@remote.example")], {"peer": "192.0.2.1"})
        err = self.failureResultOf(self.outcome(text, env), MailError).value
        self.assertEqual(err.code, 550)
        self.assertEqual(self.routed, ["bob@remote.example"])
        local = Envelope("a@b.example", [Recipient("carol@example.com")], {"peer": "192.0.2.1"})
        self.assertEqual(self.successResultOf(self.outcome(text, local)), NONE_FIRED)

    def test_the_router_is_asked_only_for_a_rule_the_message_can_fire(self) -> None:
        """A route condition behind a sender condition: the Router is asked only for mail
        from that sender (the index rules the others out first), and the rule still works."""
        text = rules(
            rule(
                "No relay for outbound",
                'if From is "*@outbound.example"',
                'if Any Route is "SMTP(*)*"',
                'do Reject with "no relay"',
            )
        )
        env = Envelope("a@b.example", [Recipient("bob@remote.example")], {"peer": "192.0.2.1"})
        self.assertEqual(self.successResultOf(self.outcome(text, env)), NONE_FIRED)
        self.assertEqual(self.routed, [])
        outbound = MSG.replace(b"bob@elsewhere.example", b"bob@outbound.example")
        err = self.failureResultOf(self.outcome(text, env, outbound), MailError).value
        self.assertEqual(err.code, 550)
        self.assertEqual(self.routed, ["bob@remote.example"])

    def test_a_route_condition_keeps_an_unsettled_rule_open(self) -> None:
        """The mark never leaves out a rule for a route condition the end of DATA did not ask
        the Router about: the enqueuer, which does, decides."""
        text = rules(
            rule(
                "Received via relay",
                'if Header Field is "Received: *relay*"',
                'if Any Route is "SMTP(*)*"',
                'do Add Header "X-Relayed: yes"',
            ),
            rule("No offers", 'if Subject is "bargain"', 'do Reject with "no"'),
        )
        env = Envelope("a@b.example", [Recipient("bob@remote.example")], {"peer": "192.0.2.1"})
        self.assertEqual(self.successResultOf(self.outcome(text, env)), {"rules": "none-fired@1/0"})
        self.assertEqual(self.routed, [])
        relayed = b"Received: from relay.example\r\n" + MSG
        env = Envelope(
            "a@b.example", [Recipient("bob@remote.example")], {"rules": "none-fired@1/0"}
        )
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m1", env, relayed)))
        self.assertEqual(self.routed, ["bob@remote.example"])
        self.assertIn(b"X-Relayed: yes", self.submission.sent[-1][1])

    def test_rbl_listed_from_the_submit_record(self) -> None:
        """The DNSBL zones the receiver recorded feed the RBL Listed condition."""
        text = rules(rule("RBL", 'if RBL Listed in "zen.example, bl.*"', 'do Reject with "listed"'))
        listed = Envelope(
            "a@b.example", [Recipient("alice@example.com")], {"rbl": "other.example,bl.test"}
        )
        self.failureResultOf(self.outcome(text, listed), MailError)
        clean = Envelope("a@b.example", [Recipient("alice@example.com")], {})
        self.assertEqual(self.successResultOf(self.outcome(text, clean)), NONE_FIRED)

    def test_unreadable_rules_are_a_temporary_refusal(self) -> None:
        """A store that cannot answer is a 451, never a silent pass."""

        async def broken(scope: str, owner: str) -> Any:
            raise OSError("database locked")

        self.store.get = broken  # type: ignore[method-assign]
        err = self.failureResultOf(self.outcome(""), MailError).value
        self.assertEqual(err.code, 451)
        self.flushLoggedErrors(OSError)

    def test_deciding_subset_keeps_the_run_order(self) -> None:
        rs = parse_rules(
            rules(
                rule("a", 'do Add Header "X-A: 1"', priority=9),
                rule("b", "do Discard", priority=3),
                rule("c", 'do Reject with "x"', priority=7),
                rule("d", "do Stop Processing", priority=3),
            )
        )
        self.assertEqual([r.name for r in deciding(rs).ordered()], ["c", "b", "d"])

    def test_nothing_fired_marks_the_message_and_the_enqueuer_runs_only_unsettled_rules(
        self,
    ) -> None:
        """When no rule fired at the end of DATA the submit record says so, with the rule
        set's revision; the enqueuer then runs only the rules whose outcome can differ there
        (Message Size, the fields added after the check, the clock), once per message."""
        text = rules(
            rule("Tag big", 'if Message Size greater than "1K"', 'do Tag Subject "[big]"'),
            rule("Tag offers", 'if Subject is "bargain*"', 'do Tag Subject "[offer]"'),
            rule("No spam", 'if From is "*@spam.example"', 'do Reject with "no"'),
        )
        mark = self.successResultOf(self.outcome(text))
        self.assertEqual(mark, {"rules": "none-fired@1/0"})
        unsettled = self.runner.unsettled(parse_rules(text))
        self.assertEqual([r.name for r in unsettled.ordered], ["Tag big"])
        seen: list[str] = []
        self.runner.facts = self.counting(self.runner.facts, seen)  # type: ignore[method-assign]
        env = Envelope(
            "x@elsewhere.example", [Recipient("alice@example.com")], {"peer": "192.0.2.1", **mark}
        )
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m1", env, MSG)))
        self.assertEqual(seen, [])  # its size was checked alone: no facts gathered
        big = MSG + b"x" * 2000
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m1", env, big)))
        self.assertEqual(seen, ["Tag big"])  # only the unsettled rule was looked at
        self.assertIn(b"Subject: [big] offer", self.submission.sent[-1][1])
        seen.clear()
        stale = Envelope(
            "x@elsewhere.example",
            [Recipient("alice@example.com")],
            {"peer": "192.0.2.1", "rules": "none-fired@0"},
        )
        seen.clear()
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m2", stale, MSG)))
        self.assertEqual(seen, ["Tag big", "Tag offers", "No spam"])  # another revision: all

    def test_the_mark_names_only_the_unsettled_rules_that_can_still_fire(self) -> None:
        """A rule with a size condition whose other conditions failed at the end of DATA
        is not in the mark: the enqueuer looks at no rule for that message, however large
        it has grown; a mark naming a rule that is gone (another parse) means all of them."""
        text = rules(
            rule(
                "Big spam",
                'if From is "*@spam.example"',
                'if Message Size greater than "1K"',
                'do Tag Subject "[big spam]"',
            ),
            rule("Huge", 'if Message Size greater than "100M"', 'do Reject with "no"'),
        )
        mark = self.successResultOf(self.outcome(text, data=MSG + b"x" * 2000))
        self.assertEqual(mark, {"rules": "none-fired@1/1"})  # From is x@elsewhere: not 0
        seen: list[str] = []
        self.runner.facts = self.counting(self.runner.facts, seen)  # type: ignore[method-assign]
        env = Envelope("x@elsewhere.example", [Recipient("a@example.com")], mark)
        big = MSG + b"x" * 2000
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m1", env, big)))
        self.assertEqual((seen, self.submission.sent), ([], []))
        odd = Envelope(
            "x@elsewhere.example", [Recipient("a@example.com")], {"rules": "none-fired@1/9"}
        )
        self.successResultOf(defer.ensureDeferred(self.runner.server_rules("m2", odd, big)))
        self.assertEqual(seen, ["Big spam", "Huge"])

    @staticmethod
    def counting(facts: Any, seen: list[str]) -> Any:
        """Wrap RulesRunner.facts to note the rules each evaluation is given."""

        async def wrapped(
            envelope: Envelope, data: bytes, recipients: Any, rule_sets: Any, *a: Any, **kw: Any
        ) -> Any:
            seen.extend(r.name for rs in rule_sets for r in rs.rules)
            return await facts(envelope, data, recipients, rule_sets, *a, **kw)

        return wrapped
