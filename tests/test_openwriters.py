"""``open_for_writing`` against real processes holding real files (Linux file leases)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsbridge.openwriters import open_for_writing

HOLD = (
    "import os, sys\n"
    "fd = os.open(sys.argv[1], int(sys.argv[2]))\n"
    "print('open', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold(path: Path, flags: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(flags)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


@pytest.mark.parametrize(
    "flags", [pytest.param("O_WRONLY|O_TRUNC", id="truncated"), pytest.param("O_RDWR", id="rdwr")]
)
def test_another_process_writing_is_seen_and_its_close_too(tmp_path: Path, flags: str) -> None:
    import os

    path = tmp_path / "a.md"
    path.write_bytes(b"hello\n")
    assert not open_for_writing(path)
    value = 0
    for name in flags.split("|"):
        value |= getattr(os, name)
    proc = hold(path, value)
    try:
        assert open_for_writing(path)
    finally:
        release(proc)
    assert not open_for_writing(path)


def test_readers_are_not_writers_and_the_check_leaves_the_file_alone(tmp_path: Path) -> None:
    import os

    path = tmp_path / "a.md"
    path.write_bytes(b"hello\n")
    proc = hold(path, os.O_RDONLY)
    try:
        assert not open_for_writing(path)
    finally:
        release(proc)


APPENDER = (
    "import sys\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    with open(sys.argv[1], 'ab') as f:\n"
    "        f.write(b'x')\n"
)


def test_writers_opening_during_checks_are_neither_lost_nor_kill_us(tmp_path: Path) -> None:
    """A writer that opens the file while we hold the lease breaks it: the kernel signals us
    (it would be SIGIO, which ends a process) and delays the writer until we let go."""
    path = tmp_path / "a.md"
    path.write_bytes(b"")
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(path), "3000"])
    checks = 0
    while writer.poll() is None:
        open_for_writing(path)
        checks += 1
    assert writer.returncode == 0
    assert path.read_bytes() == b"x" * 3000
    assert checks > 0


def test_missing_files_and_symlinks_are_not_being_written(tmp_path: Path) -> None:
    assert not open_for_writing(tmp_path / "missing.md")
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link.md").symlink_to(tmp_path / "target")
    assert not open_for_writing(tmp_path / "link.md")
