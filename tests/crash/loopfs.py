"""Loop-mounted ext4 images for the power-loss harness: make, mount, copy ("what reached the
disk"), fsck and mount a copy, and always clean up.

Owns every loop device, mount point and image file the crash tests create; nothing else in
``tests/crash`` runs mount, losetup or e2fsck. While an image is loop-mounted, its backing file
holds exactly what the kernel has written to the "disk": written-back pages and whatever an
fsync forced out, not the dirty pages still in the mounted file system's page cache. Copying
the backing file while the writers are stopped is therefore the disk after a power cut at that
instant (up to the kernel's own writeback, which starts for pages dirty longer than
``vm.dirty_expire_centisecs``, 30 s by default: a crash state is taken within a few seconds of
the writes it is about).

Every resource is registered at once and released by ``cleanup_all`` (also at exit), so a test
that fails half-way leaves no mount, loop device or image behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

_MOUNTS: list[str] = []  # mount points, newest last
_LOOPS: list[str] = []  # loop devices attached with losetup


def _run(
    *argv: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def unavailable() -> Optional[str]:
    """Why loop-mounted ext4 cannot be used here (not root, no tools, no loop devices), or
    None when it can."""
    if os.geteuid() != 0:
        return "the power-loss harness needs root (losetup, mount)"
    for tool in ("losetup", "mkfs.ext4", "e2fsck", "mount", "umount", "strace"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control: loop devices are unavailable"
    with tempfile.NamedTemporaryFile(prefix="cgtwist-loop-probe-") as probe:
        probe.truncate(1 << 20)
        probe.flush()
        r = _run("losetup", "-f", "--show", probe.name, check=False)
        if r.returncode != 0:
            return f"cannot attach a loop device here: {r.stderr.strip()}"
        _run("losetup", "-d", r.stdout.strip(), check=False)
    return None


def _umount(point: str) -> None:
    r = _run("umount", point, check=False)
    if r.returncode != 0 and os.path.ismount(point):
        _run("umount", "-l", point, check=False)  # a process still inside: detach it lazily
    if point in _MOUNTS:
        _MOUNTS.remove(point)


def _detach(dev: str) -> None:
    _run("losetup", "-d", dev, check=False)
    if dev in _LOOPS:
        _LOOPS.remove(dev)


@atexit.register
def cleanup_all() -> None:
    """Unmount and detach everything this process set up (newest first)."""
    for point in reversed(list(_MOUNTS)):
        _umount(point)
    for dev in reversed(list(_LOOPS)):
        _detach(dev)


def mount_image(image: str, point: str, readonly: bool = False) -> str:
    """Attach ``image`` to a free loop device and mount it at ``point``; the device."""
    os.makedirs(point, exist_ok=True)
    dev = _run("losetup", "-f", "--show", image).stdout.strip()
    _LOOPS.append(dev)
    try:
        _run("mount", "-t", "ext4", *(["-o", "ro"] if readonly else []), dev, point)
    except Exception:
        _detach(dev)
        raise
    _MOUNTS.append(point)
    return dev


def unmount(point: str, dev: str) -> None:
    _umount(point)
    _detach(dev)


@dataclass(frozen=True)
class Fsck:
    """What ``e2fsck -fy`` said about a copy: its exit status (0 clean, 1 errors corrected,
    4 and up: errors left) and the lines naming what it repaired."""

    status: int
    repairs: tuple[str, ...]

    @property
    def clean(self) -> bool:
        return self.status == 0


def fsck(image: str) -> Fsck:
    """``e2fsck -fy`` on an unmounted image file, as a machine does on boot after a power cut."""
    r = _run("e2fsck", "-fy", image, check=False, timeout=300)
    lines = [ln.strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    # e2fsck asks a question for each problem and answers "yes"; the question is on the
    # problem's line or alone on the next one. Bitmap and free-count fixes are routine after
    # any unclean stop and are left out.
    repairs = []
    for i, ln in enumerate(lines):
        if not ln.endswith("? yes"):
            continue
        problem = ln if len(ln.split()) > 2 or i == 0 else f"{lines[i - 1]} {ln}"
        if not any(w in problem for w in _ROUTINE):
            repairs.append(problem)
    return Fsck(r.returncode, tuple(repairs))


_ROUTINE = (
    "bitmap differences",
    "Free blocks count",
    "Free inodes count",
    "Padding at end",
    "could be shorter",
    "could be narrower",
)


class LoopImage:
    """A fresh ext4 image of ``size_mib`` in ``workdir``, loop-mounted at ``workdir/mnt``;
    ``journal`` False makes it like this machine's root file system (``^has_journal``)."""

    def __init__(self, workdir: str, journal: bool, size_mib: int = 64) -> None:
        self.workdir = workdir
        self.journal = journal
        self.image = os.path.join(workdir, "disk.img")
        self.mountpoint = os.path.join(workdir, "mnt")
        os.makedirs(workdir, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(size_mib << 20)
        features = [] if journal else ["-O", "^has_journal"]
        # nodiscard: mkfs need not trim a sparse file; lazy init off so the inode tables are
        # written now, not by a kernel thread in the middle of a crash state.
        _run(
            "mkfs.ext4",
            "-q",
            "-F",
            *features,
            "-E",
            "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            self.image,
        )
        self.dev: Optional[str] = mount_image(self.image, self.mountpoint)

    def syncfs(self) -> None:
        """Write everything of the mounted file system to the image (``sync -f``): the
        state before the operations under test is on the disk, as on a server that has run
        for a while."""
        _run("sync", "-f", self.mountpoint)

    def copy(self, dest: str) -> None:
        """Copy the backing file as the disk holds it now (a sparse copy, a few MB)."""
        _run("cp", "--sparse=always", self.image, dest)

    def close(self) -> None:
        if self.dev is not None:
            unmount(self.mountpoint, self.dev)
            self.dev = None
        try:
            os.unlink(self.image)
        except FileNotFoundError:
            pass


class MountedCopy:
    """A crash-state copy of an image after ``e2fsck -fy``, mounted read-write at ``point``
    (the server recovers on it); ``close`` unmounts it and deletes the copy."""

    def __init__(self, image: str, point: str) -> None:
        self.image = image
        self.point = point
        self.fsck = fsck(image)
        self.dev: Optional[str] = mount_image(image, point)

    def lost_and_found(self) -> list[str]:
        """What e2fsck put in lost+found: data the directory tree no longer reaches."""
        try:
            return sorted(os.listdir(os.path.join(self.point, "lost+found")))
        except FileNotFoundError:
            return []

    def close(self) -> None:
        if self.dev is not None:
            unmount(self.point, self.dev)
            self.dev = None
        try:
            os.unlink(self.image)
        except FileNotFoundError:
            pass
