"""Dynamic server settings: their names, defaults, validation, and the live holder.

Pure apart from the holder's observer list. The store keeps only the values an administrator
changed (key -> JSON); ``Settings`` merges them over ``DEFAULTS``. Components read the current
``Settings`` from a ``SettingsHolder`` at the moment they need a value, so a change made with
``cgtwist-admin settings set`` applies at once (new connections, next check, next queue run).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Callable, Iterator, Mapping

from cgtwist import settings_protection
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


# Every dynamic setting with its default and a one-line description. Limits follow RFC 5321
# §4.5.3.1 minimums and Postfix's defaults (RELIABILITY.md a2).
DEFAULTS: dict[str, tuple[Any, str]] = {
    "listeners": (
        None,
        "list of sockets: {protocol, address, port, tls: none|starttls|implicit, submission, allow_plain_auth}; null = built-in defaults",
    ),
    # SMTP receiving
    "smtp.max_command_length": (
        2048,
        "longest SMTP command line in octets (RFC 5321 minimum 512); longer: 500 5.5.2",
    ),
    "smtp.max_data_line_length": (
        10000,
        "longest line inside DATA; longer: 552 5.3.4 after the final dot",
    ),
    "smtp.max_message_size": (
        10485760,
        "largest message in octets, advertised as SIZE; larger: 552 5.3.4",
    ),
    "smtp.max_recipients": (100, "recipients per message; more: 452 4.5.3"),
    "smtp.max_errors": (10, "protocol errors before the server answers 421 and disconnects"),
    "smtp.idle_timeout": (
        300,
        "seconds without a command before 421 and disconnect (RFC 5321 §4.5.3.2.7)",
    ),
    "smtp.data_timeout": (
        180,
        "seconds without data during DATA before the transaction is dropped",
    ),
    "smtp.max_connections": (
        500,
        "concurrent SMTP connections in total; more: 421 4.7.0; 0 = no limit",
    ),
    "smtp.max_connections_per_ip": (
        20,
        "concurrent SMTP connections from one IP (Client IPs exempt); more: 421 4.7.0; 0 = no limit",
    ),
    "smtp.workers": (
        0,
        "SMTP worker processes that accept on the SMTP listeners (receiving on other CPU cores than delivery); 0 = the server process itself. Connection, penalty and protection counters are then kept per process",
    ),
    "smtp.max_received_headers": (
        100,
        "Received: headers in a message before it is refused as a loop (RFC 5321 §6.3)",
    ),
    "smtp.tls_handshake_timeout": (30, "seconds allowed for a TLS handshake"),
    # Slow clients (RELIABILITY.md #54): deadlines count progress, not bytes, so a client
    # trickling one byte every few seconds is dropped (421 4.4.2) where the idle timer is not.
    "smtp.command_deadline": (
        60,
        "seconds a command line may take from its first octet to its CRLF; slower: 421 4.4.2; 0 = none",
    ),
    "smtp.data_deadline": (
        600,
        "seconds DATA may take, plus smtp.data_min_rate's allowance for the octets sent; slower: 421 4.4.2 and the message is discarded; 0 = none",
    ),
    "smtp.data_min_rate": (
        1024,
        "octets per second that earn DATA more time: n octets may take smtp.data_deadline + n / rate seconds; 0 = a fixed smtp.data_deadline",
    ),
    "smtp.session_deadline": (
        3600,
        "seconds one SMTP connection may last; then 421 4.4.2 after the reply being worked on (a message in DATA is finished first); 0 = none",
    ),
    "smtp.greeting_delay": (
        0,
        "seconds the 220 banner waits for clients that are not Client IPs on non-submission listeners; input before the banner: 554 and close (Postfix pregreet test); 0 = off, 2 suggested",
    ),
    # Sender addresses of authenticated sessions (RELIABILITY.md #44; cgtwist.core.senders)
    "smtp.restrict_sender": (
        True,
        "an authenticated session's MAIL FROM must be its own address, an alias or Router address that routes to it, a smtp.send_as entry, or (accounts with the admin flag) any address of its domain; else 553 5.7.1; <> is always allowed",
    ),
    "smtp.check_from_header": (
        False,
        "authenticated sessions: every From: header address must pass the smtp.restrict_sender rule, else 550 5.7.1 after DATA",
    ),
    "smtp.send_as": (
        "",
        "addresses authenticated accounts may also send as: user@domain or a pattern with * (e.g. *@lists.example.com), one per line or comma; set on the server (every account) or on an account (cgtwist-admin settings set --account)",
    ),
    # Stopping
    "server.shutdown_grace": (
        30,
        "seconds SMTP transactions, POP3 and IMAP sessions (and SMTP worker processes) get to finish after SIGTERM before they are cut; keep it under the init system's stop timeout minus 15 (systemd TimeoutStopSec=60)",
    ),
    # Authentication (shared by SMTP AUTH, POP3 and IMAP)
    "auth.allow_plaintext": (False, "allow passwords on unencrypted links on every listener"),
    "auth.max_failures": (5, "failed AUTH attempts on one connection before disconnect"),
    "auth.fail_delays": (
        [2, 4, 8, 15],
        "seconds to delay the reply to the n-th failure from an IP",
    ),
    "auth.penalty_expiry": (
        900,
        "seconds without a failure after which an IP's AUTH penalty is forgotten (no permanent lock-out)",
    ),
    "auth.max_concurrent_per_ip": (
        3,
        "AUTH attempts running at once from one IP (IPv6: per /64) that has failed logins on record; more: 454 4.7.0 / NO [UNAVAILABLE] / -ERR [SYS/TEMP]; 0 = no cap",
    ),
    "auth.max_userip_connections": (
        10,
        "logged-in POP3/IMAP sessions of one account from one IP (Dovecot mail_max_userip_connections); more: NO [UNAVAILABLE] / -ERR [IN-USE]; 0 = no limit",
    ),
    "auth.trusted_ips": (
        "",
        "address list never delayed or capped by the AUTH penalty (Client IPs are trusted too)",
    ),
    # Per-account failure budget (guessing one account from many IPs), shared by every login.
    "auth.account_max_failures": (
        10,
        "wrong passwords for one account (from any non-Client IP) that lock it for auth.account_lock_time; locked: every login fails like a wrong password except a correct one from a Client IP; 0 = off",
    ),
    "auth.account_delay": (
        1.0,
        "seconds the reply to an account's first counted wrong password is held",
    ),
    "auth.account_delay_growth": (
        2.0,
        "factor the per-account delay grows by with each further wrong password (1 = constant)",
    ),
    "auth.account_max_delay": (
        16.0,
        "longest per-account delay in seconds; logins to a locked account wait this long",
    ),
    "auth.account_lock_time": (
        900,
        "seconds an account stays locked; also how long its failures are remembered after the last one",
    ),
    # Receiving protection (issue 4). Modes: off | nonclients | all. "Clients" are Client IPs and,
    # at MAIL FROM, authenticated sessions.
    "clients.ips": (
        "",
        "Client IPs (address list: IPs, CIDR, a-b ranges, ; or # comments): trusted networks that may relay and skip RBL/blacklists",
    ),
    "protection.whitehole.ips": (
        "",
        "white-holed IPs (address list): never checked against RBLs or blacklists",
    ),
    "protection.blacklist.mode": (
        "nonclients",
        "off | nonclients | all: blacklisted IPs (at connect) and senders (at MAIL FROM)",
    ),
    "protection.blacklist.ips": ("", "blacklisted IPs (address list): 554 5.7.1 at connect"),
    "protection.blacklist.senders": (
        "",
        "blacklisted senders: user@domain, domain (or @domain), *.domain; 550 5.7.1 at MAIL FROM",
    ),
    "protection.autoblacklist.threshold": (
        20,
        "offences (failed AUTHs, disconnects for too many of the client's own 5xx errors, talking before the greeting) within the window that blacklist an IP temporarily (never a Client IP); 0 = off",
    ),
    "protection.autoblacklist.window": (600, "seconds over which offences are counted"),
    "protection.autoblacklist.duration": (1800, "seconds an offender stays blacklisted"),
    "protection.rbl.mode": ("nonclients", "off | nonclients | all: DNSBL check at connect"),
    "protection.rbl.zones": (
        [],
        "DNSBL zones asked as reversed-ip.zone (zone=127.0.0.2-127.0.0.9 acts on those codes only); 127.255.255.x answers and timeouts count as not listed",
    ),
    "protection.rbl.code": (554, "reply code for an RBL-listed IP (554; 4xx to defer instead)"),
    "protection.returnpath.mode": (
        "nonclients",
        "off | nonclients | all: MAIL FROM domain must have MX or A/AAAA (NXDOMAIN 550 5.1.8, DNS failure 451 4.4.3)",
    ),
    "protection.spf.mode": (
        "nonclients",
        "off | nonclients | all: SPF (RFC 7208) at MAIL FROM, HELO identity for <>",
    ),
    "protection.spf.actions": (
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
    ),
    "protection.spf.timeout": (20, "seconds for one whole SPF evaluation (RFC 7208 §4.6.4)"),
    "protection.reverse_connect.mode": (
        "off",
        "off | nonclients | all: callback verification of the sender at its MX (never for authenticated sessions or <>)",
    ),
    "protection.reverse_connect.timeout": (30, "seconds for one whole callback probe"),
    "protection.reverse_connect.fail_open": (
        True,
        "on timeout or 4xx from the sender's MX: accept (true) or answer 451 4.1.7 (false)",
    ),
    "protection.reverse_connect.positive_ttl": (86400, "seconds a verified sender is cached"),
    "protection.reverse_connect.negative_ttl": (3600, "seconds a rejected sender is cached"),
    "protection.reverse_connect.rate_limit": (
        10,
        "callback probes per sender domain per minute; more fail open/4xx",
    ),
    "protection.reverse_connect.max_concurrency": (10, "callback probes running at once"),
    "protection.listeners": (
        {"submission": {"rbl": "off"}},
        'per-listener mode overrides {listener name, port or "submission" (every AUTH-required listener): {blacklist|rbl|returnpath|spf|reverse_connect: mode}}',
    ),
    # Queue and delivery
    "queue.retry_schedule": (
        [60, 300, 900, 1800, 3600],
        "seconds between attempts; the last value repeats",
    ),
    "queue.max_lifetime": (432000, "seconds a message may stay queued before it bounces (5 days)"),
    "queue.delay_warning": (14400, "seconds before a delay warning DSN is sent (0 = never)"),
    "queue.max_messages": (
        100000,
        "messages in the spool before new mail is refused with 452 4.3.1",
    ),
    "queue.local_concurrency": (32, "LOCAL deliveries running at once (all accounts)"),
    "queue.active_window": (10000, "messages held in memory by the queue manager at once"),
    "queue.destination_concurrency": (
        5,
        "deliveries running at once per logical queue: one remote domain, one pipe (LOCAL accounts: queue.local_destination_concurrency)",
    ),
    "queue.local_destination_concurrency": (
        20,
        "LOCAL deliveries running at once into one account (Maildir takes concurrent writers; each waits mostly for its fsyncs)",
    ),
    "queue.smtp_concurrency": (
        100,
        "outbound SMTP deliveries running at once (all domains; Postfix default_process_limit)",
    ),
    "queue.default_concurrency": (
        10,
        "deliveries running at once per module without its own queue.<module>_concurrency",
    ),
    "queue.suspend_after": (
        3,
        "consecutive failed attempts before a logical queue is suspended until its next retry",
    ),
    # Mail access
    "pop3.idle_timeout": (
        600,
        "seconds of inactivity before a POP3 session is closed (RFC 1939: >= 10 min)",
    ),
    "imap.idle_timeout": (
        1800,
        "seconds of inactivity before an authenticated IMAP session is closed (>= 29 min)",
    ),
    "imap.preauth_timeout": (
        60,
        "seconds of inactivity before an unauthenticated IMAP session is closed",
    ),
    "imap.max_literal": (52428800, "largest APPEND literal in octets, advertised as APPENDLIMIT"),
    "imap.max_append_messages": (
        1000,
        "messages in one APPEND (MULTIAPPEND, RFC 3502), at least 1; more: NO [LIMIT]",
    ),
    "imap.max_command_length": (65536, "longest IMAP command line in octets"),
    "imap.max_list_pattern": (
        1024,
        "longest LIST/LSUB reference plus pattern in octets; longer is BAD",
    ),
    "access.max_connections_per_ip": (
        20,
        "concurrent POP3/IMAP connections from one IP to one listener (Client IPs exempt); 0 = no limit",
    ),
    # Outbound SMTP (RFC 5321 §4.5.3.2 timeouts, seconds)
    "smtp.remote_port": (25, "TCP port of remote MX hosts (tests point it at loopback sinks)"),
    "smtp.relayhost": ("", "smarthost as host:port or [host]:port; empty = deliver by MX"),
    "smtp.relayhost_auth": (
        None,
        'smarthost login as {"user": ..., "password": ...}; needs verified TLS',
    ),
    "smtp.relayhost_ca_file": (
        "",
        "PEM file of CAs trusted for the smarthost; empty = system roots",
    ),
    "smtp.opportunistic_tls": (
        True,
        "use STARTTLS to MX hosts when offered (not verified, RFC 3207)",
    ),
    "smtp.timeout_connect": (30, "seconds to establish the TCP connection to a remote host"),
    "smtp.timeout_greeting": (300, "seconds to wait for the 220 greeting (RFC 5321 §4.5.3.2.1)"),
    "smtp.timeout_command": (300, "seconds to wait for EHLO/STARTTLS/AUTH/RSET/QUIT replies"),
    "smtp.timeout_mail": (300, "seconds to wait for the MAIL reply (RFC 5321 §4.5.3.2.2)"),
    "smtp.timeout_rcpt": (300, "seconds to wait for each RCPT reply (RFC 5321 §4.5.3.2.3)"),
    "smtp.timeout_data_init": (
        120,
        "seconds to wait for the 354 reply to DATA (RFC 5321 §4.5.3.2.4)",
    ),
    "smtp.timeout_data_block": (
        180,
        "seconds a block of message data may take to send (§4.5.3.2.5)",
    ),
    "smtp.timeout_data_end": (600, "seconds to wait for the reply to the final dot (§4.5.3.2.6)"),
    "smtp.max_addresses": (5, "remote addresses (MX hosts x IPs) tried per delivery attempt"),
    "smtp.connection_reuse_time": (
        2,
        "seconds an idle outbound connection is kept for the next message to the same destination (0 = never reuse)",
    ),
    "dsn.max_full_size": (
        1048576,
        "messages larger than this are returned as headers only in bounces unless RET=FULL",
    ),
    # PIPE module
    "pipe.app_dir": (
        "",
        'directory of programs that "program args"@pipe may run; empty = PIPE delivery disabled',
    ),
    "pipe.timeout": (
        600,
        "seconds a PIPE program may run before it is killed and the delivery retried",
    ),
    "pipe.submitted_scan_interval": (
        60,
        "seconds between scans of Submitted/ where inotify is unavailable",
    ),
    # LIST module (cgtwist.delivery.listagent, cgtwist.delivery.listtimer)
    "lists.bounce_limit": (
        5,
        "bounces of a list subscriber within lists.bounce_window that suspend it (0 = never)",
    ),
    "lists.bounce_window": (604800, "seconds over which a list subscriber's bounces count"),
    "lists.remove_after": (
        604800,
        "seconds a subscriber suspended for bounces stays before it is removed",
    ),
    "lists.moderation_timeout": (
        604800,
        "seconds a post held for moderation waits for a decision before it is rejected",
    ),
    "lists.confirm_timeout": (
        259200,
        "seconds a subscribe or unsubscribe confirmation token stays valid",
    ),
    "lists.sweep_interval": (
        60,
        "seconds between the list timer's rounds (digests, moderation timeouts, removals)",
    ),
    "lists.unsubscribe_url": (
        "",
        "https:// base URL of the web service answering RFC 8058 one-click unsubscribe "
        "(personalised lists only; empty = mailto: only)",
    ),
    # Router
    "router.table": (
        "",
        "the Router table text, one record per line: [Relay:|NoRelay:][Mail:|Access:|Signal:]<left> = right [; comment]",
    ),
    "router.max_hops": (10, "re-routings of one address before it fails with 5.4.6 routing loop"),
}


# Node settings (docs/CLUSTER.md): what belongs to one server process and its machine rather
# than to the mail system, kept per node (``[server] node`` in the bootstrap file) in the store.
# Every other setting is cluster-wide: every node sharing the database uses the same value.
# ``listeners``: addresses are the machine's own; ``smtp.workers``: processes per machine's
# cores; ``pipe.app_dir``: a directory on the machine's file system.
NODE_SETTINGS = frozenset({"listeners", "smtp.workers", "pipe.app_dir"})


def is_node_setting(key: str) -> bool:
    """True for a setting kept per node, False for a cluster-wide one."""
    return key in NODE_SETTINGS


class Settings(Mapping[str, Any]):
    """An immutable view: administrator overrides merged over DEFAULTS."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._values = {k: v for k, (v, _doc) in DEFAULTS.items()}
        self._values.update(overrides or {})
        self.overrides = dict(overrides or {})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    # Mapping's mixins go through __getitem__ and a KeyError; these are read for every
    # command of every session, so they ask the dict directly.
    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def listeners(self, privileged: bool) -> list[ListenerSpec]:
        raw = self._values.get("listeners") or default_listeners(privileged)
        return [parse_listener(x) for x in raw]


# What a listener entry may hold; anything else is refused, so a typo ("adress") is not
# silently replaced by a default. HTTP waits for the web interface (WebAdmin) to exist.
LISTENER_PROTOCOLS = ("smtp", "pop3", "imap")
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
            + (" (cgtwist has no web interface yet)" if proto in ("http", "https") else "")
        )
    port = raw.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"listener port must be 1..65535 (0: any free port), not {port!r}")
    tls = str(raw.get("tls", "starttls")).lower()
    if tls not in ("none", "starttls", "implicit"):
        raise ValueError(f"listener tls must be none, starttls or implicit, not {tls!r}")
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


MAX_SMTP_WORKERS = 64
MAX_SHUTDOWN_GRACE = 600


def validate(key: str, value: Any) -> Any:
    """Check a value for ``key`` before it is stored; returns it or raises ValueError."""
    if key not in DEFAULTS:
        raise ValueError(f"unknown setting {key!r} ('cgtwist-admin settings show' lists them)")
    default = DEFAULTS[key][0]
    if key == "listeners":
        if value is not None:
            if not isinstance(value, list):
                raise ValueError("listeners must be a list")
            specs = [parse_listener(x) for x in value]
            seen = set()
            for s in specs:
                if s.port and (s.address, s.port) in seen:
                    raise ValueError(f"two listeners on {s.address}:{s.port}")
                seen.add((s.address, s.port))
        return value
    settings_protection.validate(key, value)  # protection, AUTH penalty, Router table
    if key in settings_protection.FRACTIONAL_KEYS:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer")
        if key == "server.shutdown_grace" and value > MAX_SHUTDOWN_GRACE:
            raise ValueError(
                f"server.shutdown_grace is at most {MAX_SHUTDOWN_GRACE} seconds: an init "
                "system kills a server that takes longer to stop"
            )
        if key == "imap.max_append_messages" and value < 1:
            raise ValueError(
                "imap.max_append_messages is at least 1: APPEND stores one message or more"
            )
        if key == "lists.sweep_interval" and value < 1:
            raise ValueError("lists.sweep_interval is at least 1 second")
        if key == "smtp.workers" and value > MAX_SMTP_WORKERS:
            raise ValueError(
                f"smtp.workers is a number of processes: at most {MAX_SMTP_WORKERS} "
                "(one per CPU core is a good start)"
            )
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list")
    elif key == "lists.unsubscribe_url":
        if not isinstance(value, str) or (value and not value.startswith("https://")):
            raise ValueError("lists.unsubscribe_url must be empty or an https:// URL (RFC 8058)")
        if any(c.isspace() or c in '<>"' for c in value):
            raise ValueError("lists.unsubscribe_url must not contain spaces, quotes or <>")
    return value


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
# exactly the keys something reads, with their type and meaning. Anything else is refused
# rather than stored to do nothing. Server settings (DEFAULTS) do not apply per domain or
# account. ``admin`` is written by the first start (postmaster) and ``account add --admin``.
ACCOUNT_SETTINGS: dict[str, tuple[type, str]] = {
    "admin": (
        bool,
        "a server administrator: shown as [admin] by 'account list', may send as any "
        "address of its domain; postmaster has it from the first start",
    ),
    "smtp.send_as": (
        object,
        "addresses and * patterns this account may also send as "
        "(cgtwist.core.senders), validated as the server setting",
    ),
}
DOMAIN_SETTINGS: dict[str, tuple[type, str]] = {}


def validate_scoped(scope: str, key: str, value: Any) -> Any:
    """Check an account (``scope`` "account") or domain ("domain") setting before it is
    stored; returns the value or raises ValueError naming the key and what is allowed."""
    known = ACCOUNT_SETTINGS if scope == "account" else DOMAIN_SETTINGS
    if key not in known:
        allowed = f"known: {', '.join(sorted(known))}" if known else f"{scope}s have none yet"
        hint = " (a server setting: set it without --domain/--account)" if key in DEFAULTS else ""
        raise ValueError(f"unknown {scope} setting {key!r} ({allowed}){hint}")
    want, _doc = known[key]
    if want is object:  # the same value as the server setting of that name
        return validate(key, value)
    if want is bool and not isinstance(value, bool):
        raise ValueError(f"{scope} setting {key} must be true or false")
    if want is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{scope} setting {key} must be a non-negative integer")
    if want is str and not isinstance(value, str):
        raise ValueError(f"{scope} setting {key} must be a string")
    return value


# Values never written to the log (they hold a password).
SECRET_SETTINGS = frozenset({"smtp.relayhost_auth"})


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
