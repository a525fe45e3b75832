"""The seams between layers, as zope Interfaces.

Owns only contracts. Every method that may touch disk, database or network returns a Deferred;
refusals are raised (or errback) as ``cgtwist.errors.MailError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from cgtwist.types import Account, Envelope, QueueName, Recipient, Route, SessionInfo


class IAccountStore(Interface):
    """Domains, accounts, aliases and dynamic settings (cgtwist.storage).

    All methods return Deferreds. Names are compared case-insensitively; domains are stored
    lower-cased. Password hashing and verification run off the reactor thread.
    """

    main_domain = Attribute("The main domain name (str), from the bootstrap configuration.")

    def get_domain(name: str) -> Deferred[Optional[dict[str, object]]]:
        """Fire with a dict of the domain's fields and settings, or None."""

    def is_local_domain(name: str) -> Deferred[bool]:
        """Fire with True when ``name`` is one of our domains (or a domain alias)."""

    def get_account(name: str, domain: str) -> Deferred[Optional[Account]]:
        """Fire with a ``cgtwist.types.Account`` or None."""

    def resolve_alias(name: str, domain: str) -> Deferred[Optional[str]]:
        """Fire with the target address (str) of alias ``name@domain``, or None."""

    def verify_password(
        name: str, domain: str, password: Union[str, bytes]
    ) -> Deferred[Optional[Account]]:
        """Fire with the Account when the password matches and the account is enabled, else None.

        Costs the same for unknown accounts as for wrong passwords.
        """

    def get_settings() -> Deferred[dict[str, object]]:
        """Fire with a dict of every dynamic server setting (key -> decoded JSON value)."""

    def set_setting(key: str, value: object) -> Deferred[None]:
        """Store one dynamic setting (value is JSON-serialisable)."""


class ISpool(Interface):
    """The durable message spool: CommuniGate's ``Queue/`` folder (cgtwist.spool).

    ``store`` fires only after the message file was fsynced, renamed ``.msg`` and the directory
    fsynced: the caller may answer 250 then, never before.
    """

    def store(envelope: Envelope, data: bytes) -> Deferred[str]:
        """Write envelope + message bytes durably; fire with the new message id (str)."""

    def load(msg_id: str) -> Deferred[tuple[Envelope, bytes]]:
        """Fire with (Envelope, message bytes) of a spooled message."""

    def update(msg_id: str, envelope: Envelope) -> Deferred[None]:
        """Durably record new per-recipient states (the delivery journal)."""

    def remove(msg_id: str) -> Deferred[None]:
        """Remove a message whose recipients are all done."""

    def recover() -> Deferred[list[str]]:
        """On start: delete stale .tmp, quarantine corrupt files, fire with the .msg ids."""

    def subscribe(on_stored: Callable[[str, Envelope, bytes], object]) -> None:
        """Call ``on_stored(msg_id, envelope, data)`` for each message ``store`` made durable,
        before ``store``'s Deferred fires. The spool's one way to announce new mail: it never
        knows the queue manager (in the server) nor the link to the server (in a worker)."""


class IQueue(Interface):
    """The queue manager as the rest of the server sees it (cgtwist.queue.manager).

    It takes every message the spool holds, routes its recipients into logical queues and has
    the delivery agents work them; the spool's subscription feeds it.
    """

    def start() -> Deferred[int]:
        """Recover the spool and queue every message found; fire with their number."""

    def stop() -> Deferred[None]:
        """Start nothing new; fire when the deliveries in flight have finished."""

    def enqueue(msg_id: str, envelope: Envelope, data: Optional[bytes] = None) -> Deferred[None]:
        """Take a message the spool made durable (fits ``ISpool.subscribe``)."""

    def adopt(msg_id: str) -> Deferred[bool]:
        """Take a message an SMTP worker process stored in ``Queue/incoming/``; fire True if
        it was adopted now, False if it was not there or the queue is stopping."""

    def note_attempt(msg_id: str, attempt: Mapping[str, object]) -> None:
        """Keep one host-level delivery attempt in the message's history."""


class ISubmission(Interface):
    """The single way into the queue (cgtwist.core.submission)."""

    def check_capacity(size: int = 0) -> Deferred[None]:
        """Fire None if a message of ``size`` octets may be accepted now, else errback
        MailError (452 4.3.1 when the queue or the disk is full). SMTP asks at MAIL FROM."""

    def submit(envelope: Envelope, data: bytes) -> Deferred[str]:
        """Spool the message (which schedules its delivery); fire with the message id.

        Fires only once the message is durable, so the caller can reply 250.
        """


class IPolicy(Interface):
    """Decisions for one SMTP session (cgtwist.core.policy).

    Each hook fires with a value or errbacks with MailError; protocol code only translates.
    """

    def connect(session: SessionInfo) -> Deferred[Optional[SessionInfo]]:
        """Decide whether to talk to this peer at all (Client IPs, blacklists, RBL)."""

    def helo(session: SessionInfo, name: str) -> Deferred[Optional[SessionInfo]]:
        """Check the HELO/EHLO name."""

    def mail_from(session: SessionInfo, sender: str, params: Mapping[str, str]) -> Deferred[None]:
        """Check the reverse-path (str, "" for <>); fire with None or errback MailError."""

    def rcpt_to(
        session: SessionInfo, sender: str, recipient: str, params: Mapping[str, str]
    ) -> Deferred[str]:
        """Check one recipient; fire with the normalised recipient address (str).

        ``params`` are the RCPT parameters, plus ``SIZE`` as the client declared it at MAIL
        (RFC 1870) so a recipient's own limit can refuse it here (552 5.3.4)."""

    def trace_headers(session: SessionInfo, envelope: Envelope) -> Deferred[list[bytes]]:
        """Fire with a list of extra header lines (bytes, CRLF-free) to prepend, e.g. SPF results."""


# What a policy may offer beyond IPolicy. A caller asks ``I....providedBy(policy)`` and
# calls the method, rather than probing for a name: the seam is written down here.


class IClientAccess(Interface):
    """The Client IPs test of a policy (cgtwist.core.protection)."""

    def is_client_ip(ip: str) -> bool:
        """True when ``ip`` (str) is one of the Client IPs (exempt from per-IP caps)."""


class ISessionWatch(Interface):
    """A policy that keeps per-session and per-peer state (cgtwist.core.protection)."""

    def session_closed(session: SessionInfo) -> None:
        """The SMTP session ``session`` ended: forget what was kept for it."""

    def report_offence(ip: str, kind: str = "errors") -> bool:
        """The peer ``ip`` misbehaved (``pregreet``, ``errors``); True if it is now blacklisted."""


# What an IMessageCheck fires with to accept a message and store nothing (a Discard rule):
# the client hears 250, no spool file is written.
DISCARD = "discard"
# What an IMessageCheck fires with: None (accept), DISCARD, or entries for the message's
# submit record (accept and note them: the Server Rules' "none fired" mark).
CheckOutcome = Union[None, str, Mapping[str, str]]


class IMessageCheck(Interface):
    """A policy that looks at the message after DATA, before it is queued."""

    def check_message(
        session: SessionInfo, envelope: Envelope, message: bytes
    ) -> Deferred[CheckOutcome]:
        """Fire None to accept ``message`` (bytes), DISCARD to answer 250 and store nothing,
        a mapping to accept it with those entries added to its submit record, or errback
        MailError to refuse it."""


class IReceptionFacts(Interface):
    """A policy whose checks found things later stages read (cgtwist.core.protection)."""

    def submit_facts(session: SessionInfo) -> Mapping[str, str]:
        """Entries for the message's submit record (``spf``, ``rbl``): what the Rules read of
        the protection verdict, recorded where no sender can forge it."""


class IDeliveryAgent(Interface):
    """A delivery module: LOCAL, SMTP, PIPE, LIST (cgtwist.delivery)."""

    module = Attribute("The module name this agent serves, e.g. 'LOCAL'.")

    def deliver(
        msg_id: str,
        envelope: Envelope,
        data: bytes,
        recipients: list[Recipient],
        queue: Optional[QueueName] = None,
    ) -> Deferred[list[Recipient]]:
        """Deliver ``data`` to ``recipients`` (list of Recipient of one logical queue).

        ``queue`` is that logical queue, a parsed ``cgtwist.types.QueueName`` (LOCAL: the
        account, SMTP: the domain, PIPE: the program); the queue manager always gives it.
        Without one, it is read from the first recipient's ``route`` (``QueueName.parse``).
        Fires with the same Recipient objects, each with ``state`` set to delivered, failed or
        pending (pending = temporary failure, retry later) and ``detail`` set to the reason.
        """


class IMailboxNotifier(Interface):
    """Told when new mail lands in a mailbox, so IMAP IDLE sessions see it at once.

    Within one process; another process's sessions hear of it through their own notifier's
    watch (``cgtwist.mailstore.MailboxNotifier.watch_other_processes``), so LOCAL need not
    know which process serves which session."""

    def mailbox_changed(account: str, folder: str) -> Deferred[None]:
        """``account`` is "local@domain", ``folder`` the IMAP name ("INBOX")."""


class IRouter(Interface):
    """Address routing (cgtwist.core.routing over the pure cgtwist.router table).

    ``kind`` is "mail" (envelope addresses) or "access" (login names).
    """

    def route(address: str, kind: str = "mail") -> Deferred[Route]:
        """Fire with a ``cgtwist.types.Route`` for ``address`` (str) or errback MailError.

        Unknown local accounts give Route(module="ERROR", error="5.1.1 ...") rather than an
        exception, so callers decide what to reply.
        """


class IResolver(Interface):
    """The one DNS resolver (cgtwist.dns): configured nameservers, timeouts, bounded concurrency.

    NXDOMAIN errbacks with ``cgtwist.errors.DNSPermanentError``; SERVFAIL, REFUSED and timeouts
    with ``cgtwist.errors.DNSTemporaryError``. An existing name with no records of the type fires
    with an empty list.
    """

    def lookup_mx(domain: str) -> Deferred[list[tuple[int, str]]]:
        """Fire with [(preference, host), ...] sorted by preference."""

    def lookup_a(host: str) -> Deferred[list[str]]:
        """Fire with a list of IPv4 address strings."""

    def lookup_aaaa(host: str) -> Deferred[list[str]]:
        """Fire with a list of IPv6 address strings."""

    def lookup_txt(name: str) -> Deferred[list[str]]:
        """Fire with a list of TXT strings (each record's strings joined)."""

    def lookup_ptr(ip: str) -> Deferred[list[str]]:
        """Fire with a list of host names for an IPv4/IPv6 address."""


class IAuthPenalty(Interface):
    """The brute-force brake every login passes (cgtwist.checks.authpenalty.AuthPenalty), as
    ``cgtwist.protocols.login.LoginAttempt`` uses it: one object shared by SMTP, POP3 and IMAP,
    so a host's failures count across protocols and connections."""

    def acquire(ip: str) -> Union[bool, Deferred[bool]]:
        """Start an attempt from ``ip``: False when too many run at once from a host with
        failures on record (then the caller answers a temporary error and never releases).
        A Deferred where the count is another process's (an IMAP worker asks the server)."""

    def release(ip: str) -> None:
        """End an attempt that ``acquire`` allowed."""

    def failed(
        ip: str,
        login: str,
        protocol: str,
        secret: Union[bytes, str, None] = None,
        log_line: bool = True,
    ) -> Deferred[float]:
        """Count a failed login (a repeated ``secret`` only once) and, unless ``log_line`` is
        False, write its log line; fire with the delay once it has passed, when the failure
        may be answered."""

    def succeeded(ip: str) -> None:
        """A correct password from ``ip``: forget its failures."""

    def should_disconnect(connection_failures: int) -> bool:
        """True when one connection has failed often enough to be closed (auth.max_failures)."""


class IStatistics(Interface):
    """The server's counters (cgtwist.stats.Statistics), counted where each event happens:
    the queue manager counts messages received and each recipient's outcome, the SMTP wire
    its refusals, every listener's factory its connections, the login brake its failures.
    Passed in by constructors, never reached as a global; counting is cheap (no I/O)."""

    def message(event: str, count: int = 1) -> None:
        """``count`` events of ``event``: ``received`` (a message taken into the queue),
        ``delivered``/``deferred``/``bounced`` (a recipient's attempt outcome), ``rejected``
        (a refusal of a connection, sender, recipient or message by SMTP)."""

    def connection(protocol: str) -> None:
        """A connection accepted on a listener of ``protocol`` (smtp, pop3, imap, http)."""

    def login_failed(protocol: str) -> None:
        """A failed login (wrong name or password) over ``protocol``."""
