"""Dynamic server settings: one frozen dataclass per section, their validation, the live holder.

Pure apart from the holder's observer list. The store keeps only the values an administrator
changed (name -> JSON, e.g. ``smtp.max_recipients``); ``Settings`` checks them once, when it is
built, and lays them over the defaults declared here, so components read typed values as
attributes (``settings.current.smtp.max_recipients``) with no cast and no fallback. Components
read the current ``Settings`` from a ``SettingsHolder`` at the moment they need a value, so a
change made with ``cgtwist-admin settings set`` applies at once (new connections, next check,
next queue run).

Adding a setting: a field in its section below, ``setting(default, description, check=...)``;
its name is the section path and the field name. ``settings show`` lists it, ``settings set``
checks it and the store keeps it, with nothing else to edit.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from cgtwist import account_settings, settings_protection
from cgtwist.settings_fields import (
    Check,
    Spec,
    at_least,
    at_most,
    check_value,
    fields_of,
    seconds_list,
    setting,
    walk,
)
from cgtwist.types import ListenerSpec

# Listener defaults; ports are shifted when running unprivileged (see default_listeners).
_LISTENERS_PRIVILEGED: list[dict[str, Any]] = [
    {"protocol": "smtp", "address": "0.0.0.0", "port": 25, "tls": "starttls"},
    {"protocol": "smtp", "address": "0.0.0.0", "port": 587, "tls": "starttls", "submission": True},
    {"protocol": "smtp", "address": "0.0.0.0", "port": 465, "tls": "implicit", "submission": True},
    {"protocol": "pop3", "address": "0.0.0.0", "port": 110, "tls": "starttls"},
    {"protocol": "pop3", "address": "0.0.0.0", "port": 995, "tls": "implicit"},
    {"protocol": "imap", "address": "0.0.0.0", "port": 143, "tls": "starttls"},
    {"protocol": "imap", "address": "0.0.0.0", "port": 993, "tls": "implicit"},
]

# Unprivileged variant: the same services on ports above 1024, on loopback by default.
UNPRIVILEGED_PORTS = {25: 2525, 587: 2587, 465: 2465, 110: 2110, 995: 2995, 143: 2143, 993: 2993}


def default_listeners(privileged: bool) -> list[dict[str, Any]]:
    if privileged:
        return [dict(x) for x in _LISTENERS_PRIVILEGED]
    return [
        dict(x, port=UNPRIVILEGED_PORTS[x["port"]], address="127.0.0.1")
        for x in _LISTENERS_PRIVILEGED
    ]


MAX_SMTP_WORKERS = 64
MAX_SHUTDOWN_GRACE = 600


# Every dynamic setting with its default and a one-line description, section by section.
# Limits follow RFC 5321 §4.5.3.1 minimums and Postfix's defaults (RELIABILITY.md a2).


@dataclass(frozen=True)
class SmtpSettings:
    """SMTP: receiving (limits, timeouts, deadlines, senders) and sending (outbound timeouts, smarthost)."""

    max_command_length: int = setting(
        2048,
        "longest SMTP command line in octets (RFC 5321 minimum 512); longer: 500 5.5.2",
    )
    max_data_line_length: int = setting(
        10000,
        "longest line inside DATA; longer: 552 5.3.4 after the final dot",
    )
    max_message_size: int = setting(
        10485760,
        "largest message in octets, advertised as SIZE; larger: 552 5.3.4",
    )
    max_recipients: int = setting(
        100,
        "recipients per message; more: 452 4.5.3",
    )
    max_errors: int = setting(
        10,
        "protocol errors before the server answers 421 and disconnects",
    )
    idle_timeout: int = setting(
        300,
        "seconds without a command before 421 and disconnect (RFC 5321 §4.5.3.2.7)",
    )
    data_timeout: int = setting(
        180,
        "seconds without data during DATA before the transaction is dropped",
    )
    max_connections: int = setting(
        500,
        "concurrent SMTP connections in total; more: 421 4.7.0; 0 = no limit",
    )
    max_connections_per_ip: int = setting(
        20,
        "concurrent SMTP connections from one IP (Client IPs exempt); more: 421 4.7.0; 0 = no limit",
    )
    workers: int = setting(
        0,
        "SMTP worker processes that accept on the SMTP listeners (receiving on other CPU cores than delivery); 0 = the server process itself. Connection, penalty and protection counters are then kept per process",
        check=at_most(
            MAX_SMTP_WORKERS,
            f"smtp.workers is a number of processes: at most {MAX_SMTP_WORKERS} "
            "(one per CPU core is a good start)",
        ),
        node=True,
    )
    delivery_workers: int = setting(
        0,
        "outbound delivery worker processes that run the SMTP client sessions to other servers (on other CPU cores than the queue manager); 0 = the server process itself. Each keeps its own idle connections; a destination's messages go to the same worker",
        check=at_most(
            MAX_SMTP_WORKERS,
            f"smtp.delivery_workers is a number of processes: at most {MAX_SMTP_WORKERS} "
            "(one or two per CPU core the server does not need)",
        ),
        node=True,
    )
    delivery_worker_stall: int = setting(
        60,
        "seconds an outbound delivery worker may leave the server's liveness probe (sent every 10 s) unanswered before it is killed and restarted, its attempts retried; 0 = never",
    )
    max_received_headers: int = setting(
        100,
        "Received: headers in a message before it is refused as a loop (RFC 5321 §6.3)",
    )
    tls_handshake_timeout: int = setting(
        30,
        "seconds allowed for a TLS handshake",
    )
    # Slow clients (RELIABILITY.md #54): deadlines count progress, not bytes, so a client
    # trickling one byte every few seconds is dropped (421 4.4.2) where the idle timer is not.
    command_deadline: int = setting(
        60,
        "seconds a command line may take from its first octet to its CRLF; slower: 421 4.4.2; 0 = none",
    )
    data_deadline: int = setting(
        600,
        "seconds DATA may take, plus smtp.data_min_rate's allowance for the octets sent; slower: 421 4.4.2 and the message is discarded; 0 = none",
    )
    data_min_rate: int = setting(
        1024,
        "octets per second that earn DATA more time: n octets may take smtp.data_deadline + n / rate seconds; 0 = a fixed smtp.data_deadline",
    )
    session_deadline: int = setting(
        3600,
        "seconds one SMTP connection may last; then 421 4.4.2 after the reply being worked on (a message in DATA is finished first); 0 = none",
    )
    greeting_delay: int = setting(
        0,
        "seconds the 220 banner waits for clients that are not Client IPs on non-submission listeners; input before the banner: 554 and close (Postfix pregreet test); 0 = off, 2 suggested",
    )
    # Sender addresses of authenticated sessions (RELIABILITY.md #44; cgtwist.core.senders)
    restrict_sender: bool = setting(
        True,
        "an authenticated session's MAIL FROM must be its own address, an alias or Router address that routes to it, a smtp.send_as entry, or (accounts with the admin flag) any address of its domain; else 553 5.7.1; <> is always allowed",
    )
    check_from_header: bool = setting(
        False,
        "authenticated sessions: every From: header address must pass the smtp.restrict_sender rule, else 550 5.7.1 after DATA",
    )
    send_as: Union[str, list[str]] = setting(
        "",
        "addresses authenticated accounts may also send as: user@domain or a pattern with * (e.g. *@lists.example.com), one per line or comma; set on the server (every account) or on an account (cgtwist-admin settings set --account)",
        check=settings_protection.send_as,
    )
    # Outbound SMTP (RFC 5321 §4.5.3.2 timeouts, seconds)
    remote_port: int = setting(
        25,
        "TCP port of remote MX hosts (tests point it at loopback sinks)",
    )
    relayhost: str = setting(
        "",
        "smarthost as host:port or [host]:port; empty = deliver by MX",
    )
    relayhost_auth: Union[None, dict[str, str], list[str], str] = setting(
        None,
        'smarthost login as {"user": ..., "password": ...}; needs verified TLS',
        secret=True,
    )
    relayhost_ca_file: str = setting(
        "",
        "PEM file of CAs trusted for the smarthost; empty = system roots",
    )
    opportunistic_tls: bool = setting(
        True,
        "use STARTTLS to MX hosts when offered (not verified, RFC 3207)",
    )
    timeout_connect: int = setting(
        30,
        "seconds to establish the TCP connection to a remote host",
    )
    timeout_greeting: int = setting(
        300,
        "seconds to wait for the 220 greeting (RFC 5321 §4.5.3.2.1)",
    )
    timeout_command: int = setting(
        300,
        "seconds to wait for EHLO/STARTTLS/AUTH/RSET/QUIT replies",
    )
    timeout_mail: int = setting(
        300,
        "seconds to wait for the MAIL reply (RFC 5321 §4.5.3.2.2)",
    )
    timeout_rcpt: int = setting(
        300,
        "seconds to wait for each RCPT reply (RFC 5321 §4.5.3.2.3)",
    )
    timeout_data_init: int = setting(
        120,
        "seconds to wait for the 354 reply to DATA (RFC 5321 §4.5.3.2.4)",
    )
    timeout_data_block: int = setting(
        180,
        "seconds a block of message data may take to send (§4.5.3.2.5)",
    )
    timeout_data_end: int = setting(
        600,
        "seconds to wait for the reply to the final dot (§4.5.3.2.6)",
    )
    max_addresses: int = setting(
        5,
        "remote addresses (MX hosts x IPs) tried per delivery attempt",
    )
    connection_reuse_time: int = setting(
        2,
        "seconds an idle outbound connection is kept for the next message to the same destination (0 = never reuse)",
    )


@dataclass(frozen=True)
class ServerSettings:
    """The server process as a whole."""

    shutdown_grace: int = setting(
        30,
        "seconds SMTP transactions, POP3 and IMAP sessions (and SMTP worker processes) get to finish after SIGTERM before they are cut; keep it under the init system's stop timeout minus 15 (systemd TimeoutStopSec=60)",
        check=at_most(
            MAX_SHUTDOWN_GRACE,
            f"server.shutdown_grace is at most {MAX_SHUTDOWN_GRACE} seconds: an init "
            "system kills a server that takes longer to stop",
        ),
    )


@dataclass(frozen=True)
class AuthSettings:
    """Authentication, shared by SMTP AUTH, POP3 and IMAP: plaintext, penalties, budgets."""

    allow_plaintext: bool = setting(
        False,
        "allow passwords on unencrypted links on every listener",
    )
    max_failures: int = setting(
        5,
        "failed AUTH attempts on one connection before disconnect",
    )
    fail_delays: list[float] = setting(
        [2, 4, 8, 15],
        "seconds to delay the reply to the n-th failure from an IP",
        check=settings_protection.delays,
    )
    penalty_expiry: int = setting(
        900,
        "seconds without a failure after which an IP's AUTH penalty is forgotten (no permanent lock-out)",
    )
    max_concurrent_per_ip: int = setting(
        3,
        "AUTH attempts running at once from one IP (IPv6: per /64) that has failed logins on record; more: 454 4.7.0 / NO [UNAVAILABLE] / -ERR [SYS/TEMP]; 0 = no cap",
    )
    max_userip_connections: int = setting(
        10,
        "logged-in POP3/IMAP sessions of one account from one IP (Dovecot mail_max_userip_connections); more: NO [UNAVAILABLE] / -ERR [IN-USE]; 0 = no limit",
    )
    trusted_ips: Union[str, list[str]] = setting(
        "",
        "address list never delayed or capped by the AUTH penalty (Client IPs are trusted too)",
        check=settings_protection.address_list,
    )
    # Verified-credential cache (cgtwist.storage.credcache), Dovecot's auth_cache_ttl/size.
    credential_cache_ttl: int = setting(
        300,
        "seconds a successful password check is remembered, so the same password for the same stored hash logs in again without argon2 (a changed password never hits; wrong passwords are never cached; emptied on every reload); 0 = off",
        check=at_most(86400, "auth.credential_cache_ttl is at most 86400 seconds (one day)"),
    )
    credential_cache_size: int = setting(
        10000,
        "verified credentials remembered at most (least recently used dropped first, about 100 octets each); 0 = off",
        check=at_most(1000000, "auth.credential_cache_size is at most 1000000"),
    )
    # Per-account failure budget (guessing one account from many IPs), shared by every login.
    account_max_failures: int = setting(
        10,
        "wrong passwords for one account (from any non-Client IP) that lock it for auth.account_lock_time; locked: every login fails like a wrong password except a correct one from a Client IP; 0 = off",
    )
    account_delay: float = setting(
        1.0,
        "seconds the reply to an account's first counted wrong password is held",
        check=settings_protection.number(0, 300),
    )
    account_delay_growth: float = setting(
        2.0,
        "factor the per-account delay grows by with each further wrong password (1 = constant)",
        check=settings_protection.number(1, 10),
    )
    account_max_delay: float = setting(
        16.0,
        "longest per-account delay in seconds; logins to a locked account wait this long",
        check=settings_protection.number(0, 300),
    )
    account_lock_time: int = setting(
        900,
        "seconds an account stays locked; also how long its failures are remembered after the last one",
    )


@dataclass(frozen=True)
class ClientsSettings:
    """Client IPs: the trusted networks."""

    ips: Union[str, list[str]] = setting(
        "",
        "Client IPs (address list: IPs, CIDR, a-b ranges, ; or # comments): trusted networks that may relay and skip RBL/blacklists",
        check=settings_protection.address_list,
    )


@dataclass(frozen=True)
class WhiteholeSettings:
    """White-holed IPs."""

    ips: Union[str, list[str]] = setting(
        "",
        "white-holed IPs (address list): never checked against RBLs or blacklists",
        check=settings_protection.address_list,
    )


@dataclass(frozen=True)
class BlacklistSettings:
    """Blacklisted IPs (at connect) and senders (at MAIL FROM)."""

    mode: str = setting(
        "nonclients",
        "off | nonclients | all: blacklisted IPs (at connect) and senders (at MAIL FROM)",
        check=settings_protection.mode,
    )
    ips: Union[str, list[str]] = setting(
        "",
        "blacklisted IPs (address list): 554 5.7.1 at connect",
        check=settings_protection.address_list,
    )
    senders: Union[str, list[str]] = setting(
        "",
        "blacklisted senders: user@domain, domain (or @domain), *.domain; 550 5.7.1 at MAIL FROM",
        check=settings_protection.sender_list,
    )


@dataclass(frozen=True)
class AutoBlacklistSettings:
    """Temporary blacklisting of offending IPs."""

    threshold: int = setting(
        20,
        "offences (failed AUTHs, disconnects for too many of the client's own 5xx errors, talking before the greeting) within the window that blacklist an IP temporarily (never a Client IP); 0 = off",
    )
    window: int = setting(
        600,
        "seconds over which offences are counted",
    )
    duration: int = setting(
        1800,
        "seconds an offender stays blacklisted",
    )


@dataclass(frozen=True)
class RblSettings:
    """DNSBL check at connect."""

    mode: str = setting(
        "nonclients",
        "off | nonclients | all: DNSBL check at connect",
        check=settings_protection.mode,
    )
    zones: list[str] = setting(
        [],
        "DNSBL zones asked as reversed-ip.zone (zone=127.0.0.2-127.0.0.9 acts on those codes only); 127.255.255.x answers and timeouts count as not listed",
        check=settings_protection.rbl_zones,
    )
    code: int = setting(
        554,
        "reply code for an RBL-listed IP (554; 4xx to defer instead)",
        check=settings_protection.rbl_code,
    )
    action: str = setting(
        "reject",
        "reject (refuse a listed IP at connect with the code above) | tag (accept it; the zones that listed it feed the Server Rules' RBL Listed condition, so spam handling is a rule)",
        check=settings_protection.rbl_action,
    )


@dataclass(frozen=True)
class ReturnPathSettings:
    """MAIL FROM domain must resolve."""

    mode: str = setting(
        "nonclients",
        "off | nonclients | all: MAIL FROM domain must have MX or A/AAAA (NXDOMAIN 550 5.1.8, DNS failure 451 4.4.3)",
        check=settings_protection.mode,
    )


@dataclass(frozen=True)
class SpfSettings:
    """SPF (RFC 7208) at MAIL FROM."""

    mode: str = setting(
        "nonclients",
        "off | nonclients | all: SPF (RFC 7208) at MAIL FROM, HELO identity for <>",
        check=settings_protection.mode,
    )
    actions: dict[str, str] = setting(
        {
            "pass": "tag",
            "fail": "reject",
            "softfail": "tag",
            "neutral": "tag",
            "none": "tag",
            "temperror": "tempfail",
            "permerror": "tag",
        },
        "SPF result -> reject (550 5.7.23) | tempfail (451 4.4.3) | tag (accept + Received-SPF/Authentication-Results) | accept (log only)",
        check=settings_protection.spf_actions,
    )
    timeout: float = setting(
        20,
        "seconds for one whole SPF evaluation (RFC 7208 §4.6.4)",
        check=settings_protection.positive_number,
    )


@dataclass(frozen=True)
class ReverseConnectSettings:
    """Callback verification of the sender at its MX."""

    mode: str = setting(
        "off",
        "off | nonclients | all: callback verification of the sender at its MX (never for authenticated sessions or <>)",
        check=settings_protection.mode,
    )
    timeout: float = setting(
        30,
        "seconds for one whole callback probe",
        check=settings_protection.positive_number,
    )
    fail_open: bool = setting(
        True,
        "on timeout or 4xx from the sender's MX: accept (true) or answer 451 4.1.7 (false)",
    )
    positive_ttl: int = setting(
        86400,
        "seconds a verified sender is cached",
    )
    negative_ttl: int = setting(
        3600,
        "seconds a rejected sender is cached",
    )
    rate_limit: int = setting(
        10,
        "callback probes per sender domain per minute; more fail open/4xx",
    )
    max_concurrency: int = setting(
        10,
        "callback probes running at once",
    )


@dataclass(frozen=True)
class ProtectionSettings:
    """Receiving protection (issue 4), one section per check. Modes: off | nonclients | all.
    "Clients" are Client IPs and, at MAIL FROM, authenticated sessions."""

    whitehole: WhiteholeSettings = field(default_factory=WhiteholeSettings)
    blacklist: BlacklistSettings = field(default_factory=BlacklistSettings)
    autoblacklist: AutoBlacklistSettings = field(default_factory=AutoBlacklistSettings)
    rbl: RblSettings = field(default_factory=RblSettings)
    returnpath: ReturnPathSettings = field(default_factory=ReturnPathSettings)
    spf: SpfSettings = field(default_factory=SpfSettings)
    reverse_connect: ReverseConnectSettings = field(default_factory=ReverseConnectSettings)
    listeners: dict[str, dict[str, str]] = setting(
        {"submission": {"rbl": "off"}},
        'per-listener mode overrides {listener name, port or "submission" (every AUTH-required listener): {blacklist|rbl|returnpath|spf|reverse_connect: mode}}',
        check=settings_protection.mode_map,
    )

    def mode(self, check: str) -> str:
        """The server-wide mode of ``check`` (one of settings_protection.CHECKS)."""
        return str(getattr(self, check).mode)


@dataclass(frozen=True)
class QueueSettings:
    """The queue: retries, lifetime, capacity and concurrency."""

    retry_schedule: list[float] = setting(
        [60, 300, 900, 1800, 3600],
        "seconds between attempts; the last value repeats",
        check=seconds_list,
    )
    max_lifetime: int = setting(
        432000,
        "seconds a message may stay queued before it bounces (5 days)",
    )
    delay_warning: int = setting(
        14400,
        "seconds before a delay warning DSN is sent (0 = never)",
    )
    max_messages: int = setting(
        100000,
        "messages in the spool before new mail is refused with 452 4.3.1",
    )
    local_concurrency: int = setting(
        32,
        "LOCAL deliveries running at once (all accounts)",
    )
    active_window: int = setting(
        10000,
        "messages held in memory by the queue manager at once",
    )
    destination_concurrency: int = setting(
        5,
        "deliveries running at once per logical queue: one remote domain, one pipe (LOCAL accounts: queue.local_destination_concurrency)",
    )
    local_destination_concurrency: int = setting(
        20,
        "LOCAL deliveries running at once into one account (Maildir takes concurrent writers; each waits mostly for its fsyncs)",
    )
    smtp_concurrency: int = setting(
        100,
        "outbound SMTP deliveries running at once (all domains; Postfix default_process_limit)",
    )
    default_concurrency: int = setting(
        10,
        "deliveries running at once per module without its own queue.<module>_concurrency",
    )
    suspend_after: int = setting(
        3,
        "consecutive failed attempts before a logical queue is suspended until its next retry",
    )

    def concurrency(self, module: str) -> int:
        """Deliveries at once of ``module`` (all its logical queues): its own
        ``queue.<module>_concurrency`` where one is declared, else ``default_concurrency``."""
        own = getattr(self, f"{module.lower()}_concurrency", None)
        return own if isinstance(own, int) else self.default_concurrency

    def destination_concurrency_of(self, module: str) -> int:
        """Deliveries at once in one logical queue of ``module``: its own
        ``queue.<module>_destination_concurrency`` where one is declared (LOCAL: an account's
        Maildir takes many writers, where a remote domain wants few connections), else
        ``destination_concurrency``."""
        own = getattr(self, f"{module.lower()}_destination_concurrency", None)
        return own if isinstance(own, int) else self.destination_concurrency


@dataclass(frozen=True)
class Pop3Settings:
    """POP3 sessions."""

    idle_timeout: int = setting(
        600,
        "seconds of inactivity before a POP3 session is closed (RFC 1939: >= 10 min)",
    )


@dataclass(frozen=True)
class ImapSettings:
    """IMAP sessions."""

    idle_timeout: int = setting(
        1800,
        "seconds of inactivity before an authenticated IMAP session is closed (>= 29 min)",
    )
    preauth_timeout: int = setting(
        60,
        "seconds of inactivity before an unauthenticated IMAP session is closed",
    )
    max_literal: int = setting(
        52428800,
        "largest APPEND literal in octets, advertised as APPENDLIMIT",
    )
    max_append_messages: int = setting(
        1000,
        "messages in one APPEND (MULTIAPPEND, RFC 3502), at least 1; more: NO [LIMIT]",
        check=at_least(
            1, "imap.max_append_messages is at least 1: APPEND stores one message or more"
        ),
    )
    max_command_length: int = setting(
        65536,
        "longest IMAP command line in octets",
    )
    max_list_pattern: int = setting(
        1024,
        "longest LIST/LSUB reference plus pattern in octets; longer is BAD",
    )
    max_search_updates: int = setting(
        5,
        "SEARCH RETURN (UPDATE) results one IMAP session keeps up to date (CONTEXT=SEARCH, "
        "RFC 5267); beyond it a search is answered once, with OK [NOUPDATE]",
    )
    workers: int = setting(
        0,
        "IMAP and POP3 worker processes that accept on the IMAP and POP3 listeners (sessions on other CPU cores than the server); 0 = the server process itself. Connection, per-account and login-penalty limits and the active sessions stay the server's, asked over each worker's pipe",
        check=at_most(
            MAX_SMTP_WORKERS,
            f"imap.workers is a number of processes: at most {MAX_SMTP_WORKERS} "
            "(one per CPU core is a good start)",
        ),
        node=True,
    )
    tombstones_kept: int = setting(
        100_000,
        "expunged UIDs each folder remembers with the MODSEQ of their expunge, for QRESYNC's "
        "VANISHED (EARLIER) (RFC 7162 §3.2.5.1); a client that last synced before the oldest "
        "kept hears every UID the folder does not hold",
        check=at_least(1, "imap.tombstones_kept is at least 1: the last expunge is remembered"),
    )
    watch_folders: int = setting(
        10_000,
        "folders with a session open that each IMAP/POP3 process watches with inotify (three "
        "kernel watches each, within sysctl fs.inotify.max_user_watches) so another process's "
        "change (IMAP workers, LOCAL delivery, cgtwist-admin) is pushed at once; beyond it, or "
        "when the kernel refuses a watch, a folder is checked every imap.watch_poll_interval "
        "seconds (logged once); 0 = check every folder that way",
        check=at_most(1_000_000, "imap.watch_folders is at most 1000000"),
    )
    watch_poll_interval: float = setting(
        2.0,
        "seconds between checks of a folder open here that has no inotify watch "
        "(imap.watch_folders reached, or the kernel's limit)",
        check=settings_protection.number(0.1, 60),
    )


@dataclass(frozen=True)
class AccessSettings:
    """POP3 and IMAP connections."""

    max_connections_per_ip: int = setting(
        20,
        "concurrent POP3/IMAP connections from one IP to one listener (Client IPs exempt); 0 = no limit",
    )


@dataclass(frozen=True)
class DsnSettings:
    """Delivery status notifications (bounces)."""

    max_full_size: int = setting(
        1048576,
        "messages larger than this are returned as headers only in bounces unless RET=FULL",
    )


@dataclass(frozen=True)
class PipeSettings:
    """The PIPE module and the Submitted/ folder."""

    app_dir: str = setting(
        "",
        'directory of programs that "program args"@pipe may run; empty = PIPE delivery disabled',
        node=True,
    )
    timeout: int = setting(
        600,
        "seconds a PIPE program may run before it is killed and the delivery retried",
    )
    submitted_scan_interval: int = setting(
        60,
        "seconds between scans of Submitted/ where inotify is unavailable",
    )


@dataclass(frozen=True)
class RouterSettings:
    """The Router table."""

    table: str = setting(
        "",
        "the Router table text, one record per line: [Relay:|NoRelay:][Mail:|Access:|Signal:]<left> = right [; comment]",
        check=settings_protection.router_table,
    )
    max_hops: int = setting(
        10,
        "re-routings of one address before it fails with 5.4.6 routing loop",
    )


def _https_url(key: str, value: object) -> None:
    if not isinstance(value, str) or (value and not value.startswith("https://")):
        raise ValueError(f"{key} must be empty or an https:// URL (RFC 8058)")
    if any(c.isspace() or c in '<>"' for c in value):
        raise ValueError(f"{key} must not contain spaces, quotes or <>")


@dataclass(frozen=True)
class ListsSettings:
    """The LIST module (cgtwist.delivery.listagent, cgtwist.delivery.listtimer)."""

    bounce_limit: int = setting(
        5,
        "bounces of a list subscriber within lists.bounce_window that suspend it (0 = never)",
    )
    bounce_window: int = setting(
        604800,
        "seconds over which a list subscriber's bounces count",
    )
    remove_after: int = setting(
        604800,
        "seconds a subscriber suspended for bounces stays before it is removed",
    )
    moderation_timeout: int = setting(
        604800,
        "seconds a post held for moderation waits for a decision before it is rejected",
    )
    confirm_timeout: int = setting(
        259200,
        "seconds a subscribe or unsubscribe confirmation token stays valid",
    )
    sweep_interval: int = setting(
        60,
        "seconds between the list timer's rounds (digests, moderation timeouts, removals)",
        check=at_least(1, "lists.sweep_interval is at least 1 second"),
    )
    unsubscribe_url: str = setting(
        "",
        "https:// base URL of this server's HTTPS listener (or a proxy to it), whose "
        "/lists/unsubscribe answers RFC 8058 one-click unsubscribe (personalised lists only; "
        "empty = mailto: only)",
        check=_https_url,
    )


def _web_floor(low: int, key: str) -> Check:
    return at_least(low, f"web.{key} is at least {low}")


@dataclass(frozen=True)
class WebSettings:
    """WebAdmin under /admin/ and WebUser under / (cgtwist.web)."""

    session_idle: int = setting(
        1800,
        "seconds a web session lives without a request before it ends (at least 1)",
        check=_web_floor(1, "session_idle"),
    )
    session_lifetime: int = setting(
        43200,
        "seconds a web session lives at most, however busy (at least 1)",
        check=_web_floor(1, "session_lifetime"),
    )
    max_sessions: int = setting(
        10000,
        "web sessions kept at once; a new login beyond it ends the least recently used (at least 1)",
        check=_web_floor(1, "max_sessions"),
    )
    max_request_size: int = setting(
        1048576,
        "octets of a web form (Router table, address lists); larger: 413 (at least 1024)",
        check=_web_floor(1024, "max_request_size"),
    )
    max_text_size: int = setting(
        200000,
        "characters of a Router table or an address list edited in WebAdmin (they are parsed on the server's event loop: about 0.1 s per 100,000); cgtwist-admin takes any size",
        check=_web_floor(1, "max_text_size"),
    )
    idle_timeout: int = setting(
        60,
        "seconds an HTTP connection may sit idle before it is closed (at least 1)",
        check=_web_floor(1, "idle_timeout"),
    )
    max_connections_per_ip: int = setting(
        20,
        "HTTP connections one address may hold open at once (Client IPs exempt); more are closed at once; 0 = no limit",
    )
    metrics_token: str = setting(
        "",
        "token that lets a Prometheus scraper outside the Client IPs read /metrics (sent as 'Authorization: Bearer <token>', over HTTPS); empty = Client IPs only",
        secret=True,
    )
    account_search_rows: int = setting(
        5000,
        "accounts a search on WebAdmin's Accounts page looks at per page (a substring of the name or real name, which no index serves); Next searches on from there (at least 50, the page size)",
        check=_web_floor(50, "account_search_rows"),
    )
    log_view_bytes: int = setting(
        1048576,
        "octets the WebAdmin log viewer reads from the end of the log file per view (at least 4096)",
        check=_web_floor(4096, "log_view_bytes"),
    )
    log_view_lines: int = setting(
        500,
        "log lines the WebAdmin log viewer shows at most, newest first (at least 1)",
        check=_web_floor(1, "log_view_lines"),
    )


RULES_ALLOWED = ("None", "Filter Only", "No Redirect", "Any")  # cgtwist.rules.model


def _rules_allowed(key: str, value: object) -> None:
    if value not in RULES_ALLOWED:
        raise ValueError(f"{key} is one of {', '.join(RULES_ALLOWED)}")


@dataclass(frozen=True)
class RulesSettings:
    """Rules (cgtwist.rules; docs/RULES.md)."""

    allowed: str = setting(
        "Any",
        "RulesAllowed of accounts that set none (nor their domain): None | Filter Only | "
        "No Redirect | Any (CommuniGate's classes)",
        check=_rules_allowed,
    )
    execute: bool = setting(
        False,
        "whether the Execute rule action may run programs (PIPE folder)",
    )
    reply_interval: int = setting(
        604800,
        "seconds before a Reply with answers the same sender again (RFC 3834 §2; 7 days)",
    )
    max_hops: int = setting(
        10,
        "Delivered-To hop markers a message may carry before LOCAL fails it with 5.4.6",
    )
    history_days: int = setting(
        7,
        "days the delivery history (envelope and header section of each message, for cgtwist-admin rules replay) is kept; 0 = none is kept",
        check=at_least(0, "rules.history_days is 0 (off) or more days"),
    )
    history_max_mb: int = setting(
        100,
        "MiB the delivery history may fill (the oldest hours go first; past it, nothing more is kept until they have gone)",
        check=at_least(1, "rules.history_max_mb is at least 1"),
    )


# What a listener entry may hold; anything else is refused, so a typo ("adress") is not
# silently replaced by a default. ``http`` serves WebAdmin and WebUser (tls none or implicit).
LISTENER_PROTOCOLS = ("smtp", "pop3", "imap", "http")
LISTENER_KEYS = ("protocol", "address", "port", "tls", "submission", "allow_plain_auth")


def parse_listener(raw: Mapping[str, Any]) -> ListenerSpec:
    """Validate one listener dict; raises ValueError with a readable reason."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"a listener is an object {{{', '.join(LISTENER_KEYS)}}}, not {raw!r}")
    unknown = sorted(set(raw) - set(LISTENER_KEYS))
    if unknown:
        raise ValueError(f"unknown listener key {unknown[0]!r} (known: {', '.join(LISTENER_KEYS)})")
    proto = str(raw.get("protocol", "")).lower()
    if proto not in LISTENER_PROTOCOLS:
        raise ValueError(
            f"listener protocol must be {', '.join(LISTENER_PROTOCOLS[:-1])} or "
            f"{LISTENER_PROTOCOLS[-1]}, not {proto!r}"
            + (" (HTTPS is http with tls implicit)" if proto == "https" else "")
        )
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"listener port must be 1..65535 (0: any free port), not {port!r}")
    tls = str(raw.get("tls", "none" if proto == "http" else "starttls")).lower()
    if tls not in ("none", "starttls", "implicit"):
        raise ValueError(f"listener tls must be none, starttls or implicit, not {tls!r}")
    if proto == "http" and tls == "starttls":
        raise ValueError("an http listener's tls is none or implicit (HTTP has no STARTTLS)")
    address = raw.get("address", "0.0.0.0")
    try:
        ipaddress.ip_address(address if isinstance(address, str) else "")
    except ValueError:
        raise ValueError(
            f"listener address must be an IP address (0.0.0.0 or :: for all), not {address!r}"
        ) from None
    for flag in ("submission", "allow_plain_auth"):
        if not isinstance(raw.get(flag, False), bool):
            raise ValueError(f"listener {flag} must be true or false, not {raw[flag]!r}")
    if raw.get("submission") and proto != "smtp":
        raise ValueError(f"listener submission applies to smtp listeners only, not {proto}")
    return ListenerSpec(
        protocol=proto,
        port=port,
        address=address,
        tls=tls,
        submission=bool(raw.get("submission", False)),
        allow_plain_auth=bool(raw.get("allow_plain_auth", False)),
    )


def check_listeners(key: str, value: object) -> None:
    """The ``listeners`` setting: null (the built-in defaults) or a list of listener
    entries, no two on one address and port."""
    if value is None:
        return
    if not isinstance(value, list):
        raise ValueError("listeners must be a list")
    specs = [parse_listener(x) for x in value]
    seen = set()
    for s in specs:
        if s.port and (s.address, s.port) in seen:
            raise ValueError(f"two listeners on {s.address}:{s.port}")
        seen.add((s.address, s.port))


@dataclass(frozen=True, init=False, eq=False)
class Settings(Mapping[str, Any]):
    """The settings in force: administrator overrides checked and laid over the defaults.

    Read typed values as attributes (``settings.smtp.max_recipients``). As a mapping it
    answers by name (``settings["smtp.max_recipients"]``), for the CLI and the logs. An
    override that fails its check (a database edited by hand or written by another version)
    is not used: the default stands in and ``problems`` says why, by name, for the log; where
    the default would do harm (listeners, the Router table) the reader consults ``problems``.
    """

    listener_entries: Optional[list[dict[str, Any]]] = setting(
        None,
        "list of sockets: {protocol, address, port, tls: none|starttls|implicit, submission, allow_plain_auth}; null = built-in defaults",
        check=check_listeners,
        name="listeners",
        node=True,
    )
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    clients: ClientsSettings = field(default_factory=ClientsSettings)
    protection: ProtectionSettings = field(default_factory=ProtectionSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    pop3: Pop3Settings = field(default_factory=Pop3Settings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    dsn: DsnSettings = field(default_factory=DsnSettings)
    pipe: PipeSettings = field(default_factory=PipeSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    web: WebSettings = field(default_factory=WebSettings)
    lists: ListsSettings = field(default_factory=ListsSettings)
    # The server's Account Defaults (cgtwist.account_settings): domains and accounts inherit.
    account_defaults: account_settings.AccountDefaults = field(
        default_factory=account_settings.AccountDefaults
    )
    # What the administrator changed (name -> value, as stored) and why any was not used.
    overrides: dict[str, Any] = field(default_factory=dict, repr=False)
    problems: dict[str, str] = field(default_factory=dict, repr=False)
    _values: dict[str, Any] = field(default_factory=dict, repr=False)

    def __init__(self, overrides: Optional[Mapping[str, Any]] = None) -> None:
        given = dict(overrides or {})
        accepted: dict[tuple[str, ...], Any] = {}
        problems: dict[str, str] = {}
        for key, value in given.items():
            spec = SPECS.get(key)
            if spec is None:
                problems[key] = f"unknown setting {key!r}; ignored"
                continue
            try:
                accepted[spec.path] = check_value(spec, value)
            except ValueError as e:
                problems[key] = str(e)
        values = fields_of(type(self), accepted)
        values.update(overrides=given, problems=problems)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_values", {k: self._at(s.path) for k, s in SPECS.items()})

    def _at(self, path: tuple[str, ...]) -> Any:
        obj: Any = self
        for name in path:
            obj = getattr(obj, name)
        return obj

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)

    def listeners(self, privileged: bool) -> list[ListenerSpec]:
        raw = self.listener_entries or default_listeners(privileged)
        return [parse_listener(x) for x in raw]


# The catalogue: every setting by name, from the dataclasses above (the one source).
SPECS: dict[str, Spec] = {s.name: s for s in walk(Settings)}
# name -> (default, description), as the catalogue was once written: kept for readers by name.
DEFAULTS: dict[str, tuple[Any, str]] = {k: (s.default, s.doc) for k, s in SPECS.items()}

# Node settings (docs/CLUSTER.md): what belongs to one server process and its machine rather
# than to the mail system, kept per node (``[server] node`` in the bootstrap file) in the store.
# Every other setting is cluster-wide: every node sharing the database uses the same value.
# ``listeners``: addresses are the machine's own; ``smtp.workers``, ``imap.workers``: processes per machine's
# cores; ``pipe.app_dir``: a directory on the machine's file system.
NODE_SETTINGS = frozenset(k for k, s in SPECS.items() if s.node)


def is_node_setting(key: str) -> bool:
    """True for a setting kept per node, False for a cluster-wide one."""
    return key in NODE_SETTINGS


def validate(key: str, value: object) -> object:
    """Check a value for ``key`` before it is stored; returns it or raises ValueError."""
    spec = SPECS.get(key)
    if spec is None:
        raise ValueError(f"unknown setting {key!r} ('cgtwist-admin settings show' lists them)")
    return check_value(spec, value)


def parse_cli_value(text: str) -> Any:
    """Values on the command line are JSON; bare words are taken as strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class SettingsHolder:
    """Holds the current Settings and tells observers when they change."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.current = settings or Settings()
        self._observers: list[Callable[[Settings], None]] = []

    def subscribe(self, fn: Callable[[Settings], None]) -> None:
        self._observers.append(fn)

    def replace(self, settings: Settings) -> None:
        self.current = settings
        for fn in list(self._observers):
            fn(settings)


# Per-account and per-domain settings (``cgtwist-admin settings set --account/--domain``):
# the one schema of cgtwist.account_settings (``known(scope)``), by name with its type and
# meaning. Anything else is refused rather than stored to do nothing. Other server settings
# do not apply per domain or account. ``admin`` is written by the first start and
# ``account add --admin``.
def validate_scoped(scope: str, key: str, value: object) -> object:
    """Check an account (``scope`` "account") or domain ("domain") setting before it is
    stored; returns the value or raises ValueError naming the key and what is allowed."""
    known = account_settings.known(scope)
    sc = known.get(key)
    if sc is None:
        allowed = f"known: {', '.join(sorted(known))}" if known else f"{scope}s have none yet"
        if key.startswith(account_settings.SERVER_PREFIX):
            hint = f" (the server's default; here: {key[len(account_settings.SERVER_PREFIX) :]})"
        elif key in DEFAULTS:
            hint = " (a server setting: set it without --domain/--account)"
        else:
            hint = ""
        raise ValueError(f"unknown {scope} setting {key!r} ({allowed}){hint}")
    if sc.spec is not None:
        return check_value(sc.spec, value)
    if sc.server_key:  # the same value as the server setting of that name
        return validate(sc.server_key, value)
    if not isinstance(value, bool):
        raise ValueError(f"{scope} setting {key} must be true or false")
    return value


# Values never written to the log (they hold a password).
SECRET_SETTINGS = frozenset(k for k, s in SPECS.items() if s.secret)


def describe_changes(old: Settings, new: Settings, width: int = 120) -> list[tuple[str, str, str]]:
    """(key, old, new) for each setting whose value differs, as short JSON texts for a log
    line: long values are cut to ``width`` characters, secrets show as "(hidden)"."""

    def text(key: str, value: Any) -> str:
        if key in SECRET_SETTINGS and value is not None:
            return "(hidden)"
        out = json.dumps(value, sort_keys=True)
        return out if len(out) <= width else out[: width - 3] + "..."

    keys = sorted(set(old.overrides) | set(new.overrides))
    return [(k, text(k, old.get(k)), text(k, new.get(k))) for k in keys if old.get(k) != new.get(k)]
