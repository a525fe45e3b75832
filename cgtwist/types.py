"""Frozen values shared by every layer: addresses, sessions, envelopes, queue names, routes.

Pure data, no I/O. Protocol code builds these; core, queue and delivery consume them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional


@dataclass(frozen=True)
class Address:
    """An RFC 5321 mailbox ``local@domain``. ``domain`` is stored lower-cased.

    The null reverse-path ``<>`` is represented by ``None`` where an Address is optional.
    """

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def canonical(self) -> str:
        """Lower-cased form used for account lookups (local parts are case-insensitive here)."""
        return f"{self.local.lower()}@{self.domain.lower()}"


class AuthState(enum.Enum):
    NONE = "none"
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True)
class ListenerSpec:
    """One socket of a listener: protocol, address, port and TLS mode.

    ``tls`` is one of ``none`` (plain, STARTTLS offered if certificates exist), ``starttls``
    (same, spelled explicitly), ``implicit`` (TLS from the first byte). ``submission`` means AUTH
    is required before MAIL (587/465). ``allow_plain_auth`` permits AUTH/LOGIN without TLS.
    """

    protocol: str
    port: int
    address: str = "0.0.0.0"
    tls: str = "starttls"
    submission: bool = False
    allow_plain_auth: bool = False

    @property
    def name(self) -> str:
        return f"{self.protocol}:{self.address}:{self.port}"


@dataclass(frozen=True)
class SessionInfo:
    """What is known about one client connection, as the checks and the spool need it."""

    session_id: str
    peer_ip: str
    peer_port: int
    local_ip: str
    local_port: int
    listener: str = ""
    helo: str = ""
    tls: Optional[str] = None  # negotiated TLS version, e.g. "TLSv1.3"; None = cleartext
    account: Optional[str] = None  # authenticated account as "local@domain"
    is_client_ip: bool = False  # CommuniGate "Client IPs": trusted network


@dataclass
class Recipient:
    """One envelope recipient with its per-recipient delivery state, as kept in the spool."""

    address: str  # as given in RCPT TO, normalised to local@domain
    state: str = "pending"  # pending | delivered | failed
    route: str = ""  # e.g. "LOCAL(alice@example.com)" once routed
    orcpt: str = ""
    notify: str = ""
    detail: str = ""  # last reply/reason for the log and DSNs


@dataclass
class Envelope:
    """One mail transaction: sender, recipients and where it came from."""

    sender: str  # "" for the null reverse-path <>
    recipients: list[Recipient] = field(default_factory=list)
    submit: Mapping[str, str] = field(default_factory=dict)  # peer, helo, protocol, account, tls
    params: Mapping[str, str] = field(default_factory=dict)  # BODY, RET, ENVID, SIZE as received


@dataclass(frozen=True)
class QueueName:
    """A CommuniGate logical queue: module plus queue, e.g. LOCAL(alice@example.com).

    The queue manager hands it to the delivery agent with each attempt, so no agent reads its
    queue back out of the text of ``Recipient.route``; ``parse`` is the one reader of that
    text, for a route kept in the spool or given by hand.
    """

    module: str  # LOCAL | SMTP | PIPE | LIST
    queue: str  # LOCAL: the account, SMTP: the domain or [ip], PIPE: the program

    def __str__(self) -> str:
        return f"{self.module}({self.queue})"

    @classmethod
    def parse(cls, text: Optional[str]) -> Optional[QueueName]:
        """``"LOCAL(alice@example.com)"`` -> QueueName("LOCAL", "alice@example.com"); None
        when ``text`` is empty or not of the form ``MODULE(queue)``."""
        m = _QUEUE_NAME.match(text or "")
        return cls(m.group(1), m.group(2)) if m else None


_QUEUE_NAME = re.compile(r"^([A-Za-z]+)\((.*)\)$", re.S)


@dataclass(frozen=True)
class Route:
    """The Router's result for one address: module, queue and final address.

    CommuniGate logs it as ``module(queue)address``.
    """

    module: str  # LOCAL | SMTP | PIPE | LIST | ERROR | NULL
    queue: str
    address: str
    relay: bool = False  # a Relay:-prefixed record matched: relay regardless of the source
    error: str = ""  # for ERROR routes: the text to reply

    def __str__(self) -> str:
        return f"{self.module}({self.queue}){self.address}"

    @property
    def queue_name(self) -> QueueName:
        return QueueName(self.module, self.queue)


@dataclass(frozen=True)
class LocalDecision:
    """What domain and account Rules decided for one message on LOCAL delivery.

    CommuniGate applies the domain's Rules, then the account's, in Local Delivery (after the
    queue): ``discard`` drops the copy, ``reject`` fails the recipient with that text (a DSN
    goes to the sender), ``folder`` is the IMAP name to store into ("Store in"), and
    ``add_headers`` are complete header lines (no CR/LF inside) prepended to the message;
    ``data``, when set, is the message as the rules edited it (Tag Subject) to store instead;
    ``flags`` are IMAP system flags (``\\Seen``...) the stored message gets ("Mark").
    A ``reject`` text that starts with an enhanced status (``5.4.6 ...``) keeps it.
    """

    discard: bool = False
    reject: str = ""
    folder: str = "INBOX"
    add_headers: tuple[str, ...] = ()
    data: Optional[bytes] = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Account:
    """An account as the store returns it (never includes the password hash)."""

    name: str
    domain: str
    real_name: str = ""
    services: frozenset[str] = frozenset()
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.name}@{self.domain}"
