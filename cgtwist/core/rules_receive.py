"""Server Rules at the end of DATA: ``Reject with`` and ``Discard`` answered before the 250.

Owns the receive-time half of the Server Rules (issue #14: "Reject with ... only before the
250 for Server Rules that run at receive time"). On each message the SMTP module has read, in
the server and in every SMTP worker process (each builds its own from the shared store), the
Server Rules are evaluated on the envelope and the message as received. Reject with becomes
the reply (550 5.7.1 and the rule's text, or the rule's own enhanced status), Discard a 250
with nothing stored. Every other action (headers, subject tags, redirects, replies) stays with
the queue manager's Server Rules (cgtwist.core.rules), which see the same facts after
queueing; when no rule fired here, the message's submit record says so (with the rule set's
revision) and names the rules whose outcome can differ at the enqueuer (message size, the trace
fields added after this check, the clock) and whose other conditions held here: the enqueuer
checks only those rules' size, clock or trace-field conditions, so each message is evaluated
once, not twice. Domain and Account Rules that reject still do it with a DSN. It changes, sends and
stores nothing.
"""

from __future__ import annotations

import re
from typing import Optional

from twisted.internet import defer
from zope.interface import implementer

from cgtwist.core.rules import SERVER_DONE, RulesRunner
from cgtwist.errors import MailError
from cgtwist.interfaces import DISCARD, CheckOutcome, IMessageCheck
from cgtwist.logs import Logger
from cgtwist.rules.evaluate import Outcome, evaluate
from cgtwist.rules.facts import MessageFacts
from cgtwist.rules.mark import nothing_fired
from cgtwist.rules.model import RuleSet
from cgtwist.storage.rules import SERVER
from cgtwist.types import Envelope, SessionInfo

# The actions that decide whether a message is taken at all.
DECIDING = frozenset({"Reject with", "Discard", "Stop Processing"})
_STATUS = re.compile(r"^([45])\.(\d{1,3})\.(\d{1,3})\s+(.*)$", re.S)
MAX_TEXT = 200  # characters of a rule's text in the reply


def rejection(text: str) -> MailError:
    """The SMTP reply of ``Reject with text``: 550 5.7.1 and the text, unless the text starts
    with an enhanced status (RFC 3463) of its own: ``5.7.0 ...`` keeps it (550), ``4.7.1 ...``
    makes it a temporary refusal (451)."""
    clean = " ".join(text.split())
    m = _STATUS.match(clean)
    if m:
        code = 550 if m.group(1) == "5" else 451
        status = ".".join(m.group(i) for i in (1, 2, 3))
        return MailError(code, status, m.group(4)[:MAX_TEXT] or "rejected by rules")
    return MailError(550, "5.7.1", clean[:MAX_TEXT] or "rejected by rules")


def deciding(rules: RuleSet) -> RuleSet:
    """The rules of ``rules`` that can refuse or drop a message, in the same run order."""
    return RuleSet(tuple(r for r in rules.rules if any(a.name in DECIDING for a in r.actions)))


@implementer(IMessageCheck)
class ReceptionRules:
    """``ReceptionRules(runner)``: the Server Rules of ``runner`` (its cache, its facts: routes
    and Client IPs) applied at the end of DATA. The deciding subset is worked out once per
    parsed rule set, so a rule set without Reject or Discard costs one cached look-up."""

    log = Logger()

    def __init__(self, runner: RulesRunner) -> None:
        self.runner = runner
        self._subset: tuple[Optional[RuleSet], RuleSet] = (None, RuleSet())

    def _deciding(self, rules: RuleSet) -> RuleSet:
        if self._subset[0] is not rules:
            self._subset = (rules, deciding(rules))
        return self._subset[1]

    def check_message(
        self, session: SessionInfo, envelope: Envelope, message: bytes
    ) -> defer.Deferred[CheckOutcome]:
        """Fire None (or the mark that no rule fired) to take the message, DISCARD to drop
        it, or errback the rule's refusal. With the rule set kept and nothing to look up (no
        remembered list, no route condition on a rule the message can fire), the answer is
        worked out at once: no coroutine per message."""
        if envelope.submit.get("rules") == SERVER_DONE:
            return defer.succeed(None)
        try:
            kept = self.runner.kept(SERVER, "")
            if kept is None or kept[0].list_names:
                return defer.ensureDeferred(self._check(session, envelope, message))
            rules, revision = kept
            if not self._deciding(rules).rules:
                return defer.succeed(None)  # nothing to decide here: the enqueuer runs them all
            recipients = [r.address for r in envelope.recipients]
            facts = self.runner.gather(envelope, message, recipients)
            if self.runner.asks_router(facts, [rules]):
                routed = defer.ensureDeferred(self.runner.with_routes(facts))
                return routed.addCallback(
                    lambda f: self._decide(session, envelope, rules, revision, f)
                )
        except Exception:
            return defer.fail(self._unreadable(session))
        return defer.maybeDeferred(self._decide, session, envelope, rules, revision, facts)

    async def _check(
        self, session: SessionInfo, envelope: Envelope, message: bytes
    ) -> CheckOutcome:
        try:
            rules, revision = await self.runner.revision(SERVER, "")
            if not self._deciding(rules).rules:
                return None  # nothing to decide here: the enqueuer runs them all
            recipients = [r.address for r in envelope.recipients]
            facts = await self.runner.facts(
                envelope, message, recipients, [rules], routes_when_tried=True
            )
        except Exception:
            raise self._unreadable(session) from None
        return self._decide(session, envelope, rules, revision, facts)

    def _unreadable(self, session: SessionInfo) -> MailError:
        # Never a silent pass: a rule set that cannot be read now is asked again later.
        self.log.failure(
            "rules: server rules could not run at end of DATA: peer={peer}", peer=session.peer_ip
        )
        return MailError(451, "4.3.0", "Temporary local problem, try again later")

    def _decide(
        self,
        session: SessionInfo,
        envelope: Envelope,
        rules: RuleSet,
        revision: int,
        facts: MessageFacts,
    ) -> CheckOutcome:
        outcome = evaluate(rules, facts, server=True)
        if not outcome.trace:  # no rule fired: the few the enqueuer must look at again
            return {"rules": nothing_fired(revision, self.runner.still_open(rules, facts))}
        reject = next((a for a in outcome.actions if a.name == "Reject with"), None)
        if reject is not None:
            err = rejection(reject.param)
            err.detail = f"server rule {_fired_by(outcome, 'Reject with')!r}"
            self._log(session, envelope, outcome, "Reject with", err.reply())
            raise err
        if outcome.has("Discard"):
            self._log(session, envelope, outcome, "Discard", "250, stored nothing")
            return DISCARD
        return None

    def _log(
        self, session: SessionInfo, envelope: Envelope, outcome: Outcome, action: str, reply: str
    ) -> None:
        self.log.info(
            "rules: server rule {rule!r} {action} before queueing: peer={peer} "
            "sender=<{sender}> recipients={recipients} reply={reply!r}",
            rule=_fired_by(outcome, action),
            action=action,
            peer=session.peer_ip,
            sender=envelope.sender,
            recipients=",".join(r.address for r in envelope.recipients),
            reply=reply,
        )


def _fired_by(outcome: Outcome, action: str) -> str:
    """The name of the first rule that fired with ``action``."""
    for t in outcome.trace:
        if any(a.name == action for a in t.actions):
            return t.rule.name
    return "?"
