"""Receiving protection: runs the checks at the right SMTP hooks and turns outcomes into replies.

Owns the decision (COMMUNIGATE.md a.6 check order): at connect the blacklist then the RBL; at
MAIL FROM the sender blacklist, return-path DNS, SPF, then Reverse Connect; RCPT and the rest
are the inner policy's (relaying, routing). Each check is ``off | nonclients | all`` from the
dynamic settings, overridable per listener, read at use time. Client IPs and white-holed IPs
are exempt where the mode says so; authenticated sessions count as clients at MAIL FROM. One
Verdict per transaction records every result; every refusal is logged with check, peer and
reason. It does no DNS or socket work itself: the checks do, through what is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from zope.interface import implementer

from cgtwist import logs
from cgtwist.addresslist import AddressList, AddressListCache
from cgtwist.checks.authpenalty import AuthPenalty
from cgtwist.checks.blacklist import AutoBlacklist, SenderBlacklist, check_ip, check_sender
from cgtwist.checks.rbl import RBLChecker
from cgtwist.checks.result import FAIL, LISTED, SKIPPED, TEMPERROR, CheckResult, clean
from cgtwist.checks.returnpath import REPLIES as RETURNPATH_REPLIES
from cgtwist.checks.returnpath import check_return_path
from cgtwist.checks.reverseconnect import (
    Connector,
    ReverseConnect,
    ReverseConnectConfig,
    default_connector,
)
from cgtwist.checks.spf import SPFChecker
from cgtwist.checks.verdict import Verdict
from cgtwist.errors import MailError
from cgtwist.interfaces import (
    CheckOutcome,
    IClientAccess,
    IMessageCheck,
    IPolicy,
    IReceptionFacts,
    IResolver,
    ISessionWatch,
)
from cgtwist.logs import Logger
from cgtwist.settings import (
    SettingsHolder,
    SpfSettings,
    default_listeners,
    parse_listener,
    validate,
)
from cgtwist.settings_protection import CHECKS, MODES, SPF_ACTIONS
from cgtwist.types import Envelope, SessionInfo

log = Logger()
# The built-in action of each SPF result, for the results an administrator's map leaves out.
_DEFAULT_SPF_ACTIONS = SpfSettings().actions

__all__ = ["CHECKS", "MODES", "SPF_ACTIONS", "ProtectedPolicy", "validate_setting"]


@dataclass
class _SessionState:
    connect_results: list[CheckResult] = field(default_factory=list)
    verdict: Optional[Verdict] = None
    helo: str = ""


@implementer(IPolicy, IClientAccess, ISessionWatch, IMessageCheck, IReceptionFacts)
class ProtectedPolicy:
    """IPolicy wrapping ``inner`` (the BasicPolicy) with the receiving-protection checks.

    ``reactor`` supplies threads for SPF and the default Reverse Connect connector; ``spf``,
    ``reverse_connect``, ``auto_blacklist`` and ``auth_penalty`` may be passed in (tests,
    sharing), otherwise they are built here. ``hostname`` is our authserv-id / HELO name.
    ``is_local_domain(domain) -> Deferred[bool]`` (e.g. ``Routing.is_local_domain``): our own
    domains need no DNS to prove they exist (the Return-path check). ``message_rules``: the
    Server Rules at the end of DATA (cgtwist.core.rules_receive), after the inner checks.
    """

    def __init__(
        self,
        inner: IPolicy,
        resolver: IResolver,
        settings: SettingsHolder,
        clock: IReactorTime,
        reactor: Any = None,
        hostname: str = "localhost",
        threadpool: Any = None,
        spf: Optional[SPFChecker] = None,
        reverse_connect: Optional[ReverseConnect] = None,
        connector: Optional[Connector] = None,
        auto_blacklist: Optional[AutoBlacklist] = None,
        auth_penalty: Optional[AuthPenalty] = None,
        max_sessions: int = 20000,
        is_local_domain: Optional[Callable[[str], Any]] = None,
        message_rules: Optional[IMessageCheck] = None,
    ) -> None:
        self.inner = inner
        self.message_rules = message_rules
        self.is_local_domain = is_local_domain
        self.resolver: Any = resolver
        self.settings = settings
        self.clock = clock
        self.hostname = hostname
        self._lists = AddressListCache(size=32)
        self.rbl = RBLChecker(resolver, clock)
        if spf is None and reactor is not None:
            # cgtwist.dns.Resolver's servers and timeout (not part of IResolver: a resolver
            # without them gets no SPF checker); asked only when a checker is to be built
            nameservers = getattr(resolver, "nameservers", None)
            if nameservers is not None:
                spf = SPFChecker(
                    nameservers,
                    reactor,
                    threadpool,
                    timeout=float(getattr(resolver, "timeout", 5.0)),
                    receiver=hostname,
                )
        self.spf = spf
        if reverse_connect is None and (connector is not None or reactor is not None):
            reverse_connect = ReverseConnect(
                resolver,
                connector or default_connector(reactor),
                clock,
                self._reverse_connect_config,
            )
        self.reverse_connect = reverse_connect
        self.auto_blacklist = auto_blacklist or AutoBlacklist(clock, settings)
        self.auth_penalty = auth_penalty or AuthPenalty(
            clock,
            settings,
            is_trusted=self.is_auth_trusted,
            on_failure=lambda ip: self.auto_blacklist.offence(ip, "auth"),
        )
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, _SessionState] = OrderedDict()
        self._listener_cache: tuple[Any, frozenset[str]] = (object(), frozenset())
        self._senders_cache: tuple[Any, SenderBlacklist] = (object(), SenderBlacklist())

    # -- settings helpers ---------------------------------------------------------------
    def _address_list(self, text: str | list[str]) -> AddressList:
        """The parsed address list (cached by text; the setting was checked when loaded)."""
        return self._lists.get(text)

    def is_client_ip(self, ip: str) -> bool:
        """CommuniGate "Client IPs": the SMTP layer sets SessionInfo.is_client_ip from this."""
        return self._address_list(self.settings.current.clients.ips).contains(ip)

    def is_whiteholed(self, ip: str) -> bool:
        return self._address_list(self.settings.current.protection.whitehole.ips).contains(ip)

    def is_auth_trusted(self, ip: str) -> bool:
        """Trusted networks for the AUTH penalty: Client IPs plus ``auth.trusted_ips``."""
        return self.is_client_ip(ip) or self._address_list(
            self.settings.current.auth.trusted_ips
        ).contains(ip)

    def _sender_blacklist(self) -> SenderBlacklist:
        """``protection.blacklist.senders`` parsed once per value, not at every MAIL FROM (the
        value is kept with its parse, so a reload's new value is never mistaken for it)."""
        raw = self.settings.current.protection.blacklist.senders
        if raw is not self._senders_cache[0]:
            self._senders_cache = (raw, SenderBlacklist.parse(raw))
        return self._senders_cache[1]

    def _is_submission(self, listener: str) -> bool:
        """True when the configured listener named ``listener`` requires AUTH (587/465)."""
        raw = self.settings.current.listener_entries
        if raw is not self._listener_cache[0]:
            names: dict[str, set[bool]] = {}
            for entry in raw or default_listeners(True) + default_listeners(False):
                try:
                    spec = parse_listener(entry)
                except (ValueError, TypeError, AttributeError):
                    continue
                names.setdefault(spec.name, set()).add(spec.submission)
            # A name shared by both kinds (port 0 sockets) is ambiguous: not lenient.
            self._listener_cache = (
                raw,
                frozenset(n for n, kinds in names.items() if kinds == {True}),
            )
        return listener in self._listener_cache[1]

    def mode(self, check: str, session: SessionInfo) -> str:
        """The effective mode of ``check`` for this session's listener.

        ``protection.listeners`` is looked up by listener name, then local port, then
        ``"submission"`` for listeners that require AUTH (lenient RBL for roaming users whose
        home IPs are on policy block lists, wherever the port is).
        """
        protection = self.settings.current.protection
        submission = (
            "submission" if session.listener and self._is_submission(session.listener) else ""
        )
        for key in (session.listener, str(session.local_port), submission):
            per = protection.listeners.get(key) if key else None
            if per is not None and check in per:
                return per[check]
        return protection.mode(check)

    def applies(self, check: str, session: SessionInfo, client: bool) -> bool:
        mode = self.mode(check, session)
        return mode == "all" or (mode == "nonclients" and not client)

    def _is_client(self, session: SessionInfo) -> bool:
        return session.is_client_ip or self.is_client_ip(session.peer_ip)

    def _reverse_connect_config(self) -> ReverseConnectConfig:
        current = self.settings.current
        rc = current.protection.reverse_connect
        return ReverseConnectConfig(
            timeout=rc.timeout,
            positive_ttl=rc.positive_ttl,
            negative_ttl=rc.negative_ttl,
            rate_limit=rc.rate_limit,
            max_concurrency=rc.max_concurrency,
            helo=self.hostname,
            port=current.smtp.remote_port,
        )

    # -- session state ------------------------------------------------------------------
    def _state(self, session: SessionInfo) -> _SessionState:
        st = self._sessions.get(session.session_id)
        if st is None:
            st = self._sessions[session.session_id] = _SessionState()
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return st

    def session_closed(self, session: SessionInfo) -> None:
        """The SMTP layer calls this on disconnect so per-session state is freed at once."""
        self._sessions.pop(session.session_id, None)

    def verdict(self, session: SessionInfo) -> Optional[Verdict]:
        """The current transaction's verdict (None before MAIL FROM)."""
        st = self._sessions.get(session.session_id)
        return st.verdict if st else None

    def report_offence(self, ip: str, kind: str = "errors") -> bool:
        """Count an offence (e.g. a disconnect for too many errors); True if now blacklisted."""
        if self.is_client_ip(ip) or self.is_whiteholed(ip):
            return False
        return self.auto_blacklist.offence(ip, kind)

    def _refuse(
        self, session: SessionInfo, verdict: Verdict, check: str, err: MailError, reason: str
    ) -> MailError:
        verdict.refuse(check, err.reply(), err.temporary)
        log.info(
            "protection refused: check={check} peer={peer} session={session} reason={reason} "
            "reply={reply}",
            check=check,
            peer=session.peer_ip,
            session=session.session_id,
            reason=clean(reason),
            reply=err.reply(),
        )
        log.info("{line}", line=verdict.log_line())
        err.detail = f"{check}: {clean(reason)}"
        return err

    # -- IPolicy ------------------------------------------------------------------------
    def connect(self, session: SessionInfo) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._connect(session))

    async def _connect(self, session: SessionInfo) -> Any:
        inner_result = await defer.maybeDeferred(self.inner.connect, session)
        st = self._state(session)
        st.connect_results = []
        st.verdict = None
        ip = session.peer_ip
        client = self._is_client(session)
        verdict = Verdict(session.session_id, ip)
        if self.is_whiteholed(ip):
            st.connect_results.append(CheckResult("blacklist", SKIPPED, "white-holed"))
            return inner_result
        if self.applies("blacklist", session, client):
            # Client IPs are never auto-blacklisted (nor refused for a listing from before
            # they joined clients.ips): only the administrator's static list applies to them.
            auto = None if client else self.auto_blacklist
            r = check_ip(
                ip,
                self._address_list(self.settings.current.protection.blacklist.ips),
                auto,
                self.clock,
            )
            st.connect_results.append(verdict.add(r))
            if r.outcome == LISTED:
                # RFC 5321 §3.1: 554 as the greeting means "no SMTP service here" for this peer.
                raise self._refuse(
                    session,
                    verdict,
                    "blacklist",
                    MailError(554, "5.7.1", "Access denied"),
                    r.reason,
                )
        if self.applies("rbl", session, client):
            rbl = self.settings.current.protection.rbl
            r = await self.rbl.check(ip, list(rbl.zones))
            st.connect_results.append(verdict.add(r))
            if r.outcome == LISTED and rbl.action == "tag":
                # Accepted: every transaction's verdict carries the listing into the message's
                # submit record (submit_facts), where the RBL Listed rule condition reads it.
                log.info(
                    "rbl listing tagged, not refused: peer={peer} session={session} {reason}",
                    peer=ip,
                    session=session.session_id,
                    reason=clean(r.reason),
                )
            elif r.outcome == LISTED:
                code = rbl.code
                enhanced = "4.7.1" if code < 500 else "5.7.1"
                zone = clean(r.data.get("zone", ""), 100)
                raise self._refuse(
                    session,
                    verdict,
                    "rbl",
                    MailError(
                        code,
                        enhanced,
                        f"Service unavailable; client host [{ip}] blocked using {zone}",
                    ),
                    r.reason,
                )
        return inner_result

    def helo(self, session: SessionInfo, name: str) -> defer.Deferred[Any]:
        d = defer.maybeDeferred(self.inner.helo, session, name)

        def remember(result: Any) -> Any:
            self._state(session).helo = name  # the SPF HELO identity if the session lacks it
            return result

        return d.addCallback(remember)

    def mail_from(
        self, session: SessionInfo, sender: str, params: Mapping[str, str]
    ) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._mail_from(session, sender, params))

    async def _mail_from(
        self, session: SessionInfo, sender: str, params: Mapping[str, str]
    ) -> None:
        await defer.maybeDeferred(self.inner.mail_from, session, sender, params)
        st = self._state(session)
        verdict = Verdict(session.session_id, session.peer_ip, sender)
        verdict.results.extend(st.connect_results)
        st.verdict = verdict
        # At MAIL FROM authenticated sessions count as clients (never probe or SPF-reject them).
        client = self._is_client(session) or bool(session.account)

        if (
            sender
            and self.applies("blacklist", session, client)
            and not self.is_whiteholed(session.peer_ip)
        ):
            r = verdict.add(check_sender(sender, self._sender_blacklist()))
            if r.outcome == LISTED:
                raise self._refuse(
                    session,
                    verdict,
                    "sender-blacklist",
                    MailError(550, "5.7.1", "Sender address rejected: access denied"),
                    r.reason,
                )

        if sender and self.applies("returnpath", session, client) and not await self._ours(sender):
            r = verdict.add(await check_return_path(self.resolver, sender, self.clock))
            err = RETURNPATH_REPLIES.get(r.outcome)
            if err is not None:
                raise self._refuse(
                    session,
                    verdict,
                    "returnpath",
                    MailError(err.code, err.enhanced, err.text),
                    r.reason,
                )

        if self.spf is not None and self.applies("spf", session, client):
            self.spf.query_time = float(self.settings.current.protection.spf.timeout)
            helo = session.helo or st.helo
            r = await self.spf.check(session.peer_ip, sender, helo)
            action = self._spf_action(r.outcome)
            verdict.add(r, tag=action in ("tag", "reject", "tempfail"))
            if action == "reject":
                enhanced = "5.7.24" if r.outcome in ("permerror", "temperror") else "5.7.23"
                raise self._refuse(
                    session,
                    verdict,
                    "spf",
                    MailError(550, enhanced, f"SPF check failed ({r.outcome})"),
                    r.reason,
                )  # RFC 7372 §3.2
            if action == "tempfail":
                enhanced = "4.4.3" if r.outcome == "temperror" else "4.7.23"
                raise self._refuse(
                    session,
                    verdict,
                    "spf",
                    MailError(451, enhanced, "SPF check could not be completed, try again later"),
                    r.reason,
                )

        if (
            sender
            and self.reverse_connect is not None
            and self.applies("reverse_connect", session, client)
        ):
            # One probe at most per transaction: this hook runs once per MAIL FROM.
            r = verdict.add(await self.reverse_connect.verify(sender))
            if r.outcome == FAIL:
                raise self._refuse(
                    session,
                    verdict,
                    "reverse-connect",
                    MailError(550, "5.1.7", "Sender address rejected: undeliverable address"),
                    r.reason,
                )
            if (
                r.outcome == TEMPERROR
                and not self.settings.current.protection.reverse_connect.fail_open
            ):
                raise self._refuse(
                    session,
                    verdict,
                    "reverse-connect",
                    MailError(451, "4.1.7", "Sender address verification failed, try again later"),
                    r.reason,
                )
        return None

    def _spf_action(self, outcome: str) -> str:
        action = self.settings.current.protection.spf.actions.get(outcome)
        if action is None:
            action = _DEFAULT_SPF_ACTIONS.get(outcome, "tag")
        return action

    async def _ours(self, sender: str) -> bool:
        if self.is_local_domain is None:
            return False
        domain = sender.rpartition("@")[2].strip().lower()
        try:
            return bool(await self.is_local_domain(domain))
        except Exception:
            return False  # fall back to the DNS check

    def rcpt_to(
        self, session: SessionInfo, sender: str, recipient: str, params: Mapping[str, str]
    ) -> defer.Deferred[str]:
        return defer.maybeDeferred(self.inner.rcpt_to, session, sender, recipient, params)

    def check_message(
        self, session: SessionInfo, envelope: Envelope, message: bytes
    ) -> defer.Deferred[CheckOutcome]:
        """The inner policy's check of the message itself (sizes, the From: check), when it
        has one, then the ``message_rules`` (the Server Rules that Reject or Discard before
        the 250); fires with what the rules answer (None, DISCARD, the "none fired" mark)."""
        d: defer.Deferred[CheckOutcome] = defer.succeed(None)
        if IMessageCheck.providedBy(self.inner):
            d = defer.maybeDeferred(
                IMessageCheck(self.inner).check_message, session, envelope, message
            )
        rules = self.message_rules
        if rules is not None:
            d.addCallback(lambda _: rules.check_message(session, envelope, message))
        return d

    def submit_facts(self, session: SessionInfo) -> dict[str, str]:
        """What the transaction's checks found that the Rules read (SPF result, the RBL
        zones that listed the client), for the message's submit record."""
        verdict = self.verdict(session)
        return verdict.facts() if verdict is not None else {}

    def trace_headers(
        self, session: SessionInfo, envelope: Envelope
    ) -> defer.Deferred[list[bytes]]:
        """Received-SPF and Authentication-Results (when SPF is tagged), then the inner headers.

        Also writes the transaction's verdict line (action=accept).
        """
        d = defer.maybeDeferred(self.inner.trace_headers, session, envelope)

        def add(inner_headers: list[bytes]) -> list[bytes]:
            verdict = self.verdict(session)
            if verdict is None:
                return list(inner_headers)
            # One verdict line per accepted transaction when a check actually ran; a Client IP
            # or authenticated session whose checks were all skipped needs no extra line
            # beside the SMTP "accepted" one.
            ran = any(r.outcome != "skipped" for r in verdict.results)
            if ran:
                log.info("{line}", line=verdict.log_line())
            elif logs.enabled(LogLevel.debug):  # each Client IP message: not built to be dropped
                log.debug("{line}", line=verdict.log_line())
            return verdict.trace_headers(self.hostname) + list(inner_headers)

        return d.addCallback(add)


def validate_setting(key: str, value: Any) -> Any:
    """Check a protection setting before it is stored (for ``cgtwist-admin settings set``).

    Returns ``value`` or raises ValueError with a readable reason (address lists name the line).
    Every setting is checked by its field in cgtwist.settings (unknown names are refused); the
    protection rules live in the pure cgtwist.settings_protection, which those fields name.
    """
    return validate(key, value)
