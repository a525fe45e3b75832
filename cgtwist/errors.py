"""Errors that carry SMTP meaning: reply code, enhanced status code, temporary flag.

Owns the one exception type every layer raises when a mail operation is refused. It must not
carry internal detail to the client: ``text`` is what the peer sees, ``detail`` is for the log.
"""

from __future__ import annotations


class MailError(Exception):
    """A refusal with SMTP semantics (RFC 5321 §4.2, RFC 3463 enhanced codes).

    ``code`` is the three-digit reply, ``enhanced`` the x.y.z status, ``text`` the generic human
    text sent to the client, ``detail`` extra text for the log only.
    """

    def __init__(self, code: int, enhanced: str, text: str, detail: str = "") -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.detail = detail

    @property
    def temporary(self) -> bool:
        """4xx replies are temporary: the sender keeps responsibility and retries."""
        return 400 <= self.code < 500

    def reply(self) -> str:
        """The reply line as sent on the wire (without CRLF)."""
        return f"{self.code} {self.enhanced} {self.text}"


def temporary(
    text: str = "Temporary local problem, try again later", detail: str = ""
) -> MailError:
    """451 4.3.0: the generic temporary failure used for unexpected internal errors."""
    return MailError(451, "4.3.0", text, detail)


class ConfigError(Exception):
    """A bad bootstrap configuration: the message names file, line and key."""


class StoreError(Exception):
    """A store operation failed for a reason the caller should report (e.g. duplicate name)."""


class StoreUnavailable(StoreError):
    """The database did not answer in time or could not be reached: a temporary condition.

    Protocols answer their temporary failure (451 4.3.0, ``NO [UNAVAILABLE]``,
    ``-ERR [SYS/TEMP]``); the store has logged why, so callers log one line, no traceback.
    A write that timed out may or may not have committed.
    """


class NotFound(StoreError):
    """The named domain, account, alias or setting does not exist."""


class AlreadyExists(StoreError):
    """An object with that name exists already."""


class InvalidName(StoreError, ValueError):
    """A domain, account or mailbox name that is syntactically invalid or unsafe."""


class DNSPermanentError(Exception):
    """NXDOMAIN: the name does not exist (a permanent condition)."""


class DNSTemporaryError(Exception):
    """SERVFAIL, REFUSED or timeout: try again later, never bounce on it (RFC 5321 §5.1)."""
