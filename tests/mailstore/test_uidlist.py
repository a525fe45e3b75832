"""The uidlist file: written atomically, read back exactly, refused when it cannot be trusted."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.mailstore import uidlist
from cgtwist.mailstore.uidlist import UidList


class UidListTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)

    def write(self, text: str) -> None:
        with open(os.path.join(self.dir, uidlist.UIDLIST_FILE), "w") as f:
            f.write(text)

    @given(
        st.dictionaries(
            st.text(min_size=1, max_size=30).filter(lambda k: "\x00" not in k),
            st.integers(1, 1000),
            max_size=20,
        )
    )
    def test_roundtrip(self, mapping: dict[str, int]) -> None:
        """Any file names (spaces, newlines, '%') and UIDs read back exactly as saved."""
        uids = {k: i + 1 for i, k in enumerate(mapping)}
        ul = UidList(uidvalidity=123, uidnext=len(uids) + 5, uids=uids)
        uidlist.save(self.dir, ul)
        self.assertEqual(uidlist.load(self.dir), ul)
        self.assertEqual([n for n in os.listdir(self.dir) if n.endswith(".tmp")], [])

    def test_untrustworthy_files(self) -> None:
        """Missing, garbled, or inconsistent lists (UID twice, UID >= UIDNEXT) mean: rebuild."""
        self.assertIsNone(uidlist.load(self.dir))
        for text in [
            "",
            "garbage",
            "cgtwist-uidlist 1 V0 N1\n",
            "cgtwist-uidlist 1 V5 N3\n3 a\n",
            "cgtwist-uidlist 1 V5 N9\n1 a\n1 b\n",
            "cgtwist-uidlist 1 V5 N9\nx a\n",
            "cgtwist-uidlist 1 N9\n",
            "cgtwist-uidlist 2 V5 N9\n",
        ]:
            self.write(text)
            self.assertIsNone(uidlist.load(self.dir), text)

    def test_assign_is_monotonic(self) -> None:
        """New UIDs always come from UIDNEXT, which only grows."""
        ul = UidList(uidvalidity=1, uidnext=7)
        self.assertEqual([ul.assign("a"), ul.assign("b")], [7, 8])
        self.assertEqual(ul.uidnext, 9)
