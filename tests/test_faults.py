"""Faults: a flaky network, a full disk, read-only files and folders, a locked store, and
``.tack/`` deleted under a running Tack — with real ``tack up`` processes.

Every scenario runs real daemons (each with its own ``TACK_HOME``) and drives them the way a
user (or a hostile environment) does; synchronisation is by polling conditions with deadlines
(:func:`realproc.wait_until`), never by fixed sleeps.  For each fault the contract checked is
the issue's: a clear error in the log and in ``tack status``, retries where retrying makes
sense, and no lost edit (nothing a user saved, nothing a peer sent).

* Network — two devices, B dialing A through :class:`faultproxy.FaultProxy`: per-chunk delay,
  a stall then release, and ten cuts at random byte offsets (most of them splitting a TLS
  record, and so the Tack frame inside it) while both sides append unique tokens to one card.
* Disk full — B's folder on a small tmpfs: a card from A cannot be written (its store on the
  real disk, bind-mounted), and, with ``.tack/`` on the tmpfs too, B's own edit cannot be
  stored.
* A card file made immutable (``chattr +i``: root ignores ``chmod 0444``) and a read-only
  folder (``chattr +i`` on the directory, or a read-only bind mount).
* The store locked by another process (``BEGIN EXCLUSIVE``), at start-up and while running.
* ``.tack/`` deleted while Tack runs.

Bugs found are kept as ``xfail(strict=True)`` tests whose reason is the diagnosis.  Teardown
always stops every process, clears immutable flags and unmounts, in that order.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from realproc import Daemon, card_texts, run_tack, status, wait_until

pytestmark = pytest.mark.slow

LOOPBACK = "127.0.0.1"
NO_MDNS = ("--no-mdns", "--listen", LOOPBACK)
SYNC = 30.0  # seconds: deadline for anything that should sync
LISTENING = re.compile(r"listening on (\S+):(\d+) for peers")
TROUBLE = re.compile(r"Traceback|internal error|Unhandled exception")
SEED = int(os.environ.get("TACK_FAULT_SEED", "1207"))


# -- devices, mounts, flags: one rig per test, torn down in a safe order ---------------------


@dataclass
class Device:
    name: str
    space: Path
    home: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def daemon(self) -> Daemon:
        assert self.daemons, f"{self.name} was never started"
        return self.daemons[-1]

    def up(self, *args: str, wait_ready: bool = True) -> Daemon:
        daemon = Daemon(self.space, self.home, args)
        self.daemons.append(daemon)
        daemon.start(wait_ready=wait_ready)
        return daemon

    def port(self) -> int:
        def read() -> int | None:
            for line in self.daemon.lines:
                match = LISTENING.search(line)
                if match:
                    return int(match.group(2))
            return None

        return wait_until(read, 10, f"{self.name}'s port", context=self.daemon.log)

    def address(self) -> str:
        return f"{LOOPBACK}:{self.port()}"

    def status(self) -> dict[str, Any]:
        return status(self.space, self.home)

    def problems(self) -> list[str]:
        problems: list[str] = self.status()["problems"]
        return problems

    def connected(self) -> bool:
        return any(p["connected"] for p in self.status()["peers"])

    def lines(self) -> list[str]:
        return [line for d in self.daemons for line in d.lines]

    def log(self) -> str:
        return f"--- {self.name} ({self.space}) ---\n" + "\n".join(d.log() for d in self.daemons)


class Rig:
    """Devices, proxies, mounts and immutable flags of one test; :meth:`close` undoes all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[Device] = []
        self.proxies: list[FaultProxy] = []
        self.mounts: list[Path] = []
        self.flagged: list[Path] = []
        self.helpers: list[subprocess.Popen[str]] = []

    # devices

    def device(self, name: str, space: Path | None = None) -> Device:
        home = self.root / f"home-{name}"
        home.mkdir()
        dev = Device(name, (space or self.root / f"space-{name}").resolve(), home)
        self.devices.append(dev)
        return dev

    def founder(self, name: str, files: dict[str, bytes]) -> Device:
        dev = self.device(name)
        write_files(dev.space, files)
        run_tack(dev.home, "init", str(dev.space))
        return dev

    def joiner(self, name: str, link: str, space: Path | None = None) -> Device:
        dev = self.device(name, space)
        merge = ["--merge"] if dev.space.exists() and any(dev.space.iterdir()) else []
        run_tack(dev.home, "join", link, str(dev.space), *merge)
        return dev

    def pair(self, files: dict[str, bytes], b_space: Path | None = None) -> tuple[Device, Device]:
        """A (founder, listening) and B (joiner); not started."""
        a = self.founder("A", files)
        link = run_tack(a.home, "share", str(a.space)).stdout.strip()
        return a, self.joiner("B", link, b_space)

    def proxy(self, target: tuple[str, int]) -> FaultProxy:
        proxy = FaultProxy(target).start()
        self.proxies.append(proxy)
        return proxy

    def logs(self) -> str:
        return "\n".join(d.log() for d in self.devices)

    # mounts and flags (root only; a test skips when the kernel says no)

    def tmpfs(self, path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        self._mount(["-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], path)
        return path

    def bind(self, src: Path, dst: Path, read_only: bool = False) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        self._mount(["--bind", str(src), str(dst)], dst)
        if read_only:
            self._mount(["-o", "remount,bind,ro", str(dst)], None)

    def _mount(self, args: list[str], point: Path | None) -> None:
        if shutil.which("mount") is None:
            pytest.skip("no mount(8) on this machine")
        proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"mount {' '.join(args)} not permitted: {proc.stderr.strip()}")
        if point is not None:
            self.mounts.append(point)

    def unmount(self, point: Path) -> None:
        proc = subprocess.run(["umount", str(point)], capture_output=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=True)
        self.mounts.remove(point)

    def immutable(self, path: Path) -> None:
        """``chattr +i path`` (skip the test if the file system or our privileges say no)."""
        if shutil.which("chattr") is None:
            pytest.skip("no chattr(1) on this machine")
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"chattr +i not permitted here: {proc.stderr.strip()}")
        self.flagged.append(path)

    def mutable(self, path: Path) -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)
        with contextlib.suppress(ValueError):
            self.flagged.remove(path)

    # teardown: lock holders, then daemons (they hold files open), then flags, then mounts

    def close(self) -> None:
        for helper in self.helpers:
            with contextlib.suppress(Exception):
                helper.kill()
                helper.wait(5)
        for dev in self.devices:
            for daemon in dev.daemons:
                if daemon.proc is not None and daemon.running:
                    with contextlib.suppress(Exception):
                        daemon.stop()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        for path in reversed(self.flagged):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
        for point in reversed(list(self.mounts)):
            with contextlib.suppress(subprocess.CalledProcessError, ValueError):
                self.unmount(point)

    def troubles(self) -> list[str]:
        return [
            f"{d.name}: {line}" for d in self.devices for line in d.lines() if TROUBLE.search(line)
        ]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


# -- small helpers -------------------------------------------------------------------------------


def write_files(root: Path, files: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def tree(space: Path) -> dict[str, bytes]:
    """Every file of the space outside ``.tack/``, by relative path."""
    out: dict[str, bytes] = {}
    for top, subdirs, names in os.walk(space):
        rel_top = os.path.relpath(top, space)
        subdirs[:] = [d for d in subdirs if not (rel_top == "." and d == ".tack")]
        for name in names:
            full = Path(top) / name
            with contextlib.suppress(FileNotFoundError):
                out[full.relative_to(space).as_posix()] = full.read_bytes()
    return out


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def append(path: Path, text: str) -> None:
    """Append like ``echo >> file``: no read-modify-write, so it never races Tack's writes."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def wait_identical(
    devices: Sequence[Device],
    rig: Rig,
    extra: Callable[[dict[str, bytes]], bool] | None = None,
    timeout: float = SYNC,
) -> dict[str, bytes]:
    def same() -> dict[str, bytes] | None:
        trees = [tree(d.space) for d in devices]
        first = trees[0]
        for dev, other in zip(devices[1:], trees[1:], strict=True):
            diff = sorted(p for p in set(first) | set(other) if first.get(p) != other.get(p))
            if diff:
                raise AssertionError(f"{devices[0].name} and {dev.name} differ at {diff[:6]}")
        if extra is not None and not extra(first):
            return None
        return first

    names = ", ".join(d.name for d in devices)
    return wait_until(same, timeout, f"identical folders on {names}", context=rig.logs)


def fill(mount: Path) -> Path:
    """Fill the file system of ``mount`` to the last byte with ``mount/ballast``."""
    ballast = mount / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        os.fsync(fd)
    finally:
        os.close(fd)
    return ballast


def no_temp_files(space: Path) -> bool:
    leftovers = [p for p in tree(space) if p.rsplit("/", 1)[-1].startswith(".tack-tmp-")]
    if leftovers:
        raise AssertionError(f"temporary files left behind: {leftovers}")
    return True


def problem_matching(dev: Device, pattern: str) -> str:
    def find() -> str | None:
        return next((p for p in dev.problems() if re.search(pattern, p)), None)

    return wait_until(find, SYNC, f"a problem matching {pattern!r} in {dev.name}'s status",
                      context=dev.log)  # fmt: skip


def logged(dev: Device, pattern: str, timeout: float = SYNC) -> str:
    def find() -> str | None:
        return next((line for line in dev.lines() if re.search(pattern, line)), None)

    return wait_until(find, timeout, f"{pattern!r} in {dev.name}'s log", context=dev.log)


def no_problems(dev: Device) -> bool:
    problems = dev.problems()
    if problems:
        raise AssertionError(f"{dev.name} still reports {problems}")
    return True


def started_pair(
    rig: Rig, files: dict[str, bytes], via_proxy: bool = False, b_space: Path | None = None
) -> tuple[Device, Device, FaultProxy | None]:
    """A listening, B dialing A (through a fault proxy if asked); returns once they agree."""
    a, b = rig.pair(files, b_space)
    a.up(*NO_MDNS)
    proxy = rig.proxy((LOOPBACK, a.port())) if via_proxy else None
    b.up(*NO_MDNS, "--peer", proxy.address if proxy is not None else a.address())
    wait_identical([a, b], rig, extra=lambda t: all(p in t for p in files))
    wait_until(lambda: a.connected() and b.connected(), SYNC, "both connected", context=rig.logs)
    return a, b, proxy


LINES = "".join(f"line {i}\n" for i in range(1, 11)).encode()


# == 1. the network ===============================================================================


def test_delay_on_every_chunk_still_converges(rig: Rig) -> None:
    a, b, proxy = started_pair(rig, {"notes.md": LINES}, via_proxy=True)
    assert proxy is not None
    proxy.delay(120)
    append(a.space / "notes.md", "from A, slowly\n")
    append(b.space / "notes.md", "from B, slowly\n")
    (a.space / "new-on-a.md").write_text("made on A behind a slow link\n")

    def merged(t: dict[str, bytes]) -> bool:
        notes = t.get("notes.md", b"").decode()
        return (
            notes.count("from A, slowly\n") == 1
            and notes.count("from B, slowly\n") == 1
            and "new-on-a.md" in t
        )

    final = wait_identical([a, b], rig, extra=merged, timeout=45)
    assert final["notes.md"].startswith(LINES)
    assert proxy.counters().chunks_delayed > 0
    assert proxy.counters().cuts == 0 and proxy.counters().accepted == 1, proxy.counters()
    assert not rig.troubles(), rig.troubles()


def test_stall_then_release_converges(rig: Rig) -> None:
    a, b, proxy = started_pair(rig, {"notes.md": LINES}, via_proxy=True)
    assert proxy is not None
    proxy.stall()
    append(a.space / "notes.md", "from A during the stall\n")
    append(b.space / "notes.md", "from B during the stall\n")
    # Both edits are stored locally and their updates are stuck in the proxy.
    wait_until(lambda: proxy.counters().held > 0, SYNC, "bytes held by the stalled proxy")
    held_before = proxy.counters()
    assert b"from A during the stall" not in (b.space / "notes.md").read_bytes()
    proxy.release()

    def merged(t: dict[str, bytes]) -> bool:
        notes = t.get("notes.md", b"").decode()
        return (
            notes.count("from A during the stall\n") == 1
            and notes.count("from B during the stall\n") == 1
        )

    wait_identical([a, b], rig, extra=merged)
    # The stalled connection was held, not dropped: no reconnect was needed.
    assert proxy.counters().accepted == 1, (held_before, proxy.counters())
    assert not rig.troubles(), rig.troubles()


def test_cut_mid_frame_ten_times_while_both_edit(rig: Rig) -> None:
    """Ten cuts at random byte offsets (random direction) while A and B append unique tokens
    to one card; both reconnect (with backoff) and end with every token exactly once."""
    rng = random.Random(SEED)
    a, b, proxy = started_pair(rig, {"shared.md": b"# shared\n"}, via_proxy=True)
    assert proxy is not None
    tokens: list[str] = []
    for round_no in range(10):
        wait_until(
            lambda: proxy.counters().active >= 1 and a.connected() and b.connected(),
            SYNC,
            f"reconnected before cut {round_no + 1} (seed {SEED})",
            context=rig.logs,
        )
        cuts_before = proxy.counters().cuts
        proxy.cut(after=rng.randint(1, 40_000), direction=rng.choice(["up", "down"]))
        # Edits of 2-48 KB: a frame of up to ~48 KB spans several TLS records (16 KB at most),
        # so a cut inside it can leave the receiver with whole records of half a frame.
        edits = 0
        while proxy.counters().cuts == cuts_before:
            sent: dict[str, str] = {}
            for dev in (a, b):
                token = f"T{round_no:02d}-{dev.name}-{edits:02d}-{rng.getrandbits(32):08x}"
                tokens.append(token)
                sent[dev.name] = token
                append(dev.space / "shared.md", f"{token} {'~' * rng.randint(2000, 48_000)}\n")
            edits += 1
            if edits > 40:
                raise AssertionError(f"cut {round_no + 1} never happened (seed {SEED})\n"
                                     f"{proxy.counters()}\n{rig.logs()}")  # fmt: skip

            def cut_or_crossed(sent: dict[str, str] = sent, before: int = cuts_before) -> bool:
                if proxy.counters().cuts > before:
                    return True
                on_a, on_b = read(a.space / "shared.md") or b"", read(b.space / "shared.md") or b""
                return sent["B"].encode() in on_a and sent["A"].encode() in on_b

            wait_until(cut_or_crossed, SYNC, "the cut, or the edits crossing", context=rig.logs)

    def complete(t: dict[str, bytes]) -> bool:
        text = t.get("shared.md", b"").decode()
        return all(text.count(token) == 1 for token in tokens)

    final = wait_identical([a, b], rig, extra=complete, timeout=60)
    text = final["shared.md"].decode()
    assert text.startswith("# shared\n"), text[:200]
    assert all(text.count(token) == 1 for token in tokens)
    counters = proxy.counters()
    assert counters.cuts == 10, counters
    assert counters.mid_chunk_cuts >= 5, f"too few cuts inside a chunk: {counters.cut_log}"
    assert counters.accepted >= 11, counters
    wait_until(lambda: a.connected() and b.connected(), SYNC, "connected at the end")
    assert not rig.troubles(), rig.troubles()


def test_cut_connection_reason_shows_in_status_and_log(rig: Rig) -> None:
    _a, b, proxy = started_pair(rig, {"notes.md": LINES}, via_proxy=True)
    assert proxy is not None
    proxy.block()  # a partition: the redials reach the proxy and are dropped
    proxy.cut_now(hard=True)
    wait_until(lambda: not b.connected(), SYNC, "B noticing the cut", context=b.log)
    wait_until(lambda: proxy.counters().refused >= 2, SYNC, "B redialing", context=b.log)

    def reason() -> str | None:
        errors = [p["last_error"] for p in b.status()["peers"] if not p["connected"]]
        return next((e for e in errors if e), None)

    wait_until(reason, 5, "a reason for the lost peer in B's status", context=b.log)
    logged(b, r"(?i)(cannot reach|reconnect|retry|lost|reset).*", timeout=2)


# == 2. the disk is full ==========================================================================


def test_disk_full_card_from_peer_is_retried_and_lands_whole(rig: Rig, tmp_path: Path) -> None:
    """B's folder on a 2 MiB tmpfs (its ``.tack/`` bind-mounted from the real disk, so only the
    card writes fail): A's new card cannot be written on B.  B says so in its log and status,
    keeps running and syncing, never leaves a partial file, and writes the card once there is
    room again."""
    mnt = rig.tmpfs(tmp_path / "small", "2m")
    b_space = mnt / "space"
    real_state = tmp_path / "b-state"
    real_state.mkdir()
    rig.bind(real_state, b_space / ".tack")
    a, b, _ = started_pair(rig, {"hello.md": b"hello\n"}, b_space=b_space)
    ballast = fill(mnt)

    big = "".join(f"big card line {i}\n" for i in range(5000)).encode()  # ~100 KB
    staged = a.space / "big.md~"  # an ignored name: A takes the card in whole, by rename
    staged.write_bytes(big)
    os.replace(staged, a.space / "big.md")
    append(a.space / "hello.md", "edit from A while B's disk is full\n")
    append(b.space / "hello.md", "edit on B while its disk is full\n")  # fits its page

    def reported() -> str | None:
        on_b = read(b.space / "big.md")
        assert on_b is None or on_b == big, f"partial big.md on B: {len(on_b)} bytes"
        return next((p for p in b.problems() if "No space left on device" in p), None)

    wait_until(reported, SYNC, "the full disk in B's status", context=b.log)
    logged(b, r"No space left on device.*retry")
    assert b.daemon.running
    # B's own edit was stored and sent although B could not write the merged file.
    wait_until(lambda: b"edit on B while its disk" in (read(a.space / "hello.md") or b""), SYNC,
               "B's edit on A", context=rig.logs)  # fmt: skip
    assert read(b.space / "big.md") in (None, big)

    ballast.unlink()

    def merged(t: dict[str, bytes]) -> bool:
        hello = t.get("hello.md", b"").decode()
        return (
            t.get("big.md") == big
            and hello.count("edit from A while B's disk is full\n") == 1
            and hello.count("edit on B while its disk is full\n") == 1
        )

    wait_identical([a, b], rig, extra=merged, timeout=60)
    wait_until(lambda: no_problems(b), SYNC, "B's problems cleared", context=b.log)
    assert no_temp_files(b.space)
    assert not rig.troubles(), rig.troubles()


def full_store_edit(mnt: Path, card: Path) -> tuple[Path, str]:
    """Fill ``mnt`` but for room for one edit of ``card`` larger than the store's WAL slack,
    save that edit, and fill the rest: the edit is on disk, the store cannot take it."""
    wal = card.parent / ".tack" / "store.sqlite-wal"
    slack = wal.stat().st_size if wal.exists() else 0
    line = "a line saved while the disk is full\n"
    edit = line * ((slack + 512 * 1024) // len(line) + 1)
    ballast = fill(mnt)
    os.truncate(ballast, max(0, ballast.stat().st_size - len(edit.encode()) - 64 * 1024))
    append(card, edit)
    fill(mnt)
    return ballast, edit


def test_store_on_full_disk_keeps_the_edit_for_the_next_scan(rig: Rig, tmp_path: Path) -> None:
    """The whole space, ``.tack/`` included, on a small tmpfs: B saves an edit the store cannot
    take, and A edits the same card.  B keeps running and the file keeps the user's save; once
    there is room, the next scan (a restart) takes B's edit in and A's edit arrives — nothing a
    user saved is lost.  (Without the restart neither happens: see
    test_store_full_is_reported_and_retried and
    test_store_failure_during_sync_does_not_stop_redialing.)"""
    mnt = rig.tmpfs(tmp_path / "small", "6m")
    a, b, _ = started_pair(rig, {"hello.md": b"hello\n"}, b_space=mnt / "space")
    ballast, edit = full_store_edit(mnt, b.space / "hello.md")
    saved = (b.space / "hello.md").read_bytes()
    logged(b, r"(?i)disk is full|No space left")
    append(a.space / "hello.md", "A's edit while B's store is full\n")
    assert b.daemon.running, b.log()
    assert (b.space / "hello.md").read_bytes() == saved  # nothing of the user's save was undone

    ballast.unlink()
    b.daemon.stop()
    assert b.daemon.stopped_cleanly(), b.log()
    b.up(*NO_MDNS, "--peer", a.address())

    def merged(t: dict[str, bytes]) -> bool:
        hello = t.get("hello.md", b"").decode()
        return hello.count(edit) == 1 and hello.count("A's edit while B's store is full\n") == 1

    wait_identical([a, b], rig, extra=merged, timeout=60)


def test_store_full_is_reported_and_retried(rig: Rig, tmp_path: Path) -> None:
    mnt = rig.tmpfs(tmp_path / "small", "6m")
    dev = rig.founder("A", {"hello.md": b"hello\n"})
    shutil.move(dev.space, mnt / "space")
    dev.space = mnt / "space"
    dev.up("--offline")
    ballast, edit = full_store_edit(mnt, dev.space / "hello.md")
    first = logged(dev, r"(?i)internal error|disk is full|No space left")
    assert "internal error" not in first, dev.log()
    ballast.unlink()
    wait_until(lambda: edit in card_text(dev, "hello.md"), 20, "the edit ingested", context=dev.log)
    assert not rig.troubles(), rig.troubles()


def card_text(dev: Device, path: str) -> str:
    """What the store's document of the text card ``path`` holds (read-only peek)."""
    return card_texts(dev.space).get(path, "")


# == 3. read-only cards and folders ===============================================================


def test_immutable_card_file_is_retried_and_never_loses_the_local_save(rig: Rig) -> None:
    """``chattr +i`` on one of B's cards (root ignores ``chmod 0444``, not the immutable flag):
    A's edit of it cannot be written on B.  B reports it, retries, keeps syncing other cards
    (a ``chmod 0444`` card among them: Tack replaces files by rename, which needs only the
    folder's permission, and keeps the 0444 mode); once the flag is gone the edit lands, and a
    save the user makes on B at that moment is merged, not overwritten."""
    files = {"locked.md": b"locked card\n", "free.md": b"free card\n", "ro.md": b"0444 card\n"}
    a, b, _ = started_pair(rig, files)
    rig.immutable(b.space / "locked.md")
    os.chmod(b.space / "ro.md", 0o444)
    append(a.space / "locked.md", "A's edit of the locked card\n")
    append(a.space / "free.md", "A's edit of a free card\n")
    append(a.space / "ro.md", "A's edit of the 0444 card\n")

    problem_matching(b, r"Operation not permitted.*retrying")
    logged(b, r"Operation not permitted.*retry")
    wait_until(lambda: b"A's edit of a free card" in (read(b.space / "free.md") or b""), SYNC,
               "the free card synced", context=rig.logs)  # fmt: skip
    wait_until(lambda: b"A's edit of the 0444" in (read(b.space / "ro.md") or b""), SYNC,
               "the 0444 card synced", context=rig.logs)  # fmt: skip
    assert (b.space / "ro.md").stat().st_mode & 0o777 == 0o444
    assert (b.space / "locked.md").read_bytes() == b"locked card\n"
    assert b.daemon.running

    rig.mutable(b.space / "locked.md")
    append(b.space / "locked.md", "B's save right after unlocking\n")

    def merged(t: dict[str, bytes]) -> bool:
        text = t.get("locked.md", b"").decode()
        return (
            text.startswith("locked card\n")
            and text.count("A's edit of the locked card\n") == 1
            and text.count("B's save right after unlocking\n") == 1
        )

    wait_identical([a, b], rig, extra=merged, timeout=60)
    wait_until(lambda: no_problems(b), SYNC, "B's problems cleared", context=b.log)
    assert no_temp_files(b.space)
    assert not rig.troubles(), rig.troubles()


@pytest.mark.parametrize("how", ["chattr-home-board", "ro-bind-sub-board"])
def test_read_only_folder_is_retried_while_other_boards_sync(rig: Rig, how: str) -> None:
    """A folder of B's space becomes read-only — the home board made immutable
    (``chattr +i``: no entry can be created, replaced or removed in it) or a sub-board under a
    read-only bind mount.  A's edit and new card there cannot be written on B: B reports it and
    retries, B's files there stay as they were, and the other board keeps syncing; once the
    folder is writable again, everything lands."""
    files = {"top.md": b"top\n", "Sub/inner.md": b"inner\n"}
    a, b, _ = started_pair(rig, files)
    if how == "chattr-home-board":
        stuck, flowing, new_card, error = "top.md", "Sub/inner.md", "new.md", "not permitted"
        rig.immutable(b.space)
    else:
        stuck, flowing, new_card, error = "Sub/inner.md", "top.md", "Sub/new.md", "Read-only"
        rig.bind(b.space / "Sub", b.space / "Sub", read_only=True)
    append(a.space / stuck, "A's edit, stuck on B\n")
    (a.space / new_card).write_text("a new card, stuck on B\n")
    append(a.space / flowing, "A's edit, flowing to B\n")

    problem_matching(b, error)
    logged(b, error + r".*retry")
    wait_until(lambda: b"flowing to B" in (read(b.space / flowing) or b""), SYNC,
               "the other board synced", context=rig.logs)  # fmt: skip
    assert (b.space / stuck).read_bytes() == files[stuck]
    assert not (b.space / new_card).exists()
    assert b.daemon.running

    if how == "chattr-home-board":
        rig.mutable(b.space)
    else:
        rig.unmount(b.space / "Sub")

    def landed(t: dict[str, bytes]) -> bool:
        return (
            t.get(new_card) == b"a new card, stuck on B\n"
            and t.get(stuck) == files[stuck] + b"A's edit, stuck on B\n"
            and t.get(flowing) == files[flowing] + b"A's edit, flowing to B\n"
        )

    wait_identical([a, b], rig, extra=landed, timeout=60)
    wait_until(lambda: no_problems(b), SYNC, "B's problems cleared", context=b.log)
    assert no_temp_files(b.space)
    assert not rig.troubles(), rig.troubles()


def test_io_problems_name_the_file(rig: Rig) -> None:
    a, b, _ = started_pair(rig, {"locked.md": b"locked\n"})
    rig.immutable(b.space)  # neither locked.md nor board.canvas can be replaced on B
    append(a.space / "locked.md", "edit\n")
    (a.space / "second.md").write_text("a second card moves the layout\n")
    problem_matching(b, r"Operation not permitted")
    wait_until(lambda: len(b.problems()) >= 2, SYNC, "two problems on B", context=b.log)
    problems = b.problems()
    assert any(p.startswith("locked.md") for p in problems), problems
    assert any(p.startswith("board.canvas") for p in problems), problems


# == 4. the store locked by another process =======================================================

LOCKER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)  # Tack may be mid-write
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
conn.execute("ROLLBACK")
"""


class StoreLocker:
    """Another process holding ``BEGIN EXCLUSIVE`` on a space's store."""

    def __init__(self, rig: Rig, space: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(space / ".tack" / "store.sqlite")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        rig.helpers.append(self.proc)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks only until the lock is taken (or it died)
        assert line.strip() == "locked", f"the locker failed: {line!r} rc={self.proc.poll()}"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0


def test_store_locked_running_and_at_start_loses_no_edit(rig: Rig) -> None:
    """While Tack runs, another process locks the store and the user saves: Tack logs the
    lock and keeps running.  A ``tack up`` started while the store is locked waits, then exits 1
    naming the lock.  Once the lock is gone, the next start takes in every save made meanwhile."""
    dev = rig.founder("A", {"hello.md": b"hello\n"})
    dev.up("--offline")
    wait_until(lambda: card_text(dev, "hello.md") == "hello\n", SYNC, "the card", context=dev.log)

    locker = StoreLocker(rig, dev.space)
    append(dev.space / "hello.md", "saved while the store was locked\n")
    logged(dev, r"database is locked")  # today as an 'internal error' traceback: see the xfail
    assert dev.daemon.running
    locker.release()
    dev.daemon.stop()
    assert dev.daemon.stopped_cleanly(), dev.log()

    locker = StoreLocker(rig, dev.space)
    append(dev.space / "hello.md", "saved while Tack was stopped\n")
    started = time.monotonic()
    proc = run_tack(dev.home, "up", str(dev.space), "--offline", check=False, timeout=60)
    waited = time.monotonic() - started
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "locked" in proc.stderr and "store" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert waited >= 1.0, f"gave up after {waited:.2f} s without waiting for the lock"
    locker.release()

    dev.up("--offline")
    want = "hello\nsaved while the store was locked\nsaved while Tack was stopped\n"
    wait_until(lambda: card_text(dev, "hello.md") == want, SYNC, "both saves", context=dev.log)
    assert (dev.space / "hello.md").read_text() == want


def test_store_locked_while_running_is_retried(rig: Rig) -> None:
    dev = rig.founder("A", {"hello.md": b"hello\n"})
    dev.up("--offline")
    wait_until(lambda: card_text(dev, "hello.md") == "hello\n", SYNC, "the card", context=dev.log)
    locker = StoreLocker(rig, dev.space)
    append(dev.space / "hello.md", "saved while the store was locked\n")
    first = logged(dev, r"internal error|database is locked")
    assert "internal error" not in first, dev.log()
    locker.release()
    wait_until(lambda: "locked" in card_text(dev, "hello.md"), 20, "the save ingested",
               context=dev.log)  # fmt: skip


def test_store_failure_during_sync_does_not_stop_redialing(rig: Rig) -> None:
    a, b, _ = started_pair(rig, {"hello.md": b"hello\n"})
    locker = StoreLocker(rig, b.space)
    append(a.space / "hello.md", "A's edit while B's store is locked\n")
    logged(b, r"closed: .*database is locked")
    logged(b, r"disconnected from")  # next: the peers report, a store write, blocks on the lock
    assert answers(b.port()), "B's loop never answered"  # so that write has failed by now
    locker.release()
    wait_until(lambda: b"while B's store is locked" in (read(b.space / "hello.md") or b""), 10,
               "A's edit on B after the lock is gone", context=rig.logs)  # fmt: skip


def answers(port: int) -> bool:
    """Whether the daemon listening on ``port`` answers a TLS hello (only its event loop can:
    while a store write blocks that loop, this waits)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=15) as raw:
        raw.settimeout(15)
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            context.wrap_socket(raw).close()
    return True


# == 5. .tack/ deleted while running ==============================================================


def test_tack_dir_deleted_while_running_leaves_user_files_alone(rig: Rig) -> None:
    """``rm -rf .tack`` under a running B: B notices, says why, and stops with exit 1 without
    touching a file; the peer A keeps its copy and keeps running; a save made on B after the
    deletion stays in B's folder."""
    a, b, _ = started_pair(rig, {"hello.md": b"hello\n", "keep.md": b"keep me\n"})
    before = tree(b.space)
    shutil.rmtree(b.space / ".tack")
    assert b.daemon.proc is not None
    wait_until(lambda: b.daemon.proc is not None and b.daemon.proc.poll() is not None, SYNC,
               "B to stop", context=rig.logs)  # fmt: skip
    assert b.daemon.proc.returncode == 1
    assert re.search(r"\.tack folder was deleted", b.daemon.log())
    append(b.space / "keep.md", "B's save after losing .tack\n")
    after = tree(b.space)
    assert {p: d for p, d in after.items() if p != "keep.md"} == {
        p: d for p, d in before.items() if p != "keep.md"
    }
    assert after["keep.md"] == b"keep me\nB's save after losing .tack\n"
    assert a.daemon.running
    proc = run_tack(b.home, "status", str(b.space), check=False)
    assert proc.returncode == 1 and "not a Tack space" in proc.stderr, proc


def test_tack_dir_deletion_is_detected(rig: Rig) -> None:
    dev = rig.founder("A", {"hello.md": b"hello\n"})
    dev.up("--offline")
    wait_until(lambda: card_text(dev, "hello.md") == "hello\n", SYNC, "the card", context=dev.log)
    shutil.rmtree(dev.space / ".tack")
    append(dev.space / "hello.md", "a save after .tack was deleted\n")
    logged(dev, r"\.tack.*(deleted|missing|gone|removed)", timeout=5)
