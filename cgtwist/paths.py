"""Where things live under the base directory, and the only way to turn names into paths.

Pure: computes paths and validates names, never touches the disk. Every path derived from a
domain, account or mailbox name goes through here and is checked to stay inside its parent
(RELIABILITY.md a8: Maildir path traversal, CVE-2022-22931).
"""

from __future__ import annotations

import os
import re

from cgtwist.errors import InvalidName

# RFC 1035-style host names, lower-cased; no leading/trailing dot or hyphen per label.
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# Account names: a conservative dot-atom subset, no leading dot, at most 64 octets.
_ACCOUNT_RE = re.compile(r"^[a-z0-9_+=-][a-z0-9._+=-]{0,63}$")

QUEUE_DIR = "Queue"
CORRUPT_DIR = os.path.join("Queue", "corrupt")
# Written by SMTP worker processes (smtp.workers); the server moves each file into Queue/.
INCOMING_DIR = os.path.join("Queue", "incoming")
# Finished spool files kept for reuse by new messages (cgtwist.spool.files.Recycler).
FREE_DIR = os.path.join("Queue", "free")
SUBMITTED_DIR = "Submitted"
DOMAINS_DIR = "Domains"
TLS_DIR = "tls"
DB_FILE = "cgtwist.db"
CONTROL_SOCKET = "cgtwist.ctl"


def check_domain(name: str) -> str:
    """Return the lower-cased domain name or raise InvalidName."""
    n = name.strip().lower().rstrip(".")
    if not _DOMAIN_RE.match(n):
        raise InvalidName(f"invalid domain name: {name!r}")
    return n


def check_account(name: str) -> str:
    """Return the lower-cased account name or raise InvalidName (no '/', no '..', no leading '.')."""
    n = name.strip().lower()
    if not _ACCOUNT_RE.match(n) or ".." in n:
        raise InvalidName(f"invalid account name: {name!r}")
    return n


def inside(parent: str, child: str) -> str:
    """Return ``child`` if its real path lies within ``parent``'s, else raise InvalidName.

    Uses commonpath on resolved paths, never a string prefix (``a`` vs ``adm``).
    """
    p = os.path.realpath(parent)
    c = os.path.realpath(child)
    if os.path.commonpath([p, c]) != p:
        raise InvalidName(f"path escapes {parent!r}")
    return child


def domain_dir(base: str, domain: str) -> str:
    root = os.path.join(base, DOMAINS_DIR)
    return inside(root, os.path.join(root, check_domain(domain)))


def account_dir(base: str, domain: str, account: str) -> str:
    """``<base>/Domains/<domain>/<account>``: the account's private directory."""
    ddir = domain_dir(base, domain)
    return inside(ddir, os.path.join(ddir, check_account(account)))


def maildir(base: str, domain: str, account: str) -> str:
    """The account's Maildir (INBOX; Maildir++ subfolders are ``.Name`` inside it)."""
    return os.path.join(account_dir(base, domain, account), "Maildir")
