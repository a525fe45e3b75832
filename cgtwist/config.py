"""Bootstrap configuration: the one file read once at start (``etc/cgtwist.conf``, TOML).

Owns parsing and validating that file into a frozen ``BootstrapConfig``. Everything an
administrator changes at run time lives in the store instead (see cgtwist.settings). A bad file
raises ConfigError whose message names the file, the line and the key.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from cgtwist import paths
from cgtwist.errors import ConfigError

ENV_CONFIG = "CGTWIST_CONFIG"

_KNOWN: dict[str, dict[str, type]] = {
    "server": {
        "base_dir": str,
        "main_domain": str,
        "hostname": str,
        "unprivileged_ports": bool,
        "umask": str,
        "node": str,
        "runtime": str,
    },
    "database": {"url": str, "pool_min": int, "pool_max": int, "timeout": float},
    "tls": {"certificate": str, "key": str},
    "log": {"level": str, "max_size": int, "keep": int, "daily": bool},
    "dns": {"nameservers": list, "timeout": float},
}

_LEVELS = ("debug", "info", "warn", "error", "critical")
# [server] runtime: the measured shortcuts through Twisted's internals, or stock Twisted
# (cgtwist.runtime).
RUNTIMES = ("tuned", "plain")

# The node a server is when its bootstrap file names none: a single server keeps working
# unchanged, its node settings (listeners) migrated to this node (docs/CLUSTER.md).
DEFAULT_NODE = "default"
# A node name: a DNS label, so it can double as a host name part and is safe in SQL rows,
# log lines and NOTIFY payloads.
_NODE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_node(name: str) -> str:
    """Validate a node name (lower-case letters, digits and inner hyphens, at most 63)."""
    if not _NODE_RE.match(name):
        raise ValueError(
            f"invalid node name {name!r} (want lower-case letters, digits and "
            "inner hyphens, at most 63)"
        )
    return name


@dataclass(frozen=True)
class BootstrapConfig:
    """Static settings; paths are absolute."""

    base_dir: str
    main_domain: str
    hostname: str
    database_url: str
    certificate: str
    key: str
    generated_certificate: bool  # True when no certificate was configured: make one on start
    log_level: str = "info"
    unprivileged_ports: Optional[bool] = None  # None: decide by whether we run as root
    nameservers: tuple[str, ...] = ()
    dns_timeout: float = 5.0
    pool_min: int = 1
    pool_max: int = 4
    umask: int = 0o077  # files and directories the server and cgtwist-admin create
    log_max_size: int = 10 * 1024 * 1024  # twistd's --logfile rotates past this size (0: never)
    log_keep: int = 10  # rotated log files kept (cgtwist.log.1 .. .N)
    log_daily: bool = False  # also rotate at the first line after midnight
    database_timeout: float = 10.0  # seconds one store call may take (cgtwist.storage.database)
    source: str = ""  # the file it was read from, for messages
    main_domain_explicit: bool = True  # False: defaulted to the host name (the store's wins)
    node: str = DEFAULT_NODE  # which node's settings (listeners...) this server uses
    runtime: str = "tuned"  # "plain": stock Twisted instead of cgtwist.runtime's pieces

    @property
    def queue_dir(self) -> str:
        return os.path.join(self.base_dir, paths.QUEUE_DIR)

    @property
    def control_socket(self) -> str:
        return os.path.join(self.base_dir, paths.CONTROL_SOCKET)


def _line_of(text: str, section: str, key: str) -> int:
    """Best-effort line number of ``key`` inside ``[section]`` for error messages."""
    current = ""
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[([^\]]+)\]", s)
        if m:
            current = m.group(1).strip()
            if not key and current == section:
                return no
            continue
        if current == section and re.match(rf"^{re.escape(key)}\s*=", s):
            return no
    return 0


def _fail(source: str, text: str, section: str, key: str, why: str) -> ConfigError:
    line = _line_of(text, section, key) if text else 0
    where = f"{source}:{line}" if line else source
    name = f"{section}.{key}" if key else section
    return ConfigError(f"{where}: {name}: {why}")


def _syntax_error(source: str, e: tomllib.TOMLDecodeError) -> ConfigError:
    """``FILE:LINE: problem`` from tomllib's "problem (at line N, column M)"."""
    text = str(e)
    m = re.search(r"\s*\(at line (\d+), column \d+\)$", text)
    if m is None:
        return ConfigError(f"{source}: {text}")
    return ConfigError(f"{source}:{m.group(1)}: {text[: m.start()]}")


def _default_hostname() -> str:
    name = socket.getfqdn()
    return (
        name
        if name and name != "localhost" and "." in name
        else socket.gethostname() or "localhost"
    )


def parse(
    text: str,
    source: str = "<string>",
    base_for_relative: Optional[str] = None,
    overrides: Optional[Mapping[str, str]] = None,
) -> BootstrapConfig:
    """Parse TOML text into a BootstrapConfig; ``overrides`` (e.g. --base-dir) win over the file."""
    try:
        data: dict[str, Any] = tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(source, e) from None
    for section, values in data.items():
        if section not in _KNOWN:
            raise _fail(source, text, section, "", "unknown section")
        if not isinstance(values, dict):
            raise _fail(source, text, section, "", "must be a table")
        for key, value in values.items():
            want = _KNOWN[section].get(key)
            if want is None:
                raise _fail(source, text, section, key, "unknown key")
            ok = isinstance(value, want) or (want is float and isinstance(value, int))
            if want is int and isinstance(value, bool):
                ok = False
            if not ok:
                raise _fail(source, text, section, key, f"must be a {want.__name__}")

    def get(section: str, key: str, default: Any) -> Any:
        return data.get(section, {}).get(key, default)

    # Paths written in the file are relative to the file's folder (it and they move together);
    # a path given on the command line (``overrides``) is relative to the current directory,
    # as every command-line tool's paths are.
    rel = base_for_relative or os.getcwd()
    overrides = overrides or {}
    if overrides.get("base_dir"):
        base = os.path.abspath(os.path.expanduser(overrides["base_dir"]))
    else:
        base = os.path.abspath(
            os.path.join(rel, os.path.expanduser(get("server", "base_dir", "spool")))
        )
    hostname = get("server", "hostname", "") or _default_hostname()
    explicit = bool(overrides.get("main_domain") or get("server", "main_domain", ""))
    main = overrides.get("main_domain") or get("server", "main_domain", "") or hostname
    try:
        main = paths.check_domain(main)
    except ValueError:
        raise _fail(
            source, text, "server", "main_domain", f"invalid domain name {main!r}"
        ) from None
    url = get("database", "url", "") or "sqlite:///" + os.path.join(base, paths.DB_FILE)
    if not (
        url.startswith("sqlite:///")
        or url.startswith("postgresql://")
        or url.startswith("postgres://")
    ):
        raise _fail(source, text, "database", "url", "must start with sqlite:/// or postgresql://")
    cert = get("tls", "certificate", "")
    key = get("tls", "key", "")
    if bool(cert) != bool(key):
        raise _fail(
            source, text, "tls", "key" if cert else "certificate", "certificate and key go together"
        )
    generated = not cert
    if generated:
        cert = os.path.join(base, paths.TLS_DIR, "cert.pem")
        key = os.path.join(base, paths.TLS_DIR, "key.pem")
    else:
        cert = os.path.abspath(os.path.join(rel, cert))
        key = os.path.abspath(os.path.join(rel, key))
    level = get("log", "level", "info").lower()
    if level not in _LEVELS:
        raise _fail(source, text, "log", "level", f"must be one of {', '.join(_LEVELS)}")
    ns = get("dns", "nameservers", [])
    for entry in ns:
        if not isinstance(entry, str) or not re.match(r"^[0-9a-fA-F:.\[\]]+(:\d+)?$", entry):
            raise _fail(
                source, text, "dns", "nameservers", f"bad entry {entry!r} (want ip or ip:port)"
            )
    timeout = float(get("dns", "timeout", 5.0))
    if timeout <= 0:
        raise _fail(source, text, "dns", "timeout", "must be positive")
    pmin, pmax = get("database", "pool_min", 1), get("database", "pool_max", 4)
    if not (1 <= pmin <= pmax):
        raise _fail(source, text, "database", "pool_max", "need 1 <= pool_min <= pool_max")
    db_timeout = float(get("database", "timeout", 10.0))
    if not 0 < db_timeout <= 3600:
        raise _fail(source, text, "database", "timeout", "must be between 0 and 3600 seconds")
    unpriv = get("server", "unprivileged_ports", None)
    umask_text = get("server", "umask", "0077")
    if not re.fullmatch(r"0?[0-7]{3}", umask_text) or not int(umask_text, 8) & 0o002:
        raise _fail(
            source,
            text,
            "server",
            "umask",
            f"must be an octal mask such as 0077 or 0027 that removes write access for "
            f"others, not {umask_text!r}",
        )
    max_size, keep = get("log", "max_size", 10 * 1024 * 1024), get("log", "keep", 10)
    if max_size != 0 and max_size < 65536:
        raise _fail(
            source, text, "log", "max_size", "must be 0 (no size limit) or at least 65536 bytes"
        )
    if not 1 <= keep <= 1000:
        raise _fail(source, text, "log", "keep", "must be 1..1000 (rotated files kept)")
    node = get("server", "node", DEFAULT_NODE)
    try:
        node = check_node(node)
    except ValueError as e:
        raise _fail(source, text, "server", "node", str(e)) from None
    runtime = get("server", "runtime", "tuned")
    if runtime not in RUNTIMES:
        raise _fail(
            source,
            text,
            "server",
            "runtime",
            f"must be one of {', '.join(RUNTIMES)}, not {runtime!r}",
        )
    return BootstrapConfig(
        base_dir=base,
        main_domain=main,
        hostname=hostname,
        database_url=url,
        certificate=cert,
        key=key,
        generated_certificate=generated,
        log_level=level,
        unprivileged_ports=unpriv,
        nameservers=tuple(ns),
        dns_timeout=timeout,
        pool_min=pmin,
        pool_max=pmax,
        database_timeout=db_timeout,
        source=source,
        main_domain_explicit=explicit,
        umask=int(umask_text, 8),
        log_max_size=max_size,
        log_keep=keep,
        log_daily=get("log", "daily", False),
        node=node,
        runtime=runtime,
    )


def load(
    path: Optional[str] = None, overrides: Optional[Mapping[str, str]] = None
) -> BootstrapConfig:
    """Read the bootstrap file. ``path`` None: $CGTWIST_CONFIG, else defaults with no file.

    Relative paths inside the file are relative to the file's directory; a relative
    ``base_dir`` in ``overrides`` (``--base-dir``) is relative to the current directory.
    """
    path = path or os.environ.get(ENV_CONFIG) or None
    if not path:
        return parse("", "<defaults>", None, overrides)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse(text, path, os.path.dirname(os.path.abspath(path)), overrides)
