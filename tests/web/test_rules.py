"""The web panel's pure parts: who may administer what, and address-list lines with errors."""

from __future__ import annotations

from twisted.trial import unittest

from cgtwist.types import Account
from cgtwist.web.forms import line_errors
from cgtwist.web.rights import Rights


def account(name: str, domain: str, **settings: object) -> Account:
    return Account(name=name, domain=domain, real_name="", services=frozenset(), settings=settings)


class RightsTests(unittest.TestCase):
    def test_postmaster_of_the_main_domain_is_a_server_administrator(self) -> None:
        rights = Rights.of(account("postmaster", "main.test"), "main.test")
        self.assertTrue(rights.server_admin and rights.may_admin("any.test"))
        other = Rights.of(account("postmaster", "other.test"), "main.test")
        self.assertFalse(other.any_admin)  # another domain's postmaster is a user

    def test_admin_flag_and_domain_admin(self) -> None:
        self.assertTrue(Rights.of(account("a", "x.test", admin=True), "main.test").server_admin)
        boss = Rights.of(account("b", "x.test", domain_admin=True), "main.test")
        self.assertFalse(boss.server_admin)
        self.assertTrue(boss.may_admin("x.test"))
        self.assertFalse(boss.may_admin("y.test"))
        self.assertFalse(Rights.of(account("c", "x.test"), "main.test").any_admin)


class AddressListLineTests(unittest.TestCase):
    def test_every_bad_line_is_named(self) -> None:
        """Each wrong line is reported with its number, text and reason, not just the first;
        comments and blank lines are fine."""
        text = "10.0.0.0/8 ; office\n\nnot-an-ip\n192.0.2.9-192.0.2.1\n# note\n2001:db8::/32"
        self.assertEqual(
            line_errors(text),
            [
                (3, "not-an-ip", "not an IP address, network or range"),
                (4, "192.0.2.9-192.0.2.1", "range ends before it starts"),
            ],
        )
        self.assertEqual(line_errors("192.0.2.1, 192.0.2.2\n"), [])
