"""One SMTP mail transaction (RFC 5321 §3.3): the envelope being built from MAIL FROM on.

Owns the state of one transaction as one object, as aiosmtpd keeps its Envelope apart from
the Session: the reverse-path, the MAIL parameters as received (SIZE, BODY, SMTPUTF8, RET,
ENVID) and the accepted recipients with their DSN parameters. A connection holds at most one:
MAIL FROM makes it, and RSET, HELO/EHLO, STARTTLS and the end of DATA drop it (RFC 5321
§4.1.1.5, §4.1.4; RFC 3207 §4.2), so nothing of one message can leak into the next. Pure: no
I/O, no Twisted; what goes to the queue is a ``cgtwist.types.Envelope`` made from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cgtwist.types import Envelope, Recipient


@dataclass
class Transaction:
    """The envelope of the message being received; ``sender`` "" is the null path ``<>``."""

    sender: str
    params: dict[str, str] = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)

    @property
    def declared_size(self) -> int:
        """RFC 1870 SIZE= as the client declared it (0 when it did not)."""
        return int(self.params.get("SIZE", "0"))

    def add_recipient(self, recipient: Recipient) -> None:
        """Accept a recipient; the same address twice gets one copy (the reply is still 250)."""
        address = recipient.address.lower()
        if all(r.address.lower() != address for r in self.recipients):
            self.recipients.append(recipient)

    def envelope(self, submit: Mapping[str, str]) -> Envelope:
        """The envelope handed to submission, with where the message came from."""
        return Envelope(
            sender=self.sender,
            recipients=list(self.recipients),
            params=dict(self.params),
            submit=dict(submit),
        )
