"""The verified-credential cache: recent successful password checks, so a repeat login skips argon2.

Owns which (stored hash, offered password) pairs verified recently; it never verifies a password
itself and never holds one. Like Dovecot's ``auth_cache`` a client that logs in again and again
(a mail client polling POP3, a phone opening IMAP connections) pays argon2's tens of milliseconds
of CPU once per ``auth.credential_cache_ttl`` instead of at every login.

An entry is the HMAC-SHA256, under a random key made per process and never written anywhere, of
the account's stored hash and the offered password. Keyed by the *stored hash* (which carries its
own random salt) rather than by the account name, a changed password can never hit: the next
login reads the new hash from the store and finds no entry, whichever process, node or tool
changed it, with no invalidation message to lose. The store row is still read at every login, so
a disabled account or domain is refused at once too. Only successes are added: a wrong password
always costs a full verification and counts against the penalties. The cache is emptied on every
settings reload (``cgtwist-admin`` after any account change, SIGHUP), bounded by
``auth.credential_cache_size`` entries (least recently used go first), and off when the TTL is 0.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from typing import Optional, Union

from twisted.internet.interfaces import IReactorTime

from cgtwist.settings import SettingsHolder


def _octets(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class CredentialCache:
    """Recently verified (stored hash, password) pairs, each kept ``auth.credential_cache_ttl``
    seconds from its verification (a hit does not extend it: a stolen-then-changed password
    cannot stay warm), at most ``auth.credential_cache_size`` of them."""

    def __init__(self, settings: SettingsHolder, clock: IReactorTime) -> None:
        self._settings = settings
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry

    def _digest(self, stored: str, password: Union[str, bytes]) -> bytes:
        mac = hmac.new(self._key, _octets(stored), hashlib.sha256)
        mac.update(b"\0")  # a PHC or crypt string never holds NUL: the split is unambiguous
        mac.update(_octets(password))
        return mac.digest()

    def verified(self, stored: Optional[str], password: Union[str, bytes]) -> bool:
        """True when ``password`` verified against ``stored`` less than the TTL ago."""
        if not stored or not self._entries:
            return False
        digest = self._digest(stored, password)
        expiry = self._entries.get(digest)
        if expiry is None:
            return False
        if expiry <= self._clock.seconds():
            del self._entries[digest]
            return False
        self._entries.move_to_end(digest)
        return True

    def add(self, stored: Optional[str], password: Union[str, bytes]) -> None:
        """Remember that ``password`` verified against ``stored`` (call only on success)."""
        auth = self._settings.current.auth
        ttl, size = auth.credential_cache_ttl, auth.credential_cache_size
        if not stored or ttl <= 0 or size <= 0:
            return
        now = self._clock.seconds()
        digest = self._digest(stored, password)
        self._entries[digest] = now + ttl
        self._entries.move_to_end(digest)
        while len(self._entries) > size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (a settings reload: an administrator changed something)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
