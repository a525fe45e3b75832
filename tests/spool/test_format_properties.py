"""Property tests (Hypothesis) for the spool file format: whatever goes in comes back, and no
single damaged byte or truncation is ever taken for a good message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from cgtwist.spool import format as fmt
from cgtwist.types import Envelope, Recipient

MID = "1700000000000000-42-7"
text = st.text(max_size=40)
recipients = st.lists(
    st.builds(
        Recipient,
        address=text,
        state=st.sampled_from(["pending", "delivered", "failed"]),
        route=text,
        orcpt=text,
        notify=text,
        detail=text,
    ),
    max_size=5,
)
envelopes = st.builds(
    Envelope,
    sender=text,
    recipients=recipients,
    submit=st.dictionaries(text, text, max_size=4),
    params=st.dictionaries(text, text, max_size=4),
)


class FormatProperties(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(envelopes, st.floats(min_value=0, max_value=4e9))
    def test_bytes_as_json_dumps_writes_them(self, env: Envelope, queued: float) -> None:
        """The envelope and journal records are the bytes json.dumps wrote before the one
        shared encoder: files of either version read the same."""
        import dataclasses
        import json

        obj = {
            "sender": env.sender,
            "recipients": [dataclasses.asdict(r) for r in env.recipients],
            "submit": dict(env.submit),
            "params": dict(env.params),
            "queued": queued,
        }
        dumped = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        self.assertEqual(fmt.envelope_json(env, queued), dumped)
        self.assertTrue(fmt.journal_line(obj).endswith(b" " + dumped + b"\n"))

    @settings(max_examples=60, deadline=None)
    @given(envelopes, st.binary(max_size=2000), st.floats(min_value=0, max_value=4e9))
    def test_round_trip(self, env: Envelope, data: bytes, queued: float) -> None:
        """Any envelope and any message bytes come back exactly."""
        raw = b"".join(fmt.encode(MID, fmt.envelope_json(env, queued), data)[0])
        env2, queued2, data2 = fmt.decode(MID, raw)
        self.assertEqual((env2, queued2, data2), (env, queued, data))

    @settings(max_examples=60, deadline=None)
    @given(envelopes, st.binary(max_size=500), st.data())
    def test_damage_detected(self, env: Envelope, data: bytes, draw: st.DataObject) -> None:
        """Flipping any bit or cutting the file anywhere is detected."""
        raw = b"".join(fmt.encode(MID, fmt.envelope_json(env, 1.0), data)[0])
        pos = draw.draw(st.integers(0, len(raw) - 1))
        bit = draw.draw(st.integers(0, 7))
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << bit
        with self.assertRaises(fmt.SpoolCorrupt):
            fmt.decode(MID, bytes(flipped))
        with self.assertRaises(fmt.SpoolCorrupt):
            fmt.decode(MID, raw[:pos])

    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=400))
    def test_journal_never_raises(self, raw: bytes) -> None:
        """Any journal bytes parse into records or are counted as damaged, never an exception."""
        records, bad = fmt.parse_journal(raw)
        self.assertTrue(all(isinstance(r, dict) for r in records))
        self.assertGreaterEqual(bad, 0)
