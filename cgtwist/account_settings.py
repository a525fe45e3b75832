"""Account settings: one typed schema, inherited server -> domain -> account.

Pure: no I/O, no twisted. CommuniGate keeps an account's settings as "default" unless set, and
a default comes from the domain's Account Defaults, then the server's Account Defaults. Here the
schema is the frozen dataclass ``AccountDefaults`` (fields made with ``setting(...)`` like every
server setting): the server's values are the server settings ``account_defaults.<name>``
(``cgtwist.settings`` nests the class there), a domain's and an account's are the same names
(``mail.max_message_size``) kept in their rows' settings. ``effective`` lays them over each other and
says, for each value, where it came from (``settings show --effective`` prints that).

Four older keys read by other parts keep their names and meaning (``SCOPED``): ``admin`` and
``domain_admin`` (accounts only, flags), ``smtp.send_as`` (accounts; the server's default is that server setting) and
``rules.allowed`` (domains and accounts; the server setting of that name is the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Container, Mapping, Optional

from cgtwist.settings_fields import (
    Spec,
    at_most,
    check_value,
    fields_of,
    octets,
    setting,
    walk,
)

SOURCES = ("default", "server", "domain", "account")


@dataclass(frozen=True)
class MailLimits:
    """What an account receives (CommuniGate's Mail settings)."""

    max_message_size: int = setting(
        0,
        "largest message in octets the account receives: SMTP refuses a larger declared SIZE at "
        "RCPT and a larger message after DATA with 552 5.3.4; 0 = only smtp.max_message_size",
    )


@dataclass(frozen=True)
class QuotaLimits:
    """What an account may keep (CommuniGate's storage and folder limits)."""

    max_folders: int = setting(
        0,
        "mailbox folders the account may have besides INBOX (the special-use ones count); "
        "IMAP CREATE beyond it answers NO [LIMIT]; read at login; 0 = no limit",
    )
    storage: int = setting(
        0,
        "octets of mail the account may keep in all its folders (K, M, G accepted: 500M); "
        "LOCAL defers a message that does not fit (4.2.2) for quota.grace, then bounces it "
        "(5.2.2); IMAP APPEND and COPY answer NO [OVERQUOTA]; 0 = no limit",
        check=octets,
    )
    messages: int = setting(
        0,
        "messages the account may keep in all its folders, enforced as quota.storage; 0 = no limit",
    )
    grace: int = setting(
        86400,
        "seconds LOCAL keeps deferring a message that does not fit the quota (4.2.2, "
        "counted from its first such deferral) before it fails with a DSN (5.2.2)",
    )

    def exceeded(self, octets: int, messages: int, more_octets: int, more: int) -> str:
        """The RFC 9208 resource ("STORAGE" or "MESSAGE") that keeping ``more_octets`` in
        ``more`` messages would take over its limit, with ``octets`` in ``messages`` kept
        already; "" when they fit. Only an addition is judged: a change that adds nothing
        (MOVE within the account) fits even when the account is over its limit."""
        if self.storage and more_octets > 0 and octets + more_octets > self.storage:
            return "STORAGE"
        if self.messages and more > 0 and messages + more > self.messages:
            return "MESSAGE"
        return ""


def _classes(key: str, value: object) -> None:
    at_most(4, f"{key}: there are 4 character classes (lower, upper, digit, other)")(key, value)


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must be (checked by ``account add`` and ``account passwd``)."""

    min_length: int = setting(
        0,
        "fewest characters a new password may have; shorter is refused with the reason",
    )
    min_classes: int = setting(
        0,
        "character classes (lower case, upper case, digits, others) a new password must mix, 0-4",
        check=_classes,
    )


@dataclass(frozen=True)
class AccountDefaults:
    """Every account setting with a default (the server's Account Defaults)."""

    mail: MailLimits = field(default_factory=MailLimits)
    quota: QuotaLimits = field(default_factory=QuotaLimits)
    password: PasswordPolicy = field(default_factory=PasswordPolicy)


# The typed account settings by the name a domain or account stores them under.
TYPED: dict[str, Spec] = {s.name: s for s in walk(AccountDefaults)}
SERVER_PREFIX = "account_defaults."


@dataclass(frozen=True)
class Scoped:
    """One key an account or domain may set: where its server default is and who may set it.

    ``server_key`` is the server setting giving the default ("" = the schema's ``default``);
    ``scopes`` holds "account" and/or "domain"; ``spec`` is the typed field (None for the
    older keys checked as their server setting, or ``admin``, a flag)."""

    name: str
    doc: str
    scopes: frozenset[str]
    server_key: str = ""
    default: object = None
    spec: Optional[Spec] = None


_BOTH = frozenset({"account", "domain"})
SCOPED: dict[str, Scoped] = {
    "admin": Scoped(
        "admin",
        "a server administrator: shown as [admin] by 'account list', may send as any "
        "address of its domain; postmaster has it from the first start",
        frozenset({"account"}),
        default=False,
    ),
    "domain_admin": Scoped(
        "domain_admin",
        "a domain administrator: manages its own domain's accounts in WebAdmin",
        frozenset({"account"}),
        default=False,
    ),
    "smtp.send_as": Scoped(
        "smtp.send_as",
        "addresses and * patterns this account may also send as "
        "(cgtwist.core.senders), validated as the server setting",
        frozenset({"account"}),
        server_key="smtp.send_as",
    ),
    "rules.allowed": Scoped(
        "rules.allowed",
        "which Rule actions the account may use (RulesAllowed); a domain's applies to its "
        "accounts that set none",
        _BOTH,
        server_key="rules.allowed",
    ),
    **{
        name: Scoped(name, s.doc, _BOTH, SERVER_PREFIX + name, s.default, s)
        for name, s in TYPED.items()
    },
}


def known(scope: str) -> dict[str, Scoped]:
    """The keys ``scope`` ("account" or "domain") may set."""
    return {k: s for k, s in SCOPED.items() if scope in s.scopes}


@dataclass(frozen=True)
class Effective:
    """An account's settings in force: typed ``values``, the three older keys, and for every
    name the (value, source) pair, source one of ``SOURCES``."""

    values: AccountDefaults
    admin: bool
    send_as: object
    rules_allowed: str
    sources: dict[str, tuple[object, str]]


def effective(
    server: Mapping[str, object],
    domain: Mapping[str, object],
    account: Mapping[str, object],
    server_set: Container[str] = frozenset(),
    problems: Optional[dict[str, str]] = None,
) -> Effective:
    """Lay the account's own settings over its domain's over the server's.

    ``server`` answers server setting names (``cgtwist.settings.Settings`` is such a mapping)
    and ``server_set`` names those the administrator set (``Settings.overrides``): a server
    value's source is "server" for those, "default" for the rest. ``domain`` and ``account``
    are the rows' stored settings. A stored value that fails its check (written by hand or by
    another version) is passed over, named in ``problems``.
    """
    sources: dict[str, tuple[object, str]] = {}
    for name, sc in SCOPED.items():
        if sc.server_key and sc.server_key in server:
            value = server[sc.server_key]
            source = "server" if sc.server_key in server_set else "default"
        else:
            value, source = sc.default, "default"
        for scope, values in (("domain", domain), ("account", account)):
            if scope not in sc.scopes or name not in values:
                continue
            try:
                checked = _check(sc, values[name])
            except ValueError as e:
                if problems is not None:
                    problems[f"{scope}:{name}"] = str(e)
                continue
            value, source = checked, scope
        sources[name] = (value, source)
    flat = {TYPED[n].path: sources[n][0] for n in TYPED}
    return Effective(
        values=AccountDefaults(**fields_of(AccountDefaults, flat)),
        admin=bool(sources["admin"][0]),
        send_as=sources["smtp.send_as"][0],
        rules_allowed=str(sources["rules.allowed"][0]),
        sources=sources,
    )


def _check(sc: Scoped, value: object) -> object:
    """A stored value re-checked when read (the typed keys and the ``admin`` flag)."""
    if sc.spec is not None:
        return check_value(sc.spec, value)
    if sc.name in ("admin", "domain_admin") and not isinstance(value, bool):
        raise ValueError(f"{sc.name} must be true or false")
    return value


def password_refusal(policy: PasswordPolicy, password: str) -> str:
    """Why ``password`` does not meet ``policy`` ("" when it does), said so that the
    administrator or user knows what to change; the password itself is never repeated."""
    if len(password) < policy.min_length:
        return f"the password is too short: at least {policy.min_length} characters"
    classes = [
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    ]
    if sum(classes) < policy.min_classes:
        return (
            f"the password is too simple: mix at least {policy.min_classes} of lower case, "
            "upper case, digits and other characters"
        )
    return ""
