"""Several real ``tack up`` processes syncing over real sockets (DESIGN §4).

Each device is a separate ``tack`` process with its own ``TACK_HOME`` and its own folder; the
tests edit the folders directly and wait (by polling conditions, never by fixed sleeps) until
the folders agree.  Scenarios:

* three devices in a chain (A <- B <- C, manual ``--peer`` only): concurrent edits of one text
  card, a new ~300 KB binary card, a rename, a new sub-board — all three folders end up
  byte-for-byte identical (``board.canvas`` files included), every inserted line exactly once;
  and a big blob relayed through the middle device with nothing else going on;
* SIGTERM with a peer connected: exit 0 and no traceback;
* mDNS discovery between two processes on loopback;
* mDNS discovery between two processes in two private network namespaces (tests/netns.py);
* both devices dialing each other at the same moment: one session survives;
* kill -9 of one device, edits on both sides while it is down, restart: both edits merge;
* a read-only replica: receives, but its edits stay local and the writer refuses them; and
  ``tack status`` of a just-joined read-only replica says so;
* a recording TCP proxy between two devices: nothing of the space is readable on the wire.

Networking never leaves this machine: daemons listen on ``127.0.0.1`` and either run
``--no-mdns`` or multicast only on ``127.0.0.1`` (or, inside namespaces, on the veth address).
Every process started here is stopped at teardown, and namespaces are always deleted.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from netns import NetnsUnavailable, VethPair, veth_pair
from realproc import (
    CANVAS,
    TACK,
    Daemon,
    agrees,
    card_id,
    run_tack,
    status,
    tack_env,
    wait_until,
)

LOOPBACK = "127.0.0.1"
NO_MDNS = ("--no-mdns", "--listen", LOOPBACK)
LOOPBACK_MDNS = ("--listen", LOOPBACK, "--mdns-interface", LOOPBACK)
SYNC_TIMEOUT = 30.0
BIG_BLOB = 6 * 1024 * 1024
"""Big enough that B is still fetching it from A when C asks B for it (and when A's follow-up
layout update, which would make C ask again, has come and gone)."""
LISTENING = re.compile(r"listening on (\S+):(\d+) for peers")
_TROUBLE = re.compile(r"Traceback|internal error|Unhandled exception|unhandled exception")


# -- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago on loopback (for daemons that must know it early)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class PrefixedDaemon(Daemon):
    """A :class:`Daemon` whose command line runs behind a prefix (``ip netns exec NS``)."""

    def __init__(self, space: Path, home: Path, args: Sequence[str], prefix: Sequence[str]) -> None:
        super().__init__(space, home, args)
        self.prefix = tuple(prefix)

    def start(self, wait_ready: bool = True, timeout: float = 30) -> Daemon:
        self.proc = subprocess.Popen(
            [*self.prefix, str(TACK), "up", str(self.space), *self.args],
            env=tack_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for_line("Tack is watching", timeout)
        return self


@dataclass
class Device:
    """One device: a folder, a ``TACK_HOME``, and (while up) a ``tack up`` process."""

    name: str
    space: Path
    home: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def daemon(self) -> Daemon:
        assert self.daemons, f"{self.name} was never started"
        return self.daemons[-1]

    def up(
        self,
        *args: str,
        prefix: Sequence[str] = (),
        wait_ready: bool = True,
    ) -> Daemon:
        daemon: Daemon = (
            PrefixedDaemon(self.space, self.home, args, prefix)
            if prefix
            else Daemon(self.space, self.home, args)
        )
        self.daemons.append(daemon)
        daemon.start(wait_ready=wait_ready)
        return daemon

    def port(self) -> int:
        """The port this device's running daemon listens on (read from its log)."""

        def read() -> int:
            for line in self.daemon.lines:
                match = LISTENING.search(line)
                if match:
                    return int(match.group(2))
            return 0  # not yet

        return wait_until(read, 10, f"{self.name}'s listening port", context=self.daemon.log)

    def address(self) -> str:
        return f"{LOOPBACK}:{self.port()}"

    def status(self) -> dict[str, Any]:
        return status(self.space, self.home)

    def peers(self) -> list[dict[str, Any]]:
        peers: list[dict[str, Any]] = self.status().get("peers", [])
        return peers

    def log(self) -> str:
        return f"--- {self.name} ({self.space}) ---\n" + "\n".join(d.log() for d in self.daemons)


class Lan:
    """Makes devices in a test's temp dir; stops every process they started at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[Device] = []
        self._before_stop: dict[int, list[str]] = {}

    def device(self, name: str) -> Device:
        home = self.root / f"home-{name}"
        home.mkdir()
        dev = Device(name, (self.root / f"space-{name}").resolve(), home)
        self.devices.append(dev)
        return dev

    def founder(self, name: str, files: dict[str, bytes] | None = None) -> Device:
        """A device that makes a new space (with ``files`` in it before ``tack init``)."""
        dev = self.device(name)
        dev.space.mkdir()
        for rel, data in (files or {}).items():
            target = dev.space / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        run_tack(dev.home, "init", str(dev.space))
        return dev

    def joiner(self, name: str, link: str) -> Device:
        dev = self.device(name)
        run_tack(dev.home, "join", link, str(dev.space))
        return dev

    def logs(self) -> str:
        return "\n".join(d.log() for d in self.devices)

    def stop(self, daemon: Daemon) -> int:
        """Stop one process (SIGTERM), noting what it had logged before it was told to."""
        self._before_stop.setdefault(id(daemon), list(daemon.lines))
        return daemon.stop()

    def stop_all(self) -> None:
        for dev in self.devices:
            for daemon in dev.daemons:
                if daemon.running:
                    with contextlib.suppress(Exception):
                        self.stop(daemon)

    def working_lines(self) -> list[tuple[str, str]]:
        """(device, line) for every line logged while the devices worked, not while stopping."""
        return [
            (dev.name, line)
            for dev in self.devices
            for daemon in dev.daemons
            for line in self._before_stop.get(id(daemon), daemon.lines)
        ]


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    net = Lan(tmp_path)
    try:
        yield net
    finally:
        net.stop_all()
    # Internal errors while the devices worked fail the test; what happens once they are told
    # to stop is test_clean_shutdown_with_a_connected_peer's business.
    troubles = [f"{name}: {line}" for name, line in net.working_lines() if _TROUBLE.search(line)]
    assert not troubles, "internal errors in the logs:\n" + "\n".join(troubles) + net.logs()


def share(dev: Device, read_only: bool = False) -> str:
    args = ["share", str(dev.space), *(["--read-only"] if read_only else [])]
    link = run_tack(dev.home, *args).stdout.strip()
    assert link.startswith("tack:"), link
    return link


def tree(space: Path) -> dict[str, bytes]:
    """Every file of the space outside ``.tack/`` (board.canvas files included), by path."""
    out: dict[str, bytes] = {}
    for top, subdirs, names in os.walk(space):
        rel_top = os.path.relpath(top, space)
        subdirs[:] = [d for d in subdirs if not (rel_top == "." and d == ".tack")]
        for name in names:
            full = Path(top) / name
            with contextlib.suppress(FileNotFoundError):
                out[full.relative_to(space).as_posix()] = full.read_bytes()
    return out


def tree_diff(trees: dict[str, dict[str, bytes]]) -> list[str]:
    """How the folders differ (names of devices and paths); [] when identical."""
    names = list(trees)
    first = trees[names[0]]
    diffs: list[str] = []
    for other in names[1:]:
        theirs = trees[other]
        for path in sorted(set(first) | set(theirs)):
            mine, their = first.get(path), theirs.get(path)
            if mine is None or their is None:
                where = other if mine is None else names[0]
                diffs.append(f"{path} only on {where}")
            elif mine != their:
                diffs.append(f"{path} differs between {names[0]} and {other}")
    return diffs


def wait_identical(
    devices: Sequence[Device],
    lan: Lan,
    extra: Callable[[dict[str, bytes]], bool] | None = None,
    timeout: float = SYNC_TIMEOUT,
) -> dict[str, bytes]:
    """Wait until all devices' folders are byte-for-byte identical (and ``extra`` holds)."""

    def same() -> dict[str, bytes]:
        trees = {d.name: tree(d.space) for d in devices}
        diffs = tree_diff(trees)
        if diffs:
            raise AssertionError("; ".join(diffs[:8]))
        first = trees[devices[0].name]
        if extra is not None and not extra(first):
            return {}  # not yet
        return first

    return wait_until(
        same,
        timeout,
        "identical folders on " + ", ".join(d.name for d in devices),
        context=lan.logs,
    )


def has(path: Path, needle: bytes) -> bool:
    try:
        return needle in path.read_bytes()
    except FileNotFoundError:
        return False


def connected(dev: Device) -> list[dict[str, Any]]:
    return [p for p in dev.peers() if p["connected"]]


def lines_of(dev: Device, needle: str) -> list[str]:
    return [line for d in dev.daemons for line in d.lines if needle in line]


LINES = "".join(f"line {i}\n" for i in range(1, 11)).encode()


# -- 1. three devices, manual peers, a chain ----------------------------------------------------


def test_three_devices_chain_converge_byte_for_byte(lan: Lan) -> None:
    a = lan.founder("A", {"Welcome.md": LINES, "notes.md": b"# Notes\n\nkeep me\n"})
    link = share(a)
    b = lan.joiner("B", link)
    c = lan.joiner("C", link)
    a.up(*NO_MDNS)
    b.up(*NO_MDNS, "--peer", a.address())
    c.up(*NO_MDNS, "--peer", b.address())  # C knows only B: A's edits reach C through B

    wait_identical([a, b, c], lan, extra=lambda t: "Welcome.md" in t and "notes.md" in t)
    notes_id = card_id(a.space, a.home, "notes.md")
    assert notes_id is not None

    # Concurrent edits on all three devices, without waiting in between.
    blob = secrets.token_bytes(300 * 1024)
    inserted = {
        "A": "A was here (top)",
        "B": "B was here (after line 5)",
        "C": "C was here (end)",
    }
    welcome_a = LINES.decode().splitlines(keepends=True)
    welcome_b = list(welcome_a)
    welcome_c = list(welcome_a)
    welcome_a.insert(0, inserted["A"] + "\n")
    welcome_b.insert(5, inserted["B"] + "\n")
    welcome_c.append(inserted["C"] + "\n")
    (a.space / "Welcome.md").write_text("".join(welcome_a))
    (b.space / "Welcome.md").write_text("".join(welcome_b))
    (c.space / "Welcome.md").write_text("".join(welcome_c))
    (a.space / "photo.bin").write_bytes(blob)
    (b.space / "notes.md").rename(b.space / "renamed.md")
    (c.space / "Roadmap").mkdir()
    (c.space / "Roadmap" / "Q1.md").write_text("ship it\n")

    def converged(t: dict[str, bytes]) -> bool:
        welcome = t.get("Welcome.md", b"").decode()
        return (
            all(welcome.count(line) == 1 for line in inserted.values())
            and t.get("photo.bin") == blob
            and "renamed.md" in t
            and "notes.md" not in t
            and t.get("Roadmap/Q1.md") == b"ship it\n"
            and "Roadmap/board.canvas" in t
        )

    final = wait_identical([a, b, c], lan, extra=converged)

    welcome = final["Welcome.md"].decode()
    for i in range(1, 11):
        assert welcome.count(f"line {i}\n") == 1, welcome
    assert welcome.splitlines()[0] == inserted["A"], welcome
    assert welcome.splitlines()[-1] == inserted["C"], welcome
    assert final["renamed.md"] == b"# Notes\n\nkeep me\n"
    assert CANVAS in final
    for dev in (a, b, c):
        # The renamed card kept its identity everywhere; status agrees with each folder.
        assert card_id(dev.space, dev.home, "renamed.md") == notes_id, dev.name
        wait_until(partial(agrees, dev.space, dev.home), 15, f"{dev.name} agrees")
    assert [p["connected"] for p in b.peers()] == [True, True], b.peers()


def test_binary_card_relays_through_the_middle_device(lan: Lan) -> None:
    """A <- B <- C: C asks B for a new blob as soon as it hears of the card, before B has
    fetched it from A (B answers "don't have it"); C must still get it once B does, even when
    nothing else happens in the space afterwards."""
    a = lan.founder("A", {"readme.md": b"chain\n"})
    link = share(a)
    b = lan.joiner("B", link)
    c = lan.joiner("C", link)
    a.up(*NO_MDNS)
    b.up(*NO_MDNS, "--peer", a.address())
    c.up(*NO_MDNS, "--peer", b.address())
    wait_identical([a, b, c], lan, extra=lambda t: "readme.md" in t)

    blob = secrets.token_bytes(BIG_BLOB)
    (a.space / "big.bin").write_bytes(blob)
    wait_until(
        lambda: has(b.space / "big.bin", blob[:64]), SYNC_TIMEOUT, "big.bin on B", context=lan.logs
    )
    wait_identical([a, b, c], lan, extra=lambda t: t.get("big.bin") == blob, timeout=20)


def test_up_with_join_joins_and_syncs_in_one_command_and_again_on_restart(lan: Lan) -> None:
    """``tack up --join LINK DIR``: a missing DIR becomes a replica of the link's space and
    is synced by the same process; run again on that DIR, it just runs.  A non-empty folder
    that is not the space is refused before anything starts."""
    a = lan.founder("A", {"readme.md": b"one command\n", "board/card.md": b"card\n"})
    link = share(a)
    a.up(*NO_MDNS)
    b = lan.device("B")
    assert not b.space.exists()
    b.up(*NO_MDNS, "--join", link, "--peer", a.address())
    wait_identical([a, b], lan, extra=lambda t: "board/card.md" in t)
    lan.stop(b.daemon)
    (a.space / "later.md").write_bytes(b"after the restart\n")
    b.up(*NO_MDNS, "--join", link, "--peer", a.address())
    wait_identical([a, b], lan, extra=lambda t: "later.md" in t)

    c = lan.device("C")
    c.space.mkdir()
    (c.space / "mine.md").write_bytes(b"not the space's\n")
    refused = run_tack(c.home, "up", str(c.space), "--join", link, *NO_MDNS, check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    assert sorted(p.name for p in c.space.iterdir()) == ["mine.md"]


def test_clean_shutdown_with_a_connected_peer(lan: Lan) -> None:
    """SIGTERM to a device that a peer is connected to: exit 0, no traceback."""
    a = lan.founder("A", {"x.md": b"x\n"})
    b = lan.joiner("B", share(a))
    a.up(*NO_MDNS)
    b.up(*NO_MDNS, "--peer", a.address())  # A holds the accepted (listener-side) connection
    wait_identical([a, b], lan, extra=lambda t: "x.md" in t)
    wait_until(lambda: connected(a) and connected(b), SYNC_TIMEOUT, "both connected")
    for dev in (a, b):
        code = lan.stop(dev.daemon)
        assert dev.daemon.stopped_cleanly() and not [
            line for line in dev.daemon.lines if _TROUBLE.search(line)
        ], f"{dev.name} did not stop cleanly (exit {code})\n{dev.log()}"


# -- 2. mDNS on loopback -------------------------------------------------------------------------


def test_mdns_discovery_on_loopback(lan: Lan) -> None:
    a = lan.founder("A", {"hello.md": b"hello\n"})
    b = lan.joiner("B", share(a))
    a.up(*LOOPBACK_MDNS)
    b.up(*LOOPBACK_MDNS)

    wait_until(
        lambda: has(b.space / "hello.md", b"hello"), SYNC_TIMEOUT, "hello.md on B", context=lan.logs
    )
    (a.space / "found-by-mdns.md").write_text("no --peer needed\n")
    wait_until(
        lambda: has(b.space / "found-by-mdns.md", b"no --peer needed"),
        SYNC_TIMEOUT,
        "found-by-mdns.md on B",
        context=lan.logs,
    )
    (b.space / "reply.md").write_text("back to A\n")
    wait_identical([a, b], lan, extra=lambda t: "reply.md" in t)
    assert len(connected(a)) == 1 and len(connected(b)) == 1, (a.peers(), b.peers())


# -- 3. mDNS across two network namespaces --------------------------------------------------------


@pytest.fixture
def veth() -> Iterator[VethPair]:
    try:
        with veth_pair() as pair:
            yield pair
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")


def test_mdns_discovery_across_network_namespaces(lan: Lan, veth: VethPair) -> None:
    a = lan.founder("A", {"hello.md": b"hello from namespace A\n"})
    b = lan.joiner("B", share(a))
    try:
        for dev, ns, addr in ((a, veth.ns_a, veth.addr_a), (b, veth.ns_b, veth.addr_b)):
            dev.up("--listen", addr, "--mdns-interface", addr, prefix=veth.exec_prefix(ns))
        wait_until(
            lambda: has(b.space / "hello.md", b"namespace A"),
            SYNC_TIMEOUT,
            "hello.md on B",
            context=lan.logs,
        )
        (b.space / "from-b.md").write_text("over the veth pair\n")
        wait_identical([a, b], lan, extra=lambda t: "from-b.md" in t)
        # Each reached the other at its veth address, found by mDNS (no --peer was given).
        assert b.daemon.wait_for_line("synced with")
        synced = lines_of(a, "synced with") + lines_of(b, "synced with")
        assert all(veth.addr_a in s or veth.addr_b in s for s in synced), synced
    finally:
        lan.stop_all()  # before the namespaces go away


# -- 4. simultaneous dial -------------------------------------------------------------------------


def surviving_sessions(dev: Device) -> int:
    return len(lines_of(dev, "synced with")) - len(lines_of(dev, "disconnected from"))


def test_simultaneous_dial_keeps_one_session(lan: Lan) -> None:
    a = lan.founder("A", {"a.md": b"from A\n"})
    b = lan.joiner("B", share(a))
    port_a, port_b = free_port(), free_port()
    a.up(*NO_MDNS, "--port", str(port_a), "--peer", f"{LOOPBACK}:{port_b}", wait_ready=False)
    b.up(*NO_MDNS, "--port", str(port_b), "--peer", f"{LOOPBACK}:{port_a}", wait_ready=False)
    a.daemon.wait_for_line("Tack is watching")
    b.daemon.wait_for_line("Tack is watching")
    wait_identical([a, b], lan, extra=lambda t: "a.md" in t)

    def one_session(dev: Device) -> bool:
        peers = dev.peers()
        if len(peers) != 1 or not peers[0]["connected"]:
            raise AssertionError(f"{dev.name} peers: {peers}")
        if surviving_sessions(dev) != 1:
            raise AssertionError(f"{dev.name}: {surviving_sessions(dev)} live sessions")
        return True

    for dev in (a, b):
        wait_until(
            partial(one_session, dev),
            SYNC_TIMEOUT,
            f"one session on {dev.name}",
            context=lan.logs,
        )

    (a.space / "a.md").write_text("from A\nedited on A\n")
    wait_until(
        lambda: has(b.space / "a.md", b"edited on A"),
        SYNC_TIMEOUT,
        "A's edit on B",
        context=lan.logs,
    )
    (b.space / "b.md").write_text("from B\n")
    wait_identical([a, b], lan, extra=lambda t: "b.md" in t)
    for dev in (a, b):
        assert one_session(dev)
        closes = [line for line in lines_of(dev, "closed") if "duplicate" not in line]
        reason = f"{dev.name} closed a session for another reason: {closes}"
        assert not closes, f"{reason}\n{lan.logs()}"


# -- 5. reconnect after kill -9 ------------------------------------------------------------------


def test_reconnect_after_kill_merges_edits_from_both_sides(lan: Lan) -> None:
    a = lan.founder("A", {"notes.md": LINES})
    b = lan.joiner("B", share(a))
    port_b = free_port()
    b.up(*NO_MDNS, "--port", str(port_b))
    a.up(*NO_MDNS, "--peer", f"{LOOPBACK}:{port_b}")  # A keeps dialing B
    wait_identical([a, b], lan, extra=lambda t: t.get("notes.md") == LINES)

    assert b.daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_until(lambda: not connected(a), SYNC_TIMEOUT, "A notices B is gone", context=lan.logs)

    (a.space / "notes.md").write_text("edit on A while B is down\n" + LINES.decode())
    (b.space / "notes.md").write_text(LINES.decode() + "edit on B while it is down\n")
    (b.space / "offline.md").write_text("made while B was down\n")

    b.up(*NO_MDNS, "--port", str(port_b))

    def merged(t: dict[str, bytes]) -> bool:
        notes = t.get("notes.md", b"").decode()
        return (
            notes.count("edit on A while B is down") == 1
            and notes.count("edit on B while it is down") == 1
            and "offline.md" in t
        )

    final = wait_identical([a, b], lan, extra=merged)
    assert (
        final["notes.md"]
        == (
            "edit on A while B is down\n" + LINES.decode() + "edit on B while it is down\n"
        ).encode()
    )
    assert len(connected(a)) == 1 and len(connected(b)) == 1, (a.peers(), b.peers())


# -- 6. read-only replicas -----------------------------------------------------------------------


def test_read_only_replica_receives_but_its_edits_stay_local(lan: Lan) -> None:
    w = lan.founder("W", {"plan.md": b"the plan\n"})
    r = lan.joiner("R", share(w, read_only=True))
    w.up(*NO_MDNS)
    r.up(*NO_MDNS, "--peer", w.address())
    wait_identical([w, r], lan, extra=lambda t: "plan.md" in t)
    assert r.status()["access"] == "read-only"
    # A peer's access is "read"/"write" (the link's "read-only"/"read-write" is also accepted).
    assert [p["access"].split("-")[0] for p in connected(w)] == ["read"], w.peers()
    assert [p["access"].split("-")[-1] for p in connected(r)] == ["write"], r.peers()

    (r.space / "plan.md").write_text("the plan\nthe reader's own idea\n")
    (r.space / "reader-only.md").write_text("a card only the reader has\n")

    wait_until(
        lambda: card_id(r.space, r.home, "reader-only.md"), SYNC_TIMEOUT, "R ingesting its edit"
    )
    # The writer's edits still reach the reader, and merge with the reader's local edit.
    (w.space / "plan.md").write_text("from the writer\nthe plan\n")
    wait_until(
        lambda: has(r.space / "plan.md", b"from the writer"),
        SYNC_TIMEOUT,
        "W's edit on R",
        context=lan.logs,
    )
    assert (w.space / "plan.md").read_bytes() == b"from the writer\nthe plan\n"
    assert not (w.space / "reader-only.md").exists()
    assert (r.space / "plan.md").read_bytes() == (
        b"from the writer\nthe plan\nthe reader's own idea\n"
    )
    assert (r.space / "reader-only.md").read_bytes() == b"a card only the reader has\n"
    assert b"reader" not in b"".join(tree(w.space).values())

    # A read-only replica never even offers its edits (its status says they are not shared);
    # a reader that sends updates anyway is refused — tests/test_security.py drives one.
    assert r.status()["shared"] is False
    assert all(p["refused"] == 0 for p in w.peers())


def test_status_of_a_fresh_read_only_replica_says_read_only(lan: Lan) -> None:
    w = lan.founder("W", {"plan.md": b"the plan\n"})
    r = lan.joiner("R", share(w, read_only=True))
    # Before its first `tack up`: the access comes from the share link it joined with.
    assert r.status()["access"] == "read-only"
    assert r.status()["shared"] is False


# -- 7. nothing readable on the wire --------------------------------------------------------------


class RecordingProxy:
    """A TCP relay from a local port to ``target`` that keeps every byte both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.recorded = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        self._spawn(self._accept_loop)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.recorded += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def snapshot(self) -> bytes:
        with self._lock:
            return bytes(self.recorded)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def test_traffic_between_devices_is_unreadable(lan: Lan) -> None:
    secret_text = "SECRET-PINEAPPLE-1234"
    secret_name = "pineapple-plans-7781.md"
    a = lan.founder("A", {"intro.md": b"public intro\n"})
    link = share(a)
    b = lan.joiner("B", link)
    a.up(*NO_MDNS)
    proxy = RecordingProxy((LOOPBACK, a.port()))
    try:
        b.up(*NO_MDNS, "--peer", f"{LOOPBACK}:{proxy.port}")
        wait_identical([a, b], lan, extra=lambda t: "intro.md" in t)
        (a.space / secret_name).write_text(f"the {secret_text} recipe\n")
        (b.space / "reply-kiwi-5566.md").write_text("KIWI-REPLY-9988\n")
        wait_identical([a, b], lan, extra=lambda t: secret_name in t and "reply-kiwi-5566.md" in t)
        space_id = a.status()["space"]["id"]
        device_a = a.status()["device"]
        wire = proxy.snapshot()
    finally:
        lan.stop_all()
        proxy.close()
    assert proxy.connections >= 1
    assert len(wire) > 2000, f"only {len(wire)} bytes went through the proxy"
    assert wire[0] == 0x16, "the first bytes are not a TLS handshake record"
    for needle in (
        secret_text,
        secret_name,
        "pineapple",
        "KIWI-REPLY-9988",
        "reply-kiwi-5566",
        "intro.md",
        "public intro",
        space_id,
        device_a,
        link.removeprefix("tack:"),
    ):
        for form in (needle.encode(), needle.encode("utf-16-le")):
            assert form not in wire, f"{needle!r} crossed the wire in the clear"
