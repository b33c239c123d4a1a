"""A freshly made ext4 file system for one benchmark run, and what file system a run used.

Runs that follow another run's clean-up on the same ext4 pay for it: deleting tens of
thousands of files leaves ext4 work (its ``recently_deleted`` checks) that slows the next
run's creations (BENCHMARKS.md, sixth and seventh rounds).  ``python -m bench.run
--fresh-ext4 12G`` therefore makes a new ext4 in a sparse image file, mounts it on a loop
device, runs everything inside it, and unmounts and deletes it at the end, whatever
happens.  That needs root, ``mkfs.ext4`` and a free loop device; without them it is a clear
error before anything runs, never a silent run elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class FreshFsError(RuntimeError):
    """The fresh file system could not be made (the message says why)."""


@contextlib.contextmanager
def fresh_ext4(size: str, image_dir: Path | None = None) -> Iterator[Path]:
    """Mount a new, empty ext4 of ``size`` (``truncate``'s syntax: ``12G``) and yield its
    mount point; unmount it and delete its image afterwards."""
    if os.geteuid() != 0:
        raise FreshFsError("--fresh-ext4 needs root (it mounts a loop device)")
    for tool in ("truncate", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            raise FreshFsError(f"--fresh-ext4 needs {tool}")
    image_dir = image_dir or Path(tempfile.gettempdir())
    mountpoint = Path(tempfile.mkdtemp(prefix="tack-bench-fs-"))
    image = image_dir / f"{mountpoint.name}.img"
    mounted = False
    try:
        _run(["truncate", "-s", size, str(image)])
        _run(["mkfs.ext4", "-q", "-F", str(image)])
        _run(["mount", "-o", "loop", str(image), str(mountpoint)])
        mounted = True
        yield mountpoint
    finally:
        if mounted and subprocess.run(["umount", str(mountpoint)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)  # still busy
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        with contextlib.suppress(FileNotFoundError):
            image.unlink()


@contextlib.contextmanager
def temp_dir_in(folder: Path) -> Iterator[None]:
    """Temporary files of this process and of everything it starts go into ``folder``."""
    saved_dir = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        with environ_set("TMPDIR", str(folder)):
            yield
    finally:
        tempfile.tempdir = saved_dir


@contextlib.contextmanager
def environ_set(name: str, value: str) -> Iterator[None]:
    """The environment variable ``name`` is ``value`` inside the block (and for what it
    starts), and as it was after."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise FreshFsError(f"{' '.join(command)}: {(done.stderr or done.stdout).strip()}")


def describe(path: Path) -> str:
    """The file system ``path`` is on, as /proc/mounts names it: type, device, mount point."""
    path = path.resolve()
    best: tuple[str, str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, where, kind = line.split()[:3]
                where = where.replace("\\040", " ")
                inside = path == Path(where) or Path(where) in path.parents
                if inside and (best is None or len(where) >= len(best[1])):
                    best = (device, where, kind)
    except OSError:
        return "unknown"
    if best is None:
        return "unknown"
    device, where, kind = best
    return f"{kind} on {device} at {where}"
