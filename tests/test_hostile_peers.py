"""Hostile peers against a real ``tack up``: floods, connection storms and slowloris.

DESIGN §4 promises that anything from the network is bounded: a handshake that does not finish
in time, too many connections (``engine.network.MAX_CONNECTIONS``) and malformed frames are
closed "without disturbing other peers".  Here the victim is a real daemon (``tack up DIR
--no-mdns --listen 127.0.0.1`` with its own ``TACK_HOME``) on loopback, and the attackers are
this test process, over real TCP and real TLS 1.3 with a device identity of their own:

* **floods from a joined peer** -- a writer sends thousands of updates as fast as the socket
  takes them: the daemon's memory (``VmRSS``/``VmHWM`` in ``/proc/PID/status``) stays
  bounded, every update lands, and an honest peer still syncs.  Also a read-only peer that
  invents presence clients, one that asks for a large blob many times without reading, and a
  writer that puts malformed fields into a card entry;
* **connection storms** -- hundreds of TLS connections that never say a word, and hundreds of
  raw TCP connections that never start TLS: the daemon stays up, refuses what is over its
  limit, holds a bounded number of sockets, and serves an honest peer meanwhile and after;
* **slowloris** -- connections that send their ``Hello`` (or their TLS ClientHello) one byte a
  second: each is closed within the handshake timeout, and an honest peer syncs meanwhile.

What failed was kept as strict xfails until fixed; each such test's docstring now says what
it caught.

The honest peer is an in-process :class:`~engine.session.PeerSession` over a fresh TLS
connection (how long it takes to reach sync and see the daemon's card is the measure of
"responsive"), or a second real daemon joined with the share link.  Every wait polls a
condition against a deadline; the only fixed pauses are the slowloris's one second between
bytes.  Each test stops the daemons it started and finishes in well under a minute.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Text
from realproc import Daemon, run_tack, wait_until

from engine import SPACE_DOC, MemoryBlobs, Origin, Replica, Store
from engine.identity import device_id_of_cert, load_or_create
from engine.network import (
    HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_HANDSHAKES,
    MAX_HANDSHAKES_PER_ADDRESS,
)
from engine.session import PeerSession, Phase, Role, SessionClosed
from engine.sharelink import SpaceKeys, parse_link, read_only
from engine.spacedoc import TEXT_KEY, cards_map
from engine.tls import TlsMaterial, client_context, issue_leaf
from engine.wire import (
    PROTOCOL_VERSION,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    Awareness,
    BlobData,
    BlobGet,
    FrameDecoder,
    Hello,
    Message,
    Sync,
    decode,
    encode,
    encode_frame,
    ysync,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) for peers")
NO_MDNS = ("--no-mdns", "--listen", "127.0.0.1")
HELLO_TEXT = "hello from A\n"


# -- the victim's vital signs -------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``/``VmHWM`` (kB) and ``Threads`` of a process, from ``/proc/PID/status``."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def sockets_of(pid: int) -> int:
    """How many sockets the process holds open."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith("socket:"):
                count += 1
    return count


# -- identities and an honest in-process peer ---------------------------------------------------


@dataclass(frozen=True)
class Dev:
    name: str
    material: TlsMaterial


def make_dev(home: Path, name: str) -> Dev:
    return Dev(name, issue_leaf(load_or_create(home, name=name)))


@pytest.fixture(scope="module")
def devs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dev]:
    root = tmp_path_factory.mktemp("identities")
    return {n: make_dev(root / n, n) for n in ("honest", "flooder", "idle", "slow")}


class Peer:
    """A blocking TLS connection from this process that drives a real :class:`PeerSession`.

    Every message the daemon sends is also decoded into :attr:`frames`.
    """

    def __init__(
        self,
        port: int,
        dev: Dev,
        keys: SpaceKeys,
        timeout: float = 10,
        raw: socket.socket | None = None,
    ) -> None:
        """Connect (or start TLS on ``raw``, a TCP connection already open) and say Hello."""
        if raw is None:
            raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.settimeout(timeout)
        self.sock = client_context(dev.material).wrap_socket(raw)
        peer_cert = self.sock.getpeercert(binary_form=True)
        assert peer_cert
        self.replica = Replica(Store.memory(), device=dev.name)
        self.frames: list[Message] = []
        self.eof = False
        self.closed_reason = ""
        self._decoder = FrameDecoder()
        self.session = PeerSession(
            Role.DIALER,
            self.replica,
            MemoryBlobs(),
            keys,
            my_cert=dev.material.leaf_der,
            peer_cert=peer_cert,
            peer_id="the-daemon",
            nonce=secrets.token_bytes(32),
            name=dev.name,
        )
        self.send(self.session.start())

    def send(self, data: bytes) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(data)

    def pump(self, until: Callable[[], object], timeout: float) -> bool:
        """Read and answer until ``until()`` holds, the far end hangs up, or time runs out."""
        deadline = time.monotonic() + timeout
        while not until():
            if self.eof or time.monotonic() >= deadline:
                return bool(until())
            self.sock.settimeout(min(0.2, max(0.01, deadline - time.monotonic())))
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                self.eof = True
                continue
            if not data:
                self.eof = True
                continue
            self.frames.extend(decode(f) for f in self._decoder.feed(data))
            if self.session.phase is Phase.CLOSED:
                continue
            try:
                reply = self.session.receive(data)
            except SessionClosed as exc:
                self.closed_reason = exc.reason
                continue
            if reply:
                self.send(reply)
        return True

    def card_id(self, path: str) -> str | None:
        card = self.replica.card_at(path)
        return card.id if card is not None else None

    def has_text(self, path: str, text: str) -> bool:
        """Whether the card at ``path`` is here and its text begins with ``text``."""
        card_id = self.card_id(path)
        return card_id is not None and self.replica.text(card_id).startswith(text)

    def round_trip(self, timeout: float = 30) -> None:
        """Wait until the daemon has handled everything sent so far: ask for the space's
        missing updates (SyncStep1) and wait for its answer, which comes after the rest."""

        def answers() -> int:
            return sum(
                1
                for m in self.frames
                if isinstance(m, Sync) and m.doc_id == SPACE_DOC and m.payload[1] == SYNC_STEP2
            )

        before = answers()
        step1 = ysync(SYNC_STEP1, self.replica.state_vector(SPACE_DOC))
        self.send(encode_frame(encode(Sync(SPACE_DOC, step1))))
        assert self.pump(lambda: answers() > before, timeout), "the daemon did not answer"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def honest_sync_seconds(port: int, dev: Dev, keys: SpaceKeys, limit: float) -> float:
    """Seconds an honest dialer takes to connect, prove, sync and see ``hello.md``'s text;
    ``inf`` if it does not manage within ``limit`` (refused, cut off or too slow)."""
    started = time.monotonic()
    try:
        peer = Peer(port, dev, keys, timeout=limit)
    except (OSError, ssl.SSLError):
        return float("inf")
    try:
        left = limit - (time.monotonic() - started)
        if not peer.pump(lambda: peer.has_text("hello.md", HELLO_TEXT), max(0.0, left)):
            return float("inf")
        return time.monotonic() - started
    finally:
        peer.close()


# -- the victim ---------------------------------------------------------------------------------


class Victim:
    """Daemon A on 127.0.0.1 with one text card; its write link; an optional honest daemon B."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home, self.space = root / "home-a", root / "space-a"
        self.home.mkdir()
        run_tack(self.home, "init", str(self.space))
        (self.space / "hello.md").write_text(HELLO_TEXT, encoding="utf-8")
        self.a = Daemon(self.space, self.home, NO_MDNS)
        self.b: Daemon | None = None
        self.b_space = root / "space-b"
        try:
            self.a.start()
            match = LISTENING.search(self.a.wait_for_line("listening on"))
            assert match, self.a.log()
            self.port = int(match.group(1))
            self.link = run_tack(self.home, "share", str(self.space)).stdout.strip()
            self.keys = parse_link(self.link)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.a.proc is not None
        return self.a.proc.pid

    def honest_daemon(self) -> Daemon:
        if self.b is None:
            home = self.root / "home-b"
            home.mkdir()
            run_tack(home, "join", self.link, str(self.b_space))
            args = (*NO_MDNS, "--peer", f"127.0.0.1:{self.port}")
            self.b = Daemon(self.b_space, home, args)
            self.b.start()  # assigned first, so that stop() ends it even if this fails
        return self.b

    def context(self) -> str:
        return self.a.log()[-6000:] + ("\n" + self.b.log()[-3000:] if self.b else "")

    def assert_healthy(self) -> None:
        assert self.a.running, self.context()
        assert not self.a.troubles(), self.context()

    def stop(self) -> None:
        for daemon in (self.b, self.a):
            if daemon is not None and daemon.proc is not None:
                daemon.stop()


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Victim]:
    world = Victim(tmp_path)
    try:
        yield world
    finally:
        world.stop()


def varint(value: int) -> bytes:
    """A lib0 unsigned varint (as y-protocols' awareness encoding uses)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(message: Message) -> bytes:
    return encode_frame(encode(message))


def client_hello(dev: Dev) -> bytes:
    """The first flight of a TLS 1.3 client (its ClientHello), as it would go on the wire."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(dev.material).wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def growth_kb(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after[key] - before[key]


MB = 1024  # /proc/PID/status counts in kB


# == 1. floods from a joined peer ================================================================

FLOOD_UPDATES = 5000
FLOOD_MEMORY = 64 * MB
HONEST_LIMIT = 20.0
"""How long an honest peer may take to connect, prove and sync while the daemon is under
attack.  Unloaded it takes well under a second (a 5000-update flood is applied in about one);
the bound is generous for loaded CI machines, yet below the 2 x 10 s that two handshake
timeouts would cost."""


def test_an_update_flood_keeps_memory_bounded_and_honest_peers_in_sync(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    b = victim.honest_daemon()
    wait_until(lambda: (victim.b_space / "hello.md").exists(), 30, context=victim.context)
    flooder = Peer(victim.port, devs["flooder"], victim.keys)
    try:
        assert flooder.pump(lambda: flooder.has_text("hello.md", HELLO_TEXT), 15)
        card = flooder.card_id("hello.md")
        assert card is not None
        burst: list[bytes] = []
        flooder.replica.changes.subscribe(lambda c: burst.append(flooder.session.local_change(c)))

        def append_x(doc: Any) -> None:
            text = doc.get(TEXT_KEY, type=Text)
            text.insert(len(str(text)), "x")

        for _ in range(FLOOD_UPDATES):  # one update, one frame each: the worst case
            flooder.replica.transact(card, Origin.API, append_x)
        data = b"".join(burst)
        assert len(burst) == FLOOD_UPDATES
        before = proc_status(victim.pid)
        started = time.monotonic()
        flooder.send(data)

        took = honest_sync_seconds(victim.port, devs["honest"], victim.keys, HONEST_LIMIT)
        assert took < HONEST_LIMIT, f"no honest sync during the flood\n{victim.context()}"

        flooder.round_trip(timeout=45)  # every update is applied now
        applied = time.monotonic() - started
        want = HELLO_TEXT + "x" * FLOOD_UPDATES

        def flooded(space: Path) -> Callable[[], bool]:
            return lambda: (space / "hello.md").read_text(encoding="utf-8") == want

        for space in (victim.space, victim.b_space):  # the daemon's folder, and relayed to B
            wait_until(
                flooded(space),
                30,
                f"the flood to reach {space.name}",
                context=victim.context,
            )
        after = proc_status(victim.pid)
    finally:
        flooder.close()
    assert growth_kb(before, after, "VmRSS") < FLOOD_MEMORY, (before, after)
    assert growth_kb(before, after, "VmHWM") < FLOOD_MEMORY, (before, after)
    print(
        f"{FLOOD_UPDATES} updates applied in {applied:.1f} s; honest sync took {took:.1f} s; "
        f"VmRSS {before['VmRSS']} -> {after['VmRSS']} kB"
    )
    # The honest daemon still syncs the other way, too, after the flood.
    (victim.b_space / "from-b.md").write_text("B is fine\n", encoding="utf-8")
    wait_until(lambda: (victim.space / "from-b.md").exists(), 20, context=victim.context)
    assert b.running
    victim.assert_healthy()


AWARENESS_MESSAGES = 20
AWARENESS_CLIENTS = 5000  # per message: 100,000 invented presence clients in all
AWARENESS_MEMORY = 48 * MB


def test_an_awareness_flood_from_a_read_only_peer_keeps_memory_bounded(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    reader = Peer(victim.port, devs["flooder"], read_only(victim.keys))
    try:
        assert reader.pump(lambda: reader.has_text("hello.md", HELLO_TEXT), 15)
        # Every invented client claims to be the flooder's own device, as a real one would.
        me = device_id_of_cert(devs["flooder"].material.leaf_der).encode()
        state = b'{"device":"' + me + b'","name":"' + b"n" * 100 + b'"}'
        client = 10_000
        messages = []
        for _ in range(AWARENESS_MESSAGES):
            body = bytearray(varint(AWARENESS_CLIENTS))
            for _ in range(AWARENESS_CLIENTS):
                client += 1
                body += varint(client) + varint(1) + varint(len(state)) + state
            messages.append(frame(Awareness(bytes(body))))
        before = proc_status(victim.pid)
        reader.send(b"".join(messages))
        reader.round_trip(timeout=50)
        after = proc_status(victim.pid)
    finally:
        reader.close()
    victim.assert_healthy()
    assert growth_kb(before, after, "VmRSS") < AWARENESS_MEMORY, (before, after)


BLOB_SIZE = 1024 * 1024
BLOB_REQUESTS = 64
BLOB_MEMORY = 48 * MB


def test_a_burst_of_blob_requests_keeps_memory_bounded(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    """64 requests (2.5 KB) for a 1 MB blob from a read-only peer that does not read.

    (A regression test: each BlobGet was answered with the whole blob at once, all before
    the one drain(): 64 MB of BlobData built and queued, VmHWM +130 MB.  Requests are now
    queued -- a repeated one replaces the earlier -- and sent a chunk at a time as the
    transport drains.)  When the peer does read, it gets the blob, intact, about once."""
    blob = os.urandom(BLOB_SIZE)
    digest = hashlib.sha256(blob).digest()
    (victim.space / "big.bin").write_bytes(blob)
    reader = Peer(victim.port, devs["flooder"], read_only(victim.keys))
    try:
        assert reader.pump(lambda: reader.card_id("big.bin") is not None, 20)
        before = proc_status(victim.pid)
        reader.send(frame(BlobGet(digest, 0)) * BLOB_REQUESTS)
        # Do not read: a peer that asks and never reads.  Watch the victim for a while.
        deadline = time.monotonic() + 5
        after = proc_status(victim.pid)
        while time.monotonic() < deadline:
            after = proc_status(victim.pid)
            if growth_kb(before, after, "VmHWM") >= BLOB_MEMORY:
                break
            time.sleep(0.1)
        assert growth_kb(before, after, "VmHWM") < BLOB_MEMORY, (before, after)
        # Now read: the blob arrives (hash-checked by the session), sent about once.
        assert reader.pump(lambda: reader.session.blobs.has(digest.hex()), 30), victim.context()
        sent = sum(len(m.data) for m in reader.frames if isinstance(m, BlobData))
        assert sent < 4 * BLOB_SIZE, f"{sent} bytes of blob data for {BLOB_REQUESTS} requests"
    finally:
        reader.close()
    victim.assert_healthy()


BIG_CARD = 1_000_000
BAD_UPDATES = 60
BAD_UPDATE_MEMORY = 24 * MB


def test_malformed_updates_from_a_writer_do_not_leak_memory(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    """(A regression test: every update that failed to apply leaked a copy of its document,
    ~0.9 MB a time for a 1 MB card, because pycrdt's Doc.observe kept forgotten documents
    alive; the replica now drops its subscriptions when it forgets a document.)"""
    lines = "".join(f"line {i} of a big card\n" for i in range(BIG_CARD // 24))
    (victim.space / "big.md").write_text(lines, encoding="utf-8")

    def connect() -> Peer:
        peer = Peer(victim.port, devs["flooder"], victim.keys)
        assert peer.pump(lambda: peer.has_text("big.md", "line 0 "), 30), victim.context()
        return peer

    first = connect()
    card = first.card_id("big.md")
    first.close()
    assert card is not None
    before = proc_status(victim.pid)
    for _ in range(BAD_UPDATES):
        peer = connect()  # the daemon loads the card's document to answer this peer
        try:
            peer.send(frame(Sync(card, ysync(SYNC_UPDATE, b"\x01\x02not an update"))))
            hung_up = peer.pump(lambda: peer.eof, 10)  # noqa: B023 (called right here)
            assert hung_up, "the daemon kept a bad updater"
        finally:
            peer.close()
    after = proc_status(victim.pid)
    victim.assert_healthy()
    assert growth_kb(before, after, "VmRSS") < BAD_UPDATE_MEMORY, (before, after)


POISON = [
    pytest.param({"kind": "text", "path": "evil.md", "n:x": "not json"}, id="node-field-not-json"),
    pytest.param({"kind": "binary", "path": "evil.png", "size": "big"}, id="size-not-a-number"),
    pytest.param(
        {"kind": "binary", "path": "evil.png", "blob": "zz", "size": 1},
        id="blob-not-hex",
    ),
]


@pytest.mark.parametrize("poison", POISON)
def test_a_poisoned_card_from_a_writer_does_not_cut_off_honest_peers(
    victim: Victim, devs: dict[str, Dev], poison: dict[str, Any]
) -> None:
    from pycrdt import Doc, Map

    writer = Peer(victim.port, devs["flooder"], victim.keys)
    try:
        assert writer.pump(lambda: writer.has_text("hello.md", HELLO_TEXT), 15)
        doc: Doc[Any] = Doc()
        doc.apply_update(writer.replica.encode_state(SPACE_DOC))
        base = doc.get_state()
        cards_map(doc)["e0e0e0e0e0e0e0e0"] = Map({"board": "", "z": 0.0, **poison})
        writer.send(frame(Sync(SPACE_DOC, ysync(SYNC_UPDATE, doc.get_update(base)))))
        writer.pump(lambda: False, 1.0)  # let the daemon take it (or hang up)
    finally:
        writer.close()
    took = honest_sync_seconds(victim.port, devs["honest"], victim.keys, 10)
    assert took < 10, f"an honest peer no longer syncs after {poison}\n{victim.context()}"
    victim.assert_healthy()


# == 2. connection storms ========================================================================

STORM = 300


def open_tls(port: int, dev: Dev, count: int) -> list[ssl.SSLSocket]:
    """``count`` TLS connections that finish the handshake and then never say a word."""
    context = client_context(dev.material)
    return [
        context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
        for _ in range(count)
    ]


def open_tcp(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never even start TLS."""
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def close_all(sockets: list[Any]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def test_hundreds_of_silent_tls_connections_are_refused_and_the_daemon_recovers(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    assert honest_sync_seconds(victim.port, devs["honest"], victim.keys, 10) < 10
    started = time.monotonic()
    idle = open_tls(victim.port, devs["idle"], STORM)
    opened_in = time.monotonic() - started
    try:
        # At most MAX_HANDSHAKES_PER_ADDRESS unproven connections from one address are kept
        # at once; the daemon drops, and says so, the rest (all of them, unless opening took
        # so long that early ones timed out meanwhile).
        expected = STORM - MAX_CONNECTIONS if opened_in < HANDSHAKE_TIMEOUT - 1 else 1

        def refused() -> int:
            return sum("too many connections" in line for line in victim.a.lines)

        wait_until(
            lambda: refused() >= expected,
            20,
            "the daemon to refuse what is over its connection limit",
            context=victim.context,
        )
        assert refused() <= STORM
        assert victim.a.running
    finally:
        close_all(idle)
    # Once the storm is gone the daemon serves an honest peer again, promptly.
    wait_until(
        lambda: honest_sync_seconds(victim.port, devs["honest"], victim.keys, 5) < 5,
        30,
        "an honest peer to sync after the storm",
        context=victim.context,
    )
    victim.assert_healthy()


def test_silent_tls_connections_do_not_lock_out_an_honest_peer(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    """(A regression test: MAX_CONNECTIONS counted connections that had proven nothing, so
    64 silent ones refused everyone else for the 10 s handshake timeout.  Unproven
    connections now have their own budget, and a newcomer evicts the oldest of them.)"""
    started = time.monotonic()
    idle = open_tls(victim.port, devs["idle"], MAX_CONNECTIONS + 16)
    try:
        if time.monotonic() - started > HANDSHAKE_TIMEOUT / 2:
            pytest.skip("this machine took too long to open the connections")
        took = honest_sync_seconds(victim.port, devs["honest"], victim.keys, 3)
    finally:
        close_all(idle)
    assert took < 3, "an honest peer was refused while silent connections held every slot"


def dropped(victim: Victim) -> int:
    """How many connections the victim has logged as dropped for the handshake budget."""
    return sum("still in the handshake" in line for line in victim.a.lines)


@pytest.mark.parametrize("kind", ["tls-silent", "tcp-only"])
def test_a_connection_storm_holds_a_bounded_number_of_sockets(
    victim: Victim, devs: dict[str, Dev], kind: str
) -> None:
    """(A regression test: asyncio's TLS server handshook every TCP connection before it was
    counted, and closed refused ones gracefully, waiting up to 30 s for a close_notify: 300
    such connections held ~303 sockets.  The listener now counts plain TCP connections, starts
    TLS itself, and aborts what it drops.)"""
    baseline = sockets_of(victim.pid)
    storm = (
        open_tls(victim.port, devs["idle"], STORM)
        if kind == "tls-silent"
        else open_tcp(victim.port, STORM)
    )
    try:
        # Every connection has been accepted once all but the budget's worth were dropped.
        wait_until(
            lambda: dropped(victim) >= STORM - MAX_HANDSHAKES_PER_ADDRESS,
            20,
            "the daemon to drop what is over its handshake budget",
            context=victim.context,
        )
        held = sockets_of(victim.pid) - baseline
    finally:
        close_all(storm)
    assert victim.a.running
    assert held <= MAX_HANDSHAKES_PER_ADDRESS + 2, f"{held} sockets held for {STORM} connections"
    assert held <= MAX_CONNECTIONS + 8
    victim.assert_healthy()


def test_a_storm_from_one_address_does_not_evict_a_handshake_from_another(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    """An honest peer (127.0.0.1) has connected but not yet started TLS when 300 connections
    arrive from 127.0.0.2: they evict only one another, and the honest peer then finishes its
    handshake on the connection it opened before the storm and syncs."""
    honest_raw = socket.create_connection(("127.0.0.1", victim.port), timeout=10)
    storm = [
        socket.create_connection(("127.0.0.1", victim.port), 10, ("127.0.0.2", 0))
        for _ in range(STORM)
    ]
    try:
        wait_until(
            lambda: dropped(victim) >= STORM - MAX_HANDSHAKES_PER_ADDRESS,
            20,
            "the daemon to drop what is over its handshake budget",
            context=victim.context,
        )
        peer = Peer(victim.port, devs["honest"], victim.keys, raw=honest_raw)
        try:
            assert peer.pump(lambda: peer.has_text("hello.md", HELLO_TEXT), 10), victim.context()
        finally:
            peer.close()
    finally:
        close_all([honest_raw, *storm])
    assert not any("127.0.0.1" in line for line in victim.a.lines if "still in the" in line)
    assert MAX_HANDSHAKES_PER_ADDRESS < MAX_HANDSHAKES
    victim.assert_healthy()


def test_tcp_connections_that_never_start_tls_do_not_stop_honest_peers(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    storm = open_tcp(victim.port, STORM)
    try:
        took = honest_sync_seconds(victim.port, devs["honest"], victim.keys, HONEST_LIMIT)
        assert took < HONEST_LIMIT, f"no honest sync during the storm\n{victim.context()}"
    finally:
        close_all(storm)
    assert honest_sync_seconds(victim.port, devs["honest"], victim.keys, 10) < 10
    victim.assert_healthy()


# == 3. slowloris ================================================================================


@dataclass
class Loris:
    """One connection that sends ``payload`` a byte a second until the daemon hangs up."""

    sock: socket.socket
    payload: bytes
    connected: float
    sent: int = 0
    cut_after: float | None = None  # seconds from connect to the daemon's hang-up

    @property
    def address(self) -> str:
        """This end's address, as the daemon's log names the connection."""
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def run(self) -> None:
        for byte in self.payload:
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                break
            self.sent += 1
            if self._hung_up_within(1.0):
                break
        else:
            self._hung_up_within(5.0)
        if self.cut_after is None and self.sent < len(self.payload):
            self.cut_after = time.monotonic() - self.connected

    def _hung_up_within(self, seconds: float) -> bool:
        """Read (and ignore) what the daemon sends for ``seconds``; True once it hangs up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                self.cut_after = time.monotonic() - self.connected
                return True
        return False


def test_slowloris_connections_are_cut_off_in_time_and_never_block_honest_peers(
    victim: Victim, devs: dict[str, Dev]
) -> None:
    lorises: list[Loris] = []
    context = client_context(devs["slow"].material)
    for i in range(4):  # inside TLS: the Hello, a byte a second
        tls = context.wrap_socket(socket.create_connection(("127.0.0.1", victim.port), 10))
        hello = frame(Hello(PROTOCOL_VERSION, bytes(32), f"slow {i}"))
        lorises.append(Loris(tls, hello, time.monotonic()))
    for _ in range(2):  # below TLS: the ClientHello, a byte a second
        tcp = socket.create_connection(("127.0.0.1", victim.port), 10)
        lorises.append(Loris(tcp, client_hello(devs["slow"]), time.monotonic()))
    addresses = [loris.address for loris in lorises]
    threads = [threading.Thread(target=loris.run, daemon=True) for loris in lorises]
    for thread in threads:
        thread.start()
    try:
        # Meanwhile honest peers come and go as usual, at the start, middle and end.
        for at in (0.5, 4.0, 8.0):
            while time.monotonic() - lorises[0].connected < at:
                time.sleep(0.05)
            took = honest_sync_seconds(victim.port, devs["honest"], victim.keys, 5)
            assert took < 5, f"an honest peer waited behind the slowloris\n{victim.context()}"
        for thread in threads:
            thread.join(HANDSHAKE_TIMEOUT + 10)
    finally:
        close_all([loris.sock for loris in lorises])
    for loris in lorises:
        assert loris.sent < len(loris.payload), "a slow handshake was allowed to complete"
        assert loris.cut_after is not None, "the daemon never hung up on a slowloris"
        assert loris.cut_after < HANDSHAKE_TIMEOUT + 4, f"cut off after {loris.cut_after:.1f} s"
    for address in addresses[:4]:  # each TLS slowloris was closed with a logged reason
        assert any(address in line for line in victim.a.lines), victim.context()
    victim.assert_healthy()


def test_a_handshake_timeout_is_logged_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process, in a second: a listener whose peer never speaks, with a short timeout.

    (A regression test: ``TimeoutError`` is an ``OSError``, and a handler for the latter placed
    first had logged a handshake timeout as "connection lost: " with an empty reason.)"""
    import asyncio
    import logging

    from engine import network
    from engine.sharelink import new_space_keys

    monkeypatch.setattr(network, "HANDSHAKE_TIMEOUT", 0.3)
    me = load_or_create(tmp_path / "me", name="me")
    them = make_dev(tmp_path / "them", "them")

    class Transport:
        def abort(self) -> None:
            pass

    class Writer:
        transport = Transport()

        def get_extra_info(self, name: str) -> Any:
            if name == "ssl_object":
                return self
            return ("127.0.0.1", 4242) if name == "peername" else None

        def getpeercert(self, binary_form: bool = False) -> bytes:
            return them.material.leaf_der

        def write(self, data: bytes) -> None:
            pass

        async def drain(self) -> None:
            pass

        def close(self) -> None:
            pass

    async def main() -> None:
        net = network.Network(
            Replica(Store.memory(), device="me"),
            MemoryBlobs(),
            new_space_keys(),
            me,
            issue_leaf(me),
            network.NetworkConfig(),
        )
        await net._run(asyncio.StreamReader(), Writer(), Role.LISTENER, "127.0.0.1:4242")  # type: ignore[arg-type]

    with caplog.at_level(logging.INFO, logger="tack.net"):
        asyncio.run(asyncio.wait_for(main(), 5))
    assert any("did not finish the handshake in time" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
