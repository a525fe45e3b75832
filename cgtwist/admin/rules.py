"""Server, Domain and Account Rules as an administrator manages them: pick a rule set, show,
check, store, delete, and explain what the rules would do with a message.

Owns the Rules capabilities once, for cgtwist-admin and the web alike: a rule set is named by
its scope (the server, a domain, an account that must exist), checked as the server would run
it (cgtwist.core.rules: level and RulesAllowed) before it is stored (cgtwist.storage.rules), a
change tells the server, and ``explain`` runs the Server Rules and then the recipient's Domain
and Account Rules on a message without delivering or remembering anything; ``replay`` runs the
current and a proposed rule set over the delivery history (cgtwist.storage.rulehistory) the
caller read. It must not read files, parse arguments or print.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Iterable, Optional, Union

from twisted.internet.interfaces import IReactorTime

from cgtwist.address import parse_path
from cgtwist.addresslist import AddressList, AddressListError
from cgtwist.admin.errors import AdminError
from cgtwist.core.auth import parse_login
from cgtwist.core.routing import Routing
from cgtwist.core.rules import RulesRunner
from cgtwist.errors import MailError
from cgtwist.message.headers import decoded
from cgtwist.rules.evaluate import Outcome, evaluate
from cgtwist.rules.facts import parse_headers
from cgtwist.rules.model import RuleSet
from cgtwist.rules.text import format_action
from cgtwist.settings import Settings, SettingsHolder
from cgtwist.storage.rulehistory import Delivered
from cgtwist.storage.rules import ACCOUNT, DOMAIN, SERVER, StoredRules
from cgtwist.storage.rules import RuleStore as RuleTable
from cgtwist.types import Account, Envelope, Recipient


def _check_path(text: str, kind: str, what: str) -> None:
    """An envelope address as the SMTP module would take it (RFC 5321 §4.1.2), or an
    AdminError naming what is wrong with it."""
    try:
        parse_path(f"<{text}>", kind)
    except MailError as e:
        raise AdminError(f"not a {what} address: {text!r} ({e.text})") from None


# Which of the named folders an account's Maildir has (the Existing Mailbox condition).
Mailboxes = Callable[[Account, list[str]], Any]


@dataclass(frozen=True)
class Scope:
    """One rule set: ``scope`` (server, domain, account), its ``owner`` and how to name it."""

    scope: str
    owner: str
    what: str  # "the Domain Rules of example.com", for messages


@dataclass(frozen=True)
class Section:
    """One rule set's part of an explanation: None outcome = not run (``note`` says why)."""

    title: str
    outcome: Optional[Outcome]
    note: str = ""


@dataclass
class Explanation:
    """What ``explain`` found, in order: sections and plain lines (the route, why a rule set
    was not applied), the actions that would run, and the Reply interval when one replies."""

    steps: list[Union[Section, str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    reply_days: Optional[float] = None


class RulesAdmin:
    """The rule sets of one store; ``change(what, text)`` logs and tells the server."""

    def __init__(
        self,
        store: Any,
        main_domain: str,
        node: str,
        change: Callable[[str, str], Awaitable[Any]],
        clock: Optional[IReactorTime],
        hostname: str,
        mailboxes: Optional[Mailboxes],
    ) -> None:
        self.store = store
        self.main_domain = main_domain
        self.node = node
        self._change = change
        self._clock = clock
        self._hostname = hostname
        self._mailboxes = mailboxes

    async def scope(self, domain: Optional[str] = None, account: Optional[str] = None) -> Scope:
        """The rule set of ``domain`` or ``account`` (which must exist), else the server's."""
        if domain:
            d = domain.strip().lower()
            if await self.store.get_domain(d) is None:
                raise AdminError(f"no domain {d}")
            return Scope(DOMAIN, d, f"the Domain Rules of {d}")
        if account:
            name, d = parse_login(account, self.main_domain)
            if await self.store.get_account(name, d) is None:
                raise AdminError(f"no account {name}@{d}")
            return Scope(ACCOUNT, f"{name}@{d}".lower(), f"the Account Rules of {name}@{d}")
        return Scope(SERVER, "", "the Server Rules")

    async def runner(self) -> RulesRunner:
        """A RulesRunner over the stored settings, as the server would build it."""
        if self._clock is None:
            raise AdminError("internal: Rules need a clock")
        settings = SettingsHolder(Settings(await self.store.get_settings()))
        try:
            client_list = AddressList.parse(settings.current.clients.ips)
        except AddressListError:
            client_list = AddressList()
        return RulesRunner(
            RuleTable(self.store.db, self.node),
            self.store,
            settings,
            clock=self._clock,
            hostname=self._hostname,
            submission=None,
            route=Routing(self.store, settings, self.main_domain).route,
            is_client_ip=client_list.contains,
            mailboxes=self._mailboxes,
        )

    async def get(self, scope: Scope) -> StoredRules:
        """The stored text exactly as set, with its revision (empty text: none set)."""
        return await RuleTable(self.store.db, self.node).get(scope.scope, scope.owner)

    async def check(self, scope: Scope, text: str) -> RuleSet:
        """``text`` as ``scope`` would run it (InvalidRules says why not, ``line N: ...``)."""
        return await (await self.runner()).check_text(scope.scope, scope.owner, text)

    async def set(
        self, scope: Scope, text: str, expect: Optional[int] = None
    ) -> tuple[RuleSet, int]:
        """Check and store ``text``; ``expect``: refuse (RulesConflict) unless the stored
        revision is still that one. Returns the rules and the new revision."""
        runner = await self.runner()
        rules = await runner.check_text(scope.scope, scope.owner, text)
        revision = await runner.store.set(scope.scope, scope.owner, text, expect=expect)
        await self._change(
            "rules", f"{scope.what} set: {len(rules.rules)} rule(s), revision {revision}"
        )
        return rules, revision

    async def delete(self, scope: Scope) -> None:
        if not await RuleTable(self.store.db, self.node).delete(scope.scope, scope.owner):
            raise AdminError(f"{scope.what}: none set")
        await self._change("rules", f"{scope.what} removed")

    async def explain(
        self, data: bytes, to: str, sender: str = "", ip: str = "", auth: bool = False
    ) -> Explanation:
        """Run the Server Rules, then the recipient's Domain and Account Rules, on ``data``
        as if it came from ``sender`` (at ``ip``, authenticated with ``auth``) to ``to``;
        every rule, each condition's outcome and the actions. Delivers nothing."""
        _check_path(to, "rcpt", "recipient")
        if sender:
            _check_path(sender, "mail", "sender")
        if ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise AdminError(f"not an IP address: {ip!r}") from None
        runner = await self.runner()
        submit = {
            "peer": ip,
            "protocol": "ESMTPA" if auth else "ESMTP",
            "account": sender if auth and sender else "",
            "tls": "",
        }
        envelope = Envelope(sender, [Recipient(to)], submit)
        execute = runner.settings.current.rules.execute
        found = Explanation()
        server_rules = await runner.rules(SERVER, "")
        facts = await runner.facts(envelope, data, [to], [server_rules])
        if server_rules.rules:
            out = evaluate(server_rules, facts, server=True, execute=execute, explain=True)
            found.steps.append(Section("Server Rules", out))
            found.actions += [f"server: {a.name} {a.param}".strip() for a in out.actions]
        else:
            found.steps.append(Section("Server Rules", None))
        try:
            route = await runner.route(to) if runner.route else None
        except MailError as e:
            found.steps.append(f"route of {to}: {e.reply()}")
            route = None
        if route is not None:
            found.steps.append(f"route of {to}: {route}")
        if route is None or route.module != "LOCAL":
            found.steps.append("Domain and Account Rules: not applied (not delivered by LOCAL)")
        else:
            await self._explain_local(runner, found, envelope, data, route.queue, execute)
        if any("Reply" in a for a in found.actions):
            found.reply_days = round(float(runner.settings.current.rules.reply_interval) / 86400, 1)
        return found

    async def replay(
        self, scope: Scope, records: Iterable[Delivered], proposed: Optional[str] = None
    ) -> Replay:
        """``scope``'s rule set, and ``proposed`` when given, over the delivery history
        ``records`` (replay_history)."""
        return await replay_history(self, scope, records, proposed)

    async def _explain_local(
        self,
        runner: RulesRunner,
        found: Explanation,
        envelope: Envelope,
        data: bytes,
        address: str,
        execute: Any,
    ) -> None:
        """The Domain Rules, then (unless they stop or RulesAllowed forbids) the Account
        Rules of the account LOCAL delivers to."""
        name, _, domain = address.rpartition("@")
        account = Account(name, domain)
        dom = await runner.rules(DOMAIN, domain)
        acct = await runner.rules(ACCOUNT, account.address)
        allowed = await runner.allowed(account)
        facts = await runner.facts(envelope, data, [account.address], [dom, acct], account)
        first = None
        if dom.rules:
            first = evaluate(dom, facts, server=False, execute=execute, explain=True)
        found.steps.append(Section(f"Domain Rules of {domain}", first))
        if first is not None:
            found.actions += [f"domain: {a.name} {a.param}".strip() for a in first.actions]
        title = f"Account Rules of {account.address}"
        if first is not None and first.has("Stop Processing"):
            found.steps.append(f"{title}: not reached (Stop Processing)")
        elif allowed == "None":
            found.steps.append(f"{title}: not applied (RulesAllowed None)")
        elif acct.rules:
            second = evaluate(
                acct, facts, server=False, allowed=allowed, execute=execute, explain=True
            )
            found.steps.append(Section(title, second, f"RulesAllowed {allowed}"))
            found.actions += [f"account: {a.name} {a.param}".strip() for a in second.actions]
        else:
            found.steps.append(Section(title, None))


@dataclass(frozen=True)
class ReplayedMessage:
    """One message of the history whose outcome differs (or, without a proposed rule set,
    on which a rule fires): each side is ``(rule name, action text)`` in the order they run."""

    record: Delivered
    current: tuple[tuple[str, str], ...]
    proposed: tuple[tuple[str, str], ...]

    @property
    def subject(self) -> str:
        for name, value in parse_headers(self.record.head):
            if name == "subject":
                return decoded(value)[:80]
        return ""


@dataclass
class Replay:
    """What ``replay`` found: how many messages of the history the rule set applies to, and
    those whose outcome would change (or every one a rule fires on, without a proposal)."""

    seen: int = 0
    changed: list[ReplayedMessage] = field(default_factory=list)


def _acts(outcome: Outcome) -> tuple[tuple[str, str], ...]:
    """(rule, action as the text form writes it) of every action that runs."""
    return tuple(
        (t.rule.name, format_action(a).removeprefix("do "))
        for t in outcome.trace
        for a in t.actions
    )


async def replay_history(
    admin: RulesAdmin,
    scope: Scope,
    records: Iterable[Delivered],
    proposed: Optional[str] = None,
) -> Replay:
    """Run ``scope``'s current rule set, and ``proposed`` (a text form, checked as ``set``
    would) when given, over the history ``records``: the Server Rules over every message, a
    domain's or an account's over what LOCAL delivered to it. Nothing is delivered, replied
    or remembered; routes and mailboxes are asked as they are now."""
    runner = await admin.runner()
    current = await runner.rules(scope.scope, scope.owner)
    new = current
    if proposed is not None:
        new = await runner.check_text(scope.scope, scope.owner, proposed)
    execute = runner.settings.current.rules.execute
    found = Replay()
    for record in records:
        account: Optional[Account] = None
        if scope.scope == SERVER:
            if record.level != "server":
                continue
            targets = list(record.recipients)
        else:
            if record.level != "local":
                continue
            owner = record.account.lower()
            if (scope.scope == DOMAIN and owner.rpartition("@")[2] != scope.owner) or (
                scope.scope == ACCOUNT and owner != scope.owner
            ):
                continue
            name, _, domain = owner.rpartition("@")
            account = Account(name, domain)
            targets = [owner]
        found.seen += 1
        envelope = Envelope(record.sender, [Recipient(a) for a in targets], record.submit)
        facts = await runner.facts(
            envelope,
            record.head + b"\r\n",
            targets,
            [current, new],
            account,
            size=record.size,
            now=datetime.fromtimestamp(record.when),
        )
        allowed = await runner.allowed(account) if scope.scope == ACCOUNT and account else None
        server = scope.scope == SERVER
        before = _acts(evaluate(current, facts, server=server, allowed=allowed, execute=execute))
        if proposed is None:
            if before:
                found.changed.append(ReplayedMessage(record, before, before))
            continue
        after = _acts(evaluate(new, facts, server=server, allowed=allowed, execute=execute))
        if [a for _r, a in before] != [a for _r, a in after]:
            found.changed.append(ReplayedMessage(record, before, after))
    return found
