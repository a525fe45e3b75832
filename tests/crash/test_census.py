"""The harness recognises a stored message as complete, truncated or foreign from its bytes."""

from __future__ import annotations

import os

from tests.crash.scenarios import census, message


def test_census_counts_complete_copies_and_names_broken_files(tmp_path: str) -> None:
    folder = str(tmp_path)
    for sub in ("new", "cur"):
        os.makedirs(os.path.join(folder, sub))
    whole = b"Return-Path: <a@b>\r\nDelivered-To: x\r\n" + message("crash-t-1")
    files = {
        "new/1": whole,
        "cur/2:2,S": whole,
        "new/3": whole[:-7],
        "new/4": b"",
        "cur/5": message("crash-t-2"),
    }
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    c = census(folder)
    assert c.counts == {"crash-t-1": 2, "crash-t-2": 1}
    assert len(c.broken) == 2
    assert any("new/3" in b and "truncated crash-t-1" in b for b in c.broken)
    assert any("new/4" in b and "0 bytes" in b for b in c.broken)
