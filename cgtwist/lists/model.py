"""A mailing list and its subscribers as values, and the checks on what an administrator sets.

Owns the names and meanings of a list's fields (CommuniGate's LIST module: owner, posting
policy, size limit, subject tag, footer, Reply-To, digest interval, archive) and of a
subscriber's mode; refuses a value the LIST agent would not act on. It stores nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

MODES = ("feed", "digest", "index", "null", "banned")
POLICIES = ("anyone", "subscribers", "moderated")
REPLY_TO = ("none", "list", "sender")
STATES = ("active", "pending", "suspended")

# The list's own fields, with their type and what the LIST agent does with them: anything
# else is refused (a setting the server does not act on is never stored).
FIELDS: dict[str, tuple[type, str]] = {
    "owner": (str, "the account (local@domain) notified of held messages and bounces"),
    "description": (str, "one line shown in List-Id and in the help and digest headers"),
    "policy": (str, "who may post: anyone, subscribers (feed/digest/index/null), moderated"),
    "size_limit": (int, "largest post in octets; 0 = no limit of the list's own"),
    "subject_tag": (str, "text put in front of the Subject, e.g. [dev] (empty: none)"),
    "footer": (str, "text appended to a text/plain post (empty: none)"),
    "reply_to": (str, "Reply-To of a copy: none (as sent), list, sender"),
    "digest_interval": (int, "seconds between digests (and indexes) sent to their subscribers"),
    "archive": (str, "account (local@domain) whose folder keeps a copy; empty = the owner's"),
    "archive_folder": (str, "folder of the archive account; empty = no archive"),
    "personalize": (
        bool,
        "one copy per subscriber with its own VERP sender and unsubscribe link "
        "(instead of one copy for all)",
    ),
    "confirm_subscribe": (bool, "subscribe by mail needs the reply to a confirmation (opt-in)"),
}

DEFAULT_FIELDS: dict[str, Any] = {
    "owner": "",
    "description": "",
    "policy": "subscribers",
    "size_limit": 0,
    "subject_tag": "",
    "footer": "",
    "reply_to": "none",
    "digest_interval": 86400,
    "archive": "",
    "archive_folder": "",
    "personalize": False,
    "confirm_subscribe": True,
}

_CHOICES = {"policy": POLICIES, "reply_to": REPLY_TO}
_MAX_TEXT = {"description": 200, "subject_tag": 60, "footer": 2000, "archive_folder": 200}


@dataclass(frozen=True)
class MailingList:
    """One list: ``name@domain`` with the fields of ``FIELDS``."""

    name: str
    domain: str
    owner: str = ""
    description: str = ""
    policy: str = "subscribers"
    size_limit: int = 0
    subject_tag: str = ""
    footer: str = ""
    reply_to: str = "none"
    digest_interval: int = 86400
    archive: str = ""
    archive_folder: str = ""
    personalize: bool = False
    confirm_subscribe: bool = True
    last_digest: float = 0.0
    digest_number: int = 0  # issues sent so far

    @property
    def address(self) -> str:
        return f"{self.name}@{self.domain}"

    def fields(self) -> dict[str, Any]:
        """The administrator's fields (``FIELDS``) as a dict, for show and export."""
        return {k: getattr(self, k) for k in FIELDS}

    def with_fields(self, values: Mapping[str, Any]) -> MailingList:
        return dataclasses.replace(self, **{k: check_field(k, v) for k, v in values.items()})


@dataclass(frozen=True)
class Subscriber:
    """One subscriber of a list: address, mode, state and bounce count in the current window."""

    address: str
    mode: str = "feed"
    state: str = "active"  # active | pending (opt-in not confirmed) | suspended (bounces)
    bounces: int = 0
    first_bounce: float = 0.0  # start of the bounce window, 0 = none counted
    suspended_at: float = 0.0
    real_name: str = ""

    @property
    def receives(self) -> str:
        """What this subscriber gets now: feed, digest, index or "" (nothing)."""
        if self.state != "active" or self.mode in ("null", "banned"):
            return ""
        return self.mode

    @property
    def may_post(self) -> bool:
        return self.mode != "banned" and self.state != "pending"


def check_field(key: str, value: Any) -> Any:
    """Validate one list field; returns the value or raises ValueError naming what is allowed."""
    if key not in FIELDS:
        raise ValueError(f"unknown list setting {key!r} (known: {', '.join(sorted(FIELDS))})")
    want, _doc = FIELDS[key]
    if want is bool:
        if not isinstance(value, bool):
            raise ValueError(f"list setting {key} must be true or false")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"list setting {key} must be a non-negative integer")
        if key == "digest_interval" and value < 1:
            raise ValueError("list setting digest_interval is at least 1 second")
        return value
    if not isinstance(value, str):
        raise ValueError(f"list setting {key} must be a string")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ValueError(f"list setting {key} must be one of {', '.join(_CHOICES[key])}")
    if any(ord(c) < 32 and c not in "\n\t" for c in value) or (
        key != "footer" and ("\n" in value or "\r" in value)
    ):
        raise ValueError(f"list setting {key} must not contain control characters")
    limit = _MAX_TEXT.get(key, 320)
    if len(value) > limit:
        raise ValueError(f"list setting {key} is at most {limit} characters")
    if key in ("owner", "archive") and value and value.count("@") != 1:
        raise ValueError(f"list setting {key} must be an account address local@domain")
    return value.lower() if key in ("owner", "archive") else value


def check_mode(mode: str) -> str:
    m = mode.strip().lower()
    if m not in MODES:
        raise ValueError(f"subscriber mode must be one of {', '.join(MODES)}, not {mode!r}")
    return m


def check_subscriber_address(address: str) -> str:
    """A subscriber address: local@domain, no spaces or brackets; the domain lower-cased."""
    a = address.strip().strip("<>")
    local, at, domain = a.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or len(a) > 320
        or len(local) > 64
        or any(c.isspace() or c in '<>(),;:\\[]"' or ord(c) < 32 for c in a)
        or "." not in domain.strip(".")
    ):
        raise ValueError(f"not a subscriber address: {address!r}")
    return f"{local}@{domain.lower()}"
