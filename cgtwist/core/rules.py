"""Running Rules: Server Rules at the enqueuer, Domain then Account Rules in LOCAL delivery.

Owns turning stored rule sets (cgtwist.storage.rules) and a message into what happens: facts
gathered (routes, Client IP, existing mailboxes), the pure evaluator called, one log line per
rule that fired and per action skipped, and the actions carried out: recipients settled or
replaced (Server Rules), a LocalDecision (LOCAL), and every new message (redirected,
forwarded, mirrored copies, automatic replies) handed to the one Submission. It never writes
a mailbox or talks to a client. Parsed rule sets are kept for ``TTL`` seconds and dropped on
every settings reload (cgtwist-admin asks for one after ``rules set``); when the TTL runs out
the stored text is read again but parsed again only if it changed (a large rule set costs
about 0.1 s of the event loop to parse).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool

from cgtwist import paths
from cgtwist.core.expiring import Expiring
from cgtwist.logs import Logger
from cgtwist.mailstore.names import MailboxNameError, folder_path
from cgtwist.message import loops
from cgtwist.rules import compose
from cgtwist.rules.evaluate import Outcome, evaluate, tried
from cgtwist.rules.facts import MessageFacts, message_facts
from cgtwist.rules.mark import Unsettled, nothing_fired
from cgtwist.rules.model import Action, RuleError, RuleSet, check_level
from cgtwist.rules.text import parse_rules
from cgtwist.settings import SettingsHolder
from cgtwist.storage.rulehistory import RuleHistory
from cgtwist.storage.rules import ACCOUNT, DOMAIN, SERVER, InvalidRules, RuleStore
from cgtwist.types import Account, Envelope, LocalDecision, Recipient

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
SERVER_DONE = "server"  # submit["rules"] of a copy Server Rules made: not ruled again
_STATUS = re.compile(r"^[45]\.\d{1,3}\.\d{1,3} ")
_SENDS = ("Redirect to", "Forward to", "Mirror to")


@dataclass(frozen=True)
class _Parsed:
    text: str  # what ``rules`` was parsed from: an unchanged text is not parsed again
    rules: RuleSet
    revision: int = 0  # the stored revision (the end-of-DATA check's mark names it)


class RulesRunner:
    """``RulesRunner(rule_store, accounts, settings, *, clock, hostname, submission,
    route=None, is_client_ip=None, mailboxes=None)``.

    ``accounts`` answers ``get_account_settings``/``get_domain_settings`` (RulesAllowed);
    ``route(address)`` fires with the Router's Route (Any/Each Route); ``is_client_ip(ip)``
    tells Client IPs; ``mailboxes(account, names)`` fires with the names among ``names`` that
    exist in the account (Existing Mailbox); ``execute(msg_id, envelope, data, [recipient])``
    runs a program as the PIPE module does (a recipient routed ``PIPE(program args)``).
    ``hostname`` is our authserv-id: only our own ``Authentication-Results`` feeds
    ``SPF Result``. ``history`` keeps what each message offered the rules, for
    ``rules replay`` (cgtwist.storage.rulehistory).
    """

    log = Logger()
    TTL = 5.0

    def __init__(
        self,
        rule_store: RuleStore,
        accounts: Any,
        settings: SettingsHolder,
        *,
        clock: IReactorTime,
        hostname: str,
        submission: Any,
        route: Optional[Callable[[str], Any]] = None,
        is_client_ip: Optional[Callable[[str], bool]] = None,
        mailboxes: Optional[Callable[[Account, list[str]], Any]] = None,
        execute: Optional[Callable[[str, Envelope, bytes, list[Recipient]], Any]] = None,
        history: Optional[RuleHistory] = None,
    ) -> None:
        self.store = rule_store
        self.accounts = accounts
        self.settings = settings
        self.clock = clock
        self.hostname = hostname
        self.submission = submission
        self.route = route
        self.is_client_ip = is_client_ip
        self.mailboxes = mailboxes
        self.execute = execute
        self.history = history
        self._rule_sets: Expiring[tuple[str, str], _Parsed] = Expiring(clock.seconds, self.TTL)
        self._allowed: Expiring[str, str] = Expiring(clock.seconds, self.TTL)
        self._unsettled: Optional[Unsettled] = None

    def forget(self) -> None:
        """Drop the parsed rule sets and RulesAllowed values (rules or settings changed)."""
        self._rule_sets.clear()
        self._allowed.clear()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds())

    async def rules(self, scope: str, owner: str) -> RuleSet:
        """The parsed rule set of ``scope``/``owner`` (empty when none); a stored text this
        version cannot read is logged and treated as empty, never a failed delivery."""
        return (await self.revision(scope, owner))[0]

    async def revision(self, scope: str, owner: str) -> tuple[RuleSet, int]:
        """``rules`` and the stored revision they were read from."""
        key = (scope, owner.lower())
        parsed = await self._rule_sets.fetch(key, lambda: self._load(key, scope, owner))
        return parsed.rules, parsed.revision

    def kept(self, scope: str, owner: str) -> Optional[tuple[RuleSet, int]]:
        """``revision`` at once when the parsed rule set is kept and fresh, else None (then
        ``await revision``): the per-message paths need no coroutine for it."""
        fresh, parsed = self._rule_sets.fresh((scope, owner.lower()))
        return (parsed.rules, parsed.revision) if fresh and parsed is not None else None

    def unsettled(self, rules: RuleSet) -> Unsettled:
        """The rules of ``rules`` whose outcome can differ between the end of DATA and the
        enqueuer (cgtwist.rules.mark), worked out once per parsed rule set."""
        if self._unsettled is None or self._unsettled.source is not rules:
            self._unsettled = Unsettled(rules)
        return self._unsettled

    def still_open(self, rules: RuleSet, facts: MessageFacts) -> list[int]:
        """The positions the end-of-DATA mark names: the unsettled rules that can still fire
        at the enqueuer (Unsettled.still_open)."""
        return self.unsettled(rules).still_open(facts)

    def _to_run(
        self, rules: RuleSet, revision: int, envelope: Envelope, data: Optional[bytes]
    ) -> RuleSet:
        """The Server Rules the enqueuer must evaluate, after the end-of-DATA mark."""
        mark, done = envelope.submit.get("rules") or "", nothing_fired(revision)
        if mark == done:
            # The end-of-DATA check ran these very rules and none fired: only those whose
            # outcome may differ now (size with our trace fields, the clock) are run again.
            return self.unsettled(rules).rules
        if mark.startswith(done + "/") and data is not None:
            # ...and it named the few of those whose other conditions held: only they can
            # fire, and only if their size, clock or trace-field conditions hold now.
            listed = mark[len(done) + 1 :]
            return self.unsettled(rules).reopened(listed, envelope.sender, data, self._now)
        return rules

    async def _load(self, key: tuple[str, str], scope: str, owner: str) -> _Parsed:
        stored = await self.store.get(scope, owner)
        last = self._rule_sets.stale(key)
        if last is not None and last.text == stored.text and last.revision == stored.revision:
            return last
        if last is not None and last.text == stored.text:
            return _Parsed(stored.text, last.rules, stored.revision)
        return _Parsed(stored.text, self._parse(scope, owner, stored.text), stored.revision)

    def _parse(self, scope: str, owner: str, text: str) -> RuleSet:
        """A stored text this version cannot read is logged and treated as empty."""
        try:
            return parse_rules(text) if text else RuleSet()
        except RuleError as e:
            self.log.error(
                "rules: stored {scope} rules {owner} do not parse ({error}); not applied",
                scope=scope,
                owner=owner,
                error=str(e),
            )
            return RuleSet()

    async def allowed(self, account: Account) -> str:
        """The account's RulesAllowed: its own, else its domain's, else the server's (kept
        like the rule sets: a burst of mail to one account asks the store once)."""
        return await self._allowed.fetch(
            account.address.lower(), lambda: self._read_allowed(account)
        )

    async def _read_allowed(self, account: Account) -> str:
        own = await self.accounts.get_account_settings(account.name, account.domain)
        if "rules.allowed" in own:
            return str(own["rules.allowed"])
        dom = await self.accounts.get_domain_settings(account.domain)
        return str(dom.get("rules.allowed", self.settings.current.rules.allowed))

    async def check_text(self, scope: str, owner: str, text: str) -> RuleSet:
        """What ``rules set`` checks before storing: the text parses, its actions fit the
        level and, for an account, its RulesAllowed. Raises InvalidRules."""
        try:
            rules = parse_rules(text)
            allowed = None
            if scope == ACCOUNT:
                name, _, domain = owner.rpartition("@")
                allowed = await self.allowed(Account(name, domain))
            check_level(rules, server=scope == SERVER, allowed=allowed)
        except RuleError as e:
            raise InvalidRules(str(e)) from None
        return rules

    # -- facts ----------------------------------------------------------------------------------
    async def facts(
        self,
        envelope: Envelope,
        data: bytes,
        recipients: list[str],
        rule_sets: list[RuleSet],
        account: Optional[Account] = None,
        *,
        size: Optional[int] = None,
        now: Optional[datetime] = None,
        routes_when_tried: bool = False,
    ) -> MessageFacts:
        """The facts of a message for ``rule_sets``; routes and mailboxes are looked up only
        when a condition asks for them. ``size`` and ``now`` (replay: a message of the
        history, of which only the header section was kept) replace the data's size and the
        clock. ``routes_when_tried``: the Router is asked only when a rule the message can
        fire (``tried``) has a route condition, for the fast path (not for an explanation,
        which shows every rule)."""
        mailboxes: list[str] = []
        names = sorted(frozenset().union(*(rs.mailbox_names for rs in rule_sets)))
        if names and account is not None and self.mailboxes is not None:
            mailboxes = list(await self.mailboxes(account, names))
        lists: dict[str, list[str]] = {}
        owner = account.address if account is not None else ""
        for rs in rule_sets:
            for name in rs.list_names:
                if name not in lists:
                    lists[name] = await self.store.remembered(owner, name)
        facts = self.gather(envelope, data, recipients, mailboxes, lists, size=size, now=now)
        if routes_when_tried:
            if not self.asks_router(facts, rule_sets):
                return facts
        elif self.route is None or not any(rs.needs_routes for rs in rule_sets):
            return facts
        return await self.with_routes(facts)

    def gather(
        self,
        envelope: Envelope,
        data: bytes,
        recipients: list[str],
        mailboxes: Iterable[str] = (),
        lists: Optional[Mapping[str, Iterable[str]]] = None,
        *,
        size: Optional[int] = None,
        now: Optional[datetime] = None,
    ) -> MessageFacts:
        """The facts of a message from what is at hand (``mailboxes`` and ``lists``: what
        ``facts`` looked up), without routes: at once. The end-of-DATA check calls it itself
        when its rules name no remembered list."""
        peer = envelope.submit.get("peer", "")
        return message_facts(
            envelope.sender,
            recipients,
            envelope.submit,
            data,
            authserv_id=self.hostname,
            now=self._now() if now is None else now,
            client_ip=bool(peer and self.is_client_ip and self.is_client_ip(peer)),
            mailboxes=mailboxes,
            lists=lists,
            size=size,
        )

    def asks_router(self, facts: MessageFacts, rule_sets: list[RuleSet]) -> bool:
        """Whether a rule ``facts`` can fire (``tried``) has a route condition: only then is
        the Router asked (``with_routes``)."""
        if self.route is None:
            return False
        return any(r.name in rs.routed for rs in rule_sets if rs.routed for r in tried(rs, facts))

    async def with_routes(self, facts: MessageFacts) -> MessageFacts:
        """``facts`` with the Router's routes of its recipients (Any/Each Route)."""
        if self.route is None:
            return facts
        found = await defer.DeferredList(
            [defer.maybeDeferred(self.route, a) for a in facts.recipients], consumeErrors=True
        )
        # No route value was read yet (the index files no rule by one): the memo stays valid.
        return replace(facts, routes=tuple(str(v) for ok, v in found if ok))

    # -- Server Rules -----------------------------------------------------------------------------
    def server_rules(
        self, msg_id: str, envelope: Envelope, data: Optional[bytes]
    ) -> defer.Deferred[None]:
        """QueueManager's hook: apply the Server Rules to a new message, before routing.

        Recipients are settled on ``envelope`` (discarded: delivered, rejected: failed, a DSN
        follows); a message the rules change (headers, subject, recipients) continues as a new
        submission marked so the Server Rules do not run on it twice. The usual message, that
        the end-of-DATA check marked and that no rule can fire on now, is decided at once
        (the rule set kept, the mark read): no coroutine, no Deferred chain.
        """
        if envelope.submit.get("rules") == SERVER_DONE:
            return defer.succeed(None)
        if self.history is not None and data is not None:
            self.history.note("server", msg_id, envelope, data)
        kept = self.kept(SERVER, "")
        if kept is None:
            return defer.ensureDeferred(self._server_rules(msg_id, envelope, data))
        rules = self._to_run(*kept, envelope, data)
        if not rules.rules:
            return defer.succeed(None)
        return defer.ensureDeferred(self._run_server(msg_id, envelope, data, rules))

    async def _server_rules(self, msg_id: str, envelope: Envelope, data: Optional[bytes]) -> None:
        rules, revision = await self.revision(SERVER, "")
        await self._run_server(
            msg_id, envelope, data, self._to_run(rules, revision, envelope, data)
        )

    async def _run_server(
        self, msg_id: str, envelope: Envelope, data: Optional[bytes], rules: RuleSet
    ) -> None:
        if not rules.rules:
            return
        if data is None:
            self.log.warn("rules: {msg_id} server rules skipped: no message data", msg_id=msg_id)
            return
        pending = [r for r in envelope.recipients if r.state == PENDING]
        if not pending:
            return
        facts = await self.facts(
            envelope, data, [r.address for r in pending], [rules], routes_when_tried=True
        )
        outcome = evaluate(rules, facts, server=True, execute=self.settings.current.rules.execute)
        self._log_outcome(msg_id, "server", outcome)
        if not outcome.actions:
            return
        await self._apply_server(msg_id, envelope, data, facts, outcome, pending)

    async def _apply_server(
        self,
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        facts: MessageFacts,
        outcome: Outcome,
        pending: list[Recipient],
    ) -> None:
        acts = outcome.actions
        edited = self._edit(data, outcome)
        copy_submit = dict(envelope.submit, rules=SERVER_DONE)
        redirect = [
            x for a in acts if a.name in ("Redirect to", "Forward to") for x in a.addresses()
        ]
        mirror = [x for a in acts if a.name == "Mirror to" for x in a.addresses()]
        reject = next((a.param for a in acts if a.name == "Reject with"), None)
        discard = outcome.has("Discard")
        settle: tuple[str, str] | None = None
        if reject is not None:
            settle = (FAILED, self._reject_detail(reject))
        elif discard:
            settle = (DELIVERED, "250 2.0.0 discarded by server rules")
        elif redirect:
            settle = (
                DELIVERED,
                f"250 2.0.0 redirected by server rules to {', '.join(redirect)[:200]}",
            )
        elif edited != data:
            keep = [Recipient(r.address, orcpt=r.orcpt, notify=r.notify) for r in pending]
            new_id = await self._submit(envelope.sender, keep, copy_submit, edited, envelope.params)
            settle = (DELIVERED, f"250 2.0.0 continued by server rules as {new_id}")
        if redirect and reject is None and not discard:
            await self._submit(
                envelope.sender, [Recipient(a) for a in redirect], copy_submit, edited
            )
        if mirror:
            await self._submit(envelope.sender, [Recipient(a) for a in mirror], copy_submit, edited)
        await self._side_effects(msg_id, "", self._postmaster(), facts, outcome, envelope, data)
        if settle is not None:
            for r in pending:
                r.state, r.detail = settle
            self.log.info(
                "rules: {msg_id} server rules settled {n} recipient(s): {detail}",
                msg_id=msg_id,
                n=len(pending),
                detail=settle[1],
            )

    def _postmaster(self) -> str:
        main = getattr(self.accounts, "main_domain", "") or self.hostname
        return f"postmaster@{main}"

    # -- Domain and Account Rules ------------------------------------------------------------------
    async def local_rules(self, account: Account, envelope: Envelope, data: bytes) -> LocalDecision:
        """LocalDelivery's hook: the domain's Rules, then the account's (CommuniGate order),
        as one LocalDecision; redirects, forwards and replies are submitted here."""
        address = account.address
        msg_id = envelope.submit.get("session", "") or "-"
        hops = loops.hops(data)
        loop = loops.refusal(address, hops, self.settings.current.rules.max_hops)
        if loop:
            self.log.warn(
                "rules: mail loop: message from <{sender}> to {account} refused: {reason}",
                sender=envelope.sender,
                account=address,
                reason=loop,
            )
            return LocalDecision(reject=loop)
        if self.history is not None:
            self.history.note("local", msg_id, envelope, data, account=address)
        domain_rules = await self.rules(DOMAIN, account.domain)
        account_rules = await self.rules(ACCOUNT, address)
        if not domain_rules.rules and not account_rules.rules:
            return LocalDecision()
        allowed = await self.allowed(account) if account_rules.rules else "None"
        facts = await self.facts(
            envelope,
            data,
            [address],
            [domain_rules, account_rules],
            account,
            routes_when_tried=True,
        )
        execute = self.settings.current.rules.execute
        first = evaluate(domain_rules, facts, server=False, execute=execute)
        self._log_outcome(msg_id, f"domain {account.domain}", first, address)
        outcomes = [first]
        if not first.has("Stop Processing") and allowed != "None":
            second = evaluate(account_rules, facts, server=False, allowed=allowed, execute=execute)
            self._log_outcome(msg_id, "account", second, address)
            outcomes.append(second)
        acts = [a for o in outcomes for a in o.actions]
        if not acts:
            return LocalDecision()
        acts, back = _without_targets(acts, hops)
        if back:  # never send a message back to an address it already went through
            self.log.warn(
                "rules: mail loop: {account} does not send the message from <{sender}> back "
                "to {targets}, which had it before",
                account=address,
                sender=envelope.sender,
                targets=", ".join(back),
            )
            if any(a.name == "Discard" for a in acts) and not any(a.name in _SENDS for a in acts):
                return LocalDecision(reject=loops.nowhere_left(back))  # kept nowhere, sent nowhere
        merged = Outcome(tuple(acts), tuple(t for o in outcomes for t in o.trace))
        await self._side_effects(
            msg_id, address, address, facts, merged, envelope, data, True, account.real_name
        )
        reject = next((a.param for a in acts if a.name == "Reject with"), None)
        folder = next((a.param for a in acts if a.name == "Store in"), "INBOX")
        headers = tuple(a.param for a in acts if a.name == "Add Header")
        tags = [a.param for a in acts if a.name == "Tag Subject"]
        return LocalDecision(
            discard=merged.has("Discard"),
            reject=(reject or "rejected by rules") if reject is not None else "",
            folder=folder,
            add_headers=headers,
            data=compose.tag_subject(data, tags) if tags else None,
            flags=tuple(dict.fromkeys(f for a in acts if a.name == "Mark" for f in a.flags())),
        )

    # -- actions that make messages ----------------------------------------------------------------
    async def _side_effects(
        self,
        msg_id: str,
        owner: str,
        account: str,
        facts: MessageFacts,
        outcome: Outcome,
        envelope: Envelope,
        data: bytes,
        local: bool = False,
        real_name: str = "",
    ) -> None:
        """Replies, remembered addresses and Execute (both levels); redirect, forward and
        mirror copies (LOCAL: the server level settles recipients instead). ``real_name``:
        the account's, shown in the From: of its automatic replies."""
        now = self._now()
        for a in outcome.actions:
            if a.name == "Remember 'From' in":
                for who in facts.addresses("From")[:10]:
                    await self.store.remember(owner or "", a.param, who)
            elif a.name in ("Reply with", "Reply to All with"):
                await self._reply(
                    msg_id, account, facts, a.param, a.name == "Reply to All with", now, real_name
                )
            elif a.name == "Execute":
                self._execute(msg_id, account, a.param, envelope, data)
            elif local and a.name in ("Redirect to", "Mirror to", "Forward to"):
                targets = [x for x in a.addresses() if x.lower() != account.lower()]
                if not targets:
                    continue
                submit = {"protocol": "RULE", "source": f"rules of {account}"}
                if a.name == "Forward to":
                    copy = compose.forwarded(data, account, targets, now, self.hostname)
                    sender = account
                else:
                    copy = compose.redirected(data, account)
                    sender = envelope.sender
                new_id = await self._submit(sender, [Recipient(x) for x in targets], submit, copy)
                self.log.info(
                    "rules: {msg_id} {action} {targets} by rules of {account} as {new_id}",
                    msg_id=msg_id,
                    action=a.name,
                    targets=", ".join(targets),
                    account=account,
                    new_id=new_id,
                )

    def _execute(
        self, msg_id: str, account: str, program: str, envelope: Envelope, data: bytes
    ) -> None:
        """Start ``program`` from the PIPE folder with the message on its input; the delivery
        goes on without waiting, the program's outcome is logged (CommuniGate's Execute
        without [wait])."""
        if self.execute is None:
            self.log.warn(
                "rules: {msg_id} Execute {program}: no PIPE module", msg_id=msg_id, program=program
            )
            return
        r = Recipient(account, route=f"PIPE({program})")
        d = defer.maybeDeferred(self.execute, msg_id, envelope, data, [r])

        def done(_: Any) -> None:
            self.log.info(
                "rules: {msg_id} Execute {program} for {account}: {state} {detail}",
                msg_id=msg_id,
                program=program,
                account=account,
                state=r.state,
                detail=r.detail,
            )

        d.addCallback(done).addErrback(
            lambda f: self.log.failure(
                "rules: {msg_id} Execute {program} failed", f, msg_id=msg_id, program=program
            )
        )

    async def _reply(
        self,
        msg_id: str,
        account: str,
        facts: MessageFacts,
        text: str,
        to_all: bool,
        now: datetime,
        real_name: str = "",
    ) -> None:
        to = compose.reply_targets(facts, account, to_all)
        if not to:
            return
        interval = float(self.settings.current.rules.reply_interval)
        if not await self.store.claim_reply(account, facts.sender, interval):
            self.log.info(
                "rules: {msg_id} no reply from {account} to {sender}: answered within {days} days",
                msg_id=msg_id,
                account=account,
                sender=facts.sender,
                days=round(interval / 86400, 1),
            )
            return
        body = compose.reply(facts, account, text, to, now, self.hostname, real_name)
        # RFC 3834 §3.3: the null reverse-path, so nothing ever answers the answer.
        new_id = await self._submit("", [Recipient(x) for x in to], {"protocol": "RULE"}, body)
        self.log.info(
            "rules: {msg_id} automatic reply from {account} to {to} as {new_id}",
            msg_id=msg_id,
            account=account,
            to=", ".join(to),
            new_id=new_id,
        )

    async def _submit(
        self,
        sender: str,
        recipients: list[Recipient],
        submit: dict[str, str],
        data: bytes,
        params: Optional[Any] = None,
    ) -> str:
        env = Envelope(sender, recipients, submit, dict(params or {}))
        return str(await self.submission.submit(env, data))

    def _edit(self, data: bytes, outcome: Outcome) -> bytes:
        headers = [a.param for a in outcome.actions if a.name == "Add Header"]
        tags = [a.param for a in outcome.actions if a.name == "Tag Subject"]
        return compose.prepend(compose.tag_subject(data, tags), headers)

    @staticmethod
    def _reject_detail(text: str) -> str:
        clean = " ".join(text.split())[:200] or "rejected by rules"
        return f"550 {clean}" if _STATUS.match(clean) else f"550 5.7.1 {clean}"

    def _log_outcome(self, msg_id: str, level: str, outcome: Outcome, account: str = "") -> None:
        for t in outcome.trace:
            if not t.fired:
                continue
            self.log.info(
                "rules: {msg_id} {scope} rule {rule!r}{for_account} fired: {actions}",
                msg_id=msg_id,
                scope=level,
                rule=t.rule.name,
                for_account=f" for {account}" if account else "",
                actions="; ".join(f"{a.name} {a.param}".strip() for a in t.actions) or "-",
            )
            for a, why in t.skipped:
                self.log.warn(
                    "rules: {msg_id} {scope} rule {rule!r}{for_account}: {action} skipped: {why}",
                    msg_id=msg_id,
                    scope=level,
                    rule=t.rule.name,
                    for_account=f" for {account}" if account else "",
                    action=a.name,
                    why=why,
                )


def _without_targets(acts: list[Action], passed: list[str]) -> tuple[list[Action], list[str]]:
    """``acts`` with the addresses the message ``passed`` taken out of Redirect/Forward/Mirror
    (``loops.never_back``; an action left with none goes), and the addresses taken out."""
    out: list[Action] = []
    removed: list[str] = []
    for a in acts:
        if a.name not in _SENDS:
            out.append(a)
            continue
        keep, back = loops.never_back(a.addresses(), passed)
        removed += back
        if keep:
            out.append(a if len(keep) == len(a.addresses()) else Action(a.name, ", ".join(keep)))
    return out, removed


def mailbox_names_present(base_dir: str, account: Account, names: list[str]) -> list[str]:
    """Blocking: which of ``names`` are folders of the account's Maildir (Existing Mailbox)."""
    inbox = paths.maildir(base_dir, account.domain, account.name)
    found = []
    for name in names:
        try:
            if name.upper() == "INBOX" or os.path.isdir(folder_path(inbox, name)):
                found.append(name)
        except (MailboxNameError, ValueError, OSError):
            continue
    return found


def existing_mailboxes(
    base_dir: str, reactor: Any, threadpool: Any
) -> Callable[[Account, list[str]], Any]:
    """The Existing Mailbox lookup for the server: on ``threadpool``, never on the reactor."""

    def lookup(account: Account, names: list[str]) -> Any:
        return deferToThreadPool(
            reactor, threadpool, mailbox_names_present, base_dir, account, names
        )

    return lookup
