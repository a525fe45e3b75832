"""Tests for cgtwist.storage.shacrypt: verifying imported SHA512-CRYPT hashes."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.storage import shacrypt

# Test vectors from Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512" specification.
VECTORS = [
    (
        "$6$saltstring",
        b"Hello world!",
        None,
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
    ),
    (
        "saltstringsaltstring",
        b"Hello world!",
        10000,
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
]


class ShaCryptTests(unittest.TestCase):
    def test_specification_vectors(self) -> None:
        """Hashes made by glibc crypt() (the spec's vectors) are reproduced exactly."""
        for salt, password, rounds, want in VECTORS:
            self.assertEqual(
                shacrypt.sha512_crypt(password, salt.removeprefix("$6$"), rounds), want
            )

    def test_verify(self) -> None:
        """Imported hashes verify the right password only, with or without Dovecot's prefix."""
        for _, password, _, stored in VECTORS:
            self.assertTrue(shacrypt.verify(stored, password))
            self.assertTrue(shacrypt.verify(stored, password.decode()))
            self.assertTrue(shacrypt.verify("{SHA512-CRYPT}" + stored, password))
            self.assertFalse(shacrypt.verify(stored, b"Hello world"))
            self.assertFalse(shacrypt.verify(stored, b""))

    def test_malformed(self) -> None:
        """Truncated or foreign strings are not SHA512-CRYPT and never verify."""
        good = VECTORS[0][3]
        for bad in (
            good[:-1],
            good.replace("$6$", "$5$"),
            "$6$salt$",
            "",
            "{SHA512-CRYPT}",
            "$argon2id$v=19$m=19456,t=2,p=1$x$y",
        ):
            self.assertFalse(shacrypt.is_sha512_crypt(bad), bad)
            self.assertFalse(shacrypt.verify(bad, b"Hello world!"))
