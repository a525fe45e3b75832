"""Which scenarios run on which file systems, and how big: the CI-sized run and the full one.

Owns the sizes and file systems. CI: on ext4 without a journal, every fsync boundary of three messages (two with workers) per SMTP scenario (more than one,
because a later message's fsync of a shared directory is what makes an earlier message's
unsynced rename or removal reach the disk without the rest),
one IMAP round, one recovered message. Full (``CGTWIST_CRASH_FULL=1``): both file systems, ten
messages, three IMAP rounds, and a limit on states high enough to reach the end of each scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from tests.crash.scenarios import SCENARIOS, Scenario

FILESYSTEMS = {"nojournal": False, "journal": True}
# CI runs the file system where power loss bites (no journal, as this project's own servers'
# root): the journalled one is the control, run by the full plan and on demand (--fs journal),
# so CI stays within a few minutes (both together took six and a half on two cores).
CI_FILESYSTEMS = ("nojournal",)
CI_SIZES = {"smtp": 3, "smtp-workers": 2, "imap": 1, "recovery": 1, "account": 1}
FULL_SIZES = {"smtp": 10, "smtp-workers": 10, "imap": 3, "recovery": 1, "account": 3}


@dataclass(frozen=True)
class Item:
    id: str
    scenario: Callable[[], Scenario]
    journal: bool
    max_states: int


def plan(
    full: bool, names: Optional[Sequence[str]] = None, filesystems: Optional[Sequence[str]] = None
) -> Iterator[Item]:
    sizes = FULL_SIZES if full else CI_SIZES
    default_fs = list(FILESYSTEMS) if full else list(CI_FILESYSTEMS)
    for name in names or list(SCENARIOS):
        cls = SCENARIOS[name]
        for fs in filesystems or default_fs:
            size = sizes[name]
            yield Item(
                f"{name}-{fs}",
                lambda cls=cls, size=size: cls(size),  # type: ignore[misc]
                FILESYSTEMS[fs],
                1000 if full else 120,
            )
