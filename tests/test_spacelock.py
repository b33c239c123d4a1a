"""Tests for fsbridge.spacelock with real processes holding and contending for the lock."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsbridge
from fsbridge.spacelock import AlreadyRunning, SpaceLock, holder_pid

PROJECT = str(Path(fsbridge.__file__).resolve().parent.parent)

HOLD = """
import sys
from pathlib import Path
from fsbridge.spacelock import SpaceLock
lock = SpaceLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold until the test closes our stdin (or kills us)
lock.release()
"""

TRY = """
import sys
from pathlib import Path
from fsbridge.spacelock import AlreadyRunning, SpaceLock
try:
    with SpaceLock(Path(sys.argv[1])):
        print("acquired")
except AlreadyRunning as exc:
    print(f"refused {exc.pid} {exc}")
"""


def python(code: str, tack_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=PROJECT)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(tack_dir)],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def try_in_subprocess(tack_dir: Path) -> str:
    proc = python(TRY, tack_dir)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return out.strip()


@pytest.fixture
def tack_dir(tmp_path: Path) -> Path:
    path = tmp_path / ".tack"
    path.mkdir()
    return path


@pytest.fixture
def holder(tack_dir: Path) -> Iterator[subprocess.Popen[str]]:
    proc = python(HOLD, tack_dir)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def test_acquire_release_and_context_manager(tack_dir: Path) -> None:
    lock = SpaceLock(tack_dir)
    assert holder_pid(tack_dir) is None
    lock.acquire()
    assert lock.held
    assert holder_pid(tack_dir) == os.getpid()
    assert (tack_dir / "lock").read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not lock.held
    assert holder_pid(tack_dir) is None
    lock.release()  # harmless
    with SpaceLock(tack_dir) as again:
        assert again.held
        assert holder_pid(tack_dir) == os.getpid()
    assert holder_pid(tack_dir) is None
    assert (tack_dir / "lock").exists()  # never deleted


def test_second_lock_in_subprocess_refuses(tack_dir: Path) -> None:
    with SpaceLock(tack_dir):
        assert try_in_subprocess(tack_dir) == (
            f"refused {os.getpid()} Tack is already running for this space (pid {os.getpid()})"
        )
    assert try_in_subprocess(tack_dir) == "acquired"


def test_second_lock_in_same_process_refuses(tack_dir: Path) -> None:
    with SpaceLock(tack_dir):
        with pytest.raises(AlreadyRunning) as info:
            SpaceLock(tack_dir).acquire()
        assert info.value.pid == os.getpid()
        assert str(info.value) == f"Tack is already running for this space (pid {os.getpid()})"


def test_acquiring_twice_on_one_object_is_a_bug(tack_dir: Path) -> None:
    with SpaceLock(tack_dir) as lock, pytest.raises(RuntimeError):
        lock.acquire()


def test_subprocess_holder_is_reported(tack_dir: Path, holder: subprocess.Popen[str]) -> None:
    assert holder_pid(tack_dir) == holder.pid
    with pytest.raises(AlreadyRunning) as info:
        SpaceLock(tack_dir).acquire()
    assert info.value.pid == holder.pid
    assert holder_pid(tack_dir) == holder.pid  # probing disturbed nothing
    assert holder.stdin is not None
    holder.stdin.close()  # let it release and exit
    assert holder.wait(timeout=60) == 0
    assert holder_pid(tack_dir) is None
    with SpaceLock(tack_dir):
        assert holder_pid(tack_dir) == os.getpid()


def test_killed_holder_leaves_a_stale_file_that_does_not_block(
    tack_dir: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tack_dir / "lock").read_text() == f"{holder.pid}\n"  # stale content remains
    assert holder_pid(tack_dir) is None
    with SpaceLock(tack_dir):
        assert holder_pid(tack_dir) == os.getpid()
        assert (tack_dir / "lock").read_text() == f"{os.getpid()}\n"


def test_lock_is_not_inherited_by_children(tack_dir: Path) -> None:
    lock = SpaceLock(tack_dir)
    lock.acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"],
        stdin=subprocess.PIPE,
        close_fds=False,
    )
    try:
        lock.release()
        assert try_in_subprocess(tack_dir) == "acquired"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)


def test_holder_pid_without_lock_file(tmp_path: Path) -> None:
    assert holder_pid(tmp_path) is None


def test_holder_with_unreadable_pid_is_still_refused(tack_dir: Path) -> None:
    # Someone holds the lock but wrote no pid (e.g. it has not written it yet).
    fd = os.open(tack_dir / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(AlreadyRunning) as info:
            SpaceLock(tack_dir).acquire()
        assert info.value.pid is None
        assert str(info.value) == "Tack is already running for this space"
        assert holder_pid(tack_dir) is None
    finally:
        os.close(fd)


def test_persistent_shared_lock_does_not_hang_acquire(tack_dir: Path) -> None:
    # A shared lock is what holder_pid() takes for an instant; one that never goes away must
    # still make acquire() give up rather than spin forever.
    (tack_dir / "lock").write_text("")
    fd = os.open(tack_dir / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with pytest.raises(AlreadyRunning):
            SpaceLock(tack_dir).acquire()
    finally:
        os.close(fd)
    with SpaceLock(tack_dir):
        pass
