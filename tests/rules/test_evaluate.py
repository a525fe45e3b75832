"""Tests for the evaluator: conditions over message facts, actions, limits and the trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.rules.evaluate import evaluate
from cgtwist.rules.facts import message_facts
from cgtwist.rules.model import Action
from cgtwist.rules.text import parse_rules
from tests.rules.test_text import rule_sets

AUTHSERV = "mx.example.com"
NOW = datetime(2026, 12, 5, 14, 30)  # a Saturday

PLAIN = (
    b"Received: from client\r\n"
    b"Authentication-Results: mx.example.com; spf=softfail smtp.mailfrom=bob@spam.example\r\n"
    b"From: Bob Sender <bob@spam.example>\r\n"
    b"To: alice@example.com, Carol <carol@example.com>\r\n"
    b"Cc: dave@other.example\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= offer\r\n"
    b"Message-ID: <1@spam.example>\r\n"
    b"\r\n"
    b"body\r\n"
)
LIST = (
    b"From: list@lists.example\r\nTo: alice@example.com\r\nList-Id: <dev.lists.example>\r\n"
    b"Precedence: list\r\nSubject: [dev] hi\r\n\r\nbody\r\n"
)


def facts(data: bytes = PLAIN, sender: str = "bob@spam.example", **kw: object):  # type: ignore[no-untyped-def]
    submit = kw.pop("submit", {"peer": "192.0.2.7", "protocol": "ESMTP", "tls": ""})
    return message_facts(
        sender,
        kw.pop("recipients", ["alice@example.com"]),  # type: ignore[arg-type]
        submit,  # type: ignore[arg-type]
        data,
        authserv_id=AUTHSERV,
        now=NOW,
        **kw,  # type: ignore[arg-type]
    )


def fired(text: str, f: object, **kw: object) -> list[str]:
    rs = parse_rules("version 1\n" + text)
    out = evaluate(rs, f, server=bool(kw.pop("server", False)), **kw)  # type: ignore[arg-type]
    return [f"{a.name} {a.param}".strip() for a in out.actions]


def one(condition: str, f: object) -> bool:
    return bool(fired(f'rule "r"\n if {condition}\n do Discard\n', f))


class ConditionTests(unittest.TestCase):
    def test_address_conditions(self) -> None:
        """Address conditions match each address of the field; 'is not' means none matches."""
        f = facts()
        self.assertTrue(one('From is "*@spam.example"', f))
        self.assertTrue(one('From in "x@y.example, *@SPAM.example"', f))
        self.assertFalse(one('From is not "bob@*"', f))
        self.assertTrue(one('To is "carol@*"', f))
        self.assertTrue(one('Any To or Cc is "dave@*"', f))
        self.assertFalse(one('Each To or Cc is "*@example.com"', f))
        self.assertTrue(one('Each To or Cc in "*@example.com, *@other.example"', f))
        self.assertTrue(one('Return-Path is "bob@spam.example"', f))
        self.assertTrue(one('Any Recipient is "alice@example.com"', f))

    def test_missing_field_meets_only_negative(self) -> None:
        """CommuniGate: with no Sender/Reply-To field the condition holds only for is not/not in."""
        f = facts()
        self.assertFalse(one('Sender is "*"', f))
        self.assertTrue(one('Sender is not "*"', f))
        self.assertTrue(one('Reply-To not in "a@b.example"', f))

    def test_undecodable_encoded_words_are_compared_as_they_came(self) -> None:
        """A Subject with broken base64 in an encoded word is matched as written, not a
        traceback that leaves the message's rules unapplied."""
        f = facts(b"Subject: =?utf-8?b?a?= sale\r\n\r\nbody\r\n")
        self.assertTrue(one('Subject is "*?b?a?= sale"', f))

    def test_text_header_size(self) -> None:
        """Subject is decoded (RFC 2047), Header Field takes 'Name: picture', sizes compare."""
        f = facts()
        self.assertTrue(one('Subject is "café*"', f))
        self.assertTrue(one('From Name is "bob*"', f))
        self.assertTrue(one('Message-ID is "<*@spam.example>"', f))
        self.assertTrue(one('Header Field is "cc: *other*"', f))
        self.assertFalse(one('Header Field is "List-Id: *"', f))
        self.assertTrue(one('Header Field is not "List-Id: *"', f))
        self.assertTrue(one('Message Size greater than "100"', f))
        self.assertFalse(one('Message Size greater than "1K"', f))
        self.assertTrue(one('Message Size less than "1K"', f))

    def test_source_security_spf(self) -> None:
        """Source, Security and the SPF result our own Authentication-Results recorded."""
        f = facts()
        self.assertTrue(one('Source is "remote"', f))
        self.assertFalse(one('Source is "trusted"', f))
        self.assertTrue(one('Source is "192.0.2.*"', f))
        self.assertTrue(one('Security is "cleartext"', f))
        self.assertTrue(one('SPF Result in "fail, softfail"', f))
        authed = facts(
            submit={
                "peer": "198.51.100.1",
                "protocol": "ESMTPSA",
                "tls": "TLSv1.3",
                "account": "bob@example.com",
            }
        )
        self.assertTrue(one('Source is "trusted"', authed))
        self.assertTrue(one('Security is "tls"', authed))
        self.assertTrue(one('Source is "client"', facts(client_ip=True)))

    def test_protection_verdict_from_the_submit_record(self) -> None:
        """The SPF result and the RBL zones the receiver put in the submit record are what
        SPF Result and RBL Listed see; without a listing, only the negative forms hold."""
        f = facts(submit={"peer": "192.0.2.1", "spf": "fail", "rbl": "zen.example,bl.test"})
        self.assertTrue(one('SPF Result is "fail"', f))
        self.assertTrue(one('RBL Listed is "*"', f))
        self.assertTrue(one('RBL Listed in "zen.*"', f))
        self.assertTrue(one('RBL Listed is "bl.test"', f))
        self.assertFalse(one('RBL Listed is "other.example"', f))
        self.assertTrue(one('RBL Listed is not "other.example"', f))
        clean = facts(submit={"peer": "192.0.2.1"})
        self.assertFalse(one('RBL Listed is "*"', clean))
        self.assertTrue(one('RBL Listed is not "*"', clean))
        self.assertTrue(one('SPF Result in "fail, softfail"', clean))  # our header's softfail

    def test_mark_sets_system_flags_and_keywords(self) -> None:
        """Mark takes CommuniGate's words, IMAP system flags and IMAP keywords."""
        a = Action("Mark", "Read, \\Flagged, Junk, $Label1")
        self.assertEqual(a.flags(), ["\\Seen", "\\Flagged", "Junk", "$Label1"])

    def test_forged_spf_result_is_ignored(self) -> None:
        """An Authentication-Results naming another server never sets the SPF result."""
        forged = PLAIN.replace(b"mx.example.com; spf=softfail", b"other.example; spf=fail")
        f = facts(forged)
        self.assertTrue(one('SPF Result is "none"', f))

    def test_human_generated(self) -> None:
        """List mail, Auto-Submitted mail and bounces are not human generated (RFC 3834)."""
        self.assertTrue(one("Human Generated", facts()))
        self.assertFalse(one("Human Generated", facts(LIST, "list-bounces@lists.example")))
        auto = b"From: a@b.example\r\nAuto-Submitted: auto-replied\r\n\r\nx"
        self.assertTrue(one("not Human Generated", facts(auto, "a@b.example")))
        self.assertTrue(one("not Human Generated", facts(b"Subject: x\r\n\r\n", "")))
        no = b"From: a@b.example\r\nAuto-Submitted: no\r\n\r\nx"
        self.assertTrue(one("Human Generated", facts(no, "a@b.example")))

    def test_remembered_lists(self) -> None:
        """``#Name`` in an in/not in list is a remembered address list, beside pictures."""
        f = facts(lists={"Friends": ["BOB@spam.example"]})
        self.assertTrue(one('From in "#Friends"', f))
        self.assertFalse(one('From not in "#Friends, x@y.example"', f))
        self.assertTrue(one('From not in "#Others"', f))
        self.assertTrue(one('To in "#Friends, carol@*"', f))

    def test_clock_routes_mailboxes(self) -> None:
        """Date, day and time come from the clock passed in; routes and mailboxes as given."""
        f = facts(routes=["LOCAL(alice@example.com)"], mailboxes=["Lists"])
        self.assertTrue(one('Current Day in "sat*, sun*"', f))
        self.assertTrue(one('Current Date is "2026-12-*"', f))
        self.assertTrue(one('Current Date greater than "2026-12-01"', f))
        self.assertTrue(one('Current Time greater than "09:00"', f))
        self.assertFalse(one('Current Time less than "09:00"', f))
        self.assertTrue(one('Any Route is "LOCAL(*)"', f))
        self.assertFalse(one('Each Route is "SMTP(*)*"', f))
        self.assertTrue(one('Existing Mailbox is "lists"', f))
        self.assertTrue(one('Existing Mailbox is not "Archive"', f))


class ActionTests(unittest.TestCase):
    RULES = """
rule "low"
  priority 1
  do Add Header "X-Low: 1"
rule "junk"
  priority 9
  if SPF Result is "softfail"
  do Tag Subject "[SPAM]"
  do Stop Processing
rule "mid"
  priority 5
  do Add Header "X-Mid: 1"
"""

    def test_priority_order_and_stop(self) -> None:
        """Higher priority first; Stop Processing ends the run; the trace shows why."""
        self.assertEqual(fired(self.RULES, facts()), ["Tag Subject [SPAM]", "Stop Processing"])
        ok = PLAIN.replace(b"spf=softfail", b"spf=pass")
        self.assertEqual(
            fired(self.RULES, facts(ok)), ["Add Header X-Mid: 1", "Add Header X-Low: 1"]
        )
        out = evaluate(
            parse_rules("version 1\n" + self.RULES), facts(ok), server=True, explain=True
        )
        junk = out.trace[0]
        self.assertFalse(junk.fired)
        self.assertFalse(junk.conditions[0].met)
        self.assertIn("pass", junk.conditions[0].seen)

    def test_first_failing_condition_ends_the_rule(self) -> None:
        """Conditions are checked in order; after a failing one, the rest are not checked."""
        rs = parse_rules(
            'version 1\nrule "r"\n if From is "x@y.example"\n if To is "*"\n do Discard\n'
        )
        out = evaluate(rs, facts(), server=False, explain=True)
        self.assertEqual(len(out.trace[0].conditions), 1)

    def test_reply_never_to_automatic_mail(self) -> None:
        """Reply with is skipped for list mail and empty return-paths, with the reason."""
        text = 'rule "vacation"\n do Reply with "I am away"\n'
        self.assertEqual(fired(text, facts()), ["Reply with I am away"])
        self.assertEqual(fired(text, facts(LIST, "list-bounces@lists.example")), [])
        out = evaluate(
            parse_rules("version 1\n" + text), facts(LIST, "x@lists.example"), server=False
        )
        self.assertIn("RFC 3834", out.skipped[0][2])

    def test_rules_allowed_after_downgrade_and_execute(self) -> None:
        """A stored Redirect is skipped when the account's RulesAllowed no longer permits it;
        Execute runs only when the administrator allows it."""
        text = 'rule "r"\n do Redirect to "x@y.example"\n do Add Header "X-Seen: 1"\n do Execute "filter"\n'
        self.assertEqual(
            fired(text, facts(), allowed="Filter Only"),
            ["Add Header X-Seen: 1"],
        )
        self.assertEqual(
            fired(text, facts(), allowed="Any", execute=True),
            ["Redirect to x@y.example", "Add Header X-Seen: 1", "Execute filter"],
        )
        out = evaluate(
            parse_rules("version 1\n" + text), facts(), server=False, allowed="No Redirect"
        )
        reasons = [why for _r, _a, why in out.skipped]
        self.assertIn("needs RulesAllowed 'Any'", reasons[0])
        self.assertIn("needs RulesAllowed 'Any'", reasons[1])
        out = evaluate(parse_rules("version 1\n" + text), facts(), server=False, allowed="Any")
        self.assertIn("rules.execute", out.skipped[0][2])

    def test_store_in_not_at_server_level(self) -> None:
        """A Store in that reached Server Rules is skipped, not run."""
        self.assertEqual(
            fired('rule "r"\n do Store in "X"\n do Discard\n', facts(), server=True), ["Discard"]
        )


class FastPathTests(unittest.TestCase):
    """Delivery evaluates without building the explanation; both must decide alike."""

    @settings(max_examples=200, deadline=None)
    @given(rule_sets(), st.sampled_from([PLAIN, LIST, b"Subject: x\r\n\r\n", b""]))
    def test_explain_and_fast_path_agree(self, rs: Any, data: bytes) -> None:
        f = facts(data, routes=["LOCAL(alice@example.com)"], mailboxes=["Lists"])
        fast = evaluate(rs, f, server=False, allowed="Any", execute=True)
        full = evaluate(rs, f, server=False, allowed="Any", execute=True, explain=True)
        self.assertEqual(fast.actions, full.actions)
        self.assertEqual([t.rule for t in fast.trace], [t.rule for t in full.trace if t.fired])
