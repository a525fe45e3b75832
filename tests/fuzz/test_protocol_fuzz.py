"""Fuzz every protocol state with grammar-built commands (RELIABILITY.md b-K 57): each command
gets exactly one protocol-correct final reply, no reply stalls the reactor for more than a
second, and no traceback is logged.

States: SMTP before EHLO, in a transaction, after AUTH; IMAP not authenticated,
authenticated, selected; POP3 AUTHORIZATION and TRANSACTION. Examples are bounded so the whole
suite stays well under a minute on a busy two-core machine.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.fuzz.drivers import Closed, IMAPDriver, POP3Driver, SMTPDriver
from tests.fuzz.grammar import POP3_COMMAND, SMTP_COMMAND, imap_commands
from tests.fuzz.watch import Watch

# CGTWIST_FUZZ_EXAMPLES=2000 for a longer hunt on a quiet machine; CI keeps the default.
FUZZ = settings(
    max_examples=int(os.environ.get("CGTWIST_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def drive(make: Any, state: str, units: list[Any]) -> None:
    """Feed ``units`` to a fresh driver in ``state``; fail on a wrong reply, a stall or a
    logged traceback."""
    watch = Watch()
    with watch.active():
        driver = make(state, watch)
        try:
            for unit in units:
                driver.send(unit)
        except Closed:
            pass
        finally:
            driver.close()
    watch.assert_no_traceback(driver.transcript)


class SMTPFuzz(unittest.TestCase):
    @FUZZ
    @given(st.sampled_from(SMTPDriver.STATES), st.lists(SMTP_COMMAND, min_size=1, max_size=10))
    def test_smtp(self, state: str, commands: list[bytes]) -> None:
        """Before EHLO, in a transaction and after AUTH: one SMTP reply per command."""
        drive(SMTPDriver, state, commands)
        self.assertEqual(self.flushLoggedErrors(), [])


class IMAPFuzz(unittest.TestCase):
    @FUZZ
    @given(st.sampled_from(IMAPDriver.STATES), imap_commands())
    def test_imap(self, state: str, commands: list[Any]) -> None:
        """Not authenticated, authenticated and selected: one tagged OK/NO/BAD per tag."""
        drive(IMAPDriver, state, commands)
        self.assertEqual(self.flushLoggedErrors(), [])


class POP3Fuzz(unittest.TestCase):
    @FUZZ
    @given(st.sampled_from(POP3Driver.STATES), st.lists(POP3_COMMAND, min_size=1, max_size=10))
    def test_pop3(self, state: str, commands: list[bytes]) -> None:
        """AUTHORIZATION and TRANSACTION: one +OK/-ERR (or a terminated list) per command."""
        drive(POP3Driver, state, commands)
        self.assertEqual(self.flushLoggedErrors(), [])
