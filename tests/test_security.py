"""The security model of DESIGN §4, attacked: wrong secrets, probing, replay, relay, read-only
writers, hostile frames and hostile paths.

Two kinds of tests:

* **Against a real daemon** (``tack up DIR --no-mdns --listen 127.0.0.1``, own ``TACK_HOME``)
  over real TLS 1.3 sockets on 127.0.0.1.  The attacker is this test process: it has its own
  device identity (:func:`engine.identity.load_or_create`) and TLS leaf
  (:func:`engine.tls.issue_leaf`), and either drives a real :class:`PeerSession` over the socket
  or writes raw bytes.  After each attack the daemon must still be running and still serve
  honest peers: a fresh honest connection reaches sync, and a second ``tack up`` joined with
  the real share link receives a new file.
* **In process**, with real :class:`PeerSession` objects joined by byte queues (no mocks), for
  what needs exact control of nonces, certificates and crafted messages — and a real
  :class:`FolderBridge` on a temp folder as the victim of hostile paths.

Every wait polls a condition against a deadline; the only fixed pause is the slowloris sender's
0.5 s between bytes (it doubles as the read timeout that notices the daemon hanging up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from reactivex.testing import TestScheduler
from realproc import Daemon, run_tack, wait_until

from engine import SPACE_DOC, CardView, MemoryBlobs, Origin, Replica, Store, new_id, spacedoc
from engine.auth import OFFER, make_proof, transcript
from engine.identity import load_or_create
from engine.memnet import MemoryDevice, MemoryNetwork
from engine.session import NOTICE_READ_ONLY, PeerSession, Phase, Role, SessionClosed
from engine.sharelink import SpaceKeys, new_space_keys, parse_link, read_only
from engine.spacedoc import TEXT_KEY
from engine.tls import TlsMaterial, client_context, issue_leaf, server_context
from engine.wire import (
    PROTOCOL_VERSION,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    Accept,
    Awareness,
    BlobData,
    BlobGet,
    Bye,
    FrameDecoder,
    Hello,
    Message,
    Notice,
    Offer,
    Sync,
    decode,
    encode,
    encode_frame,
    ysync,
)
from fsbridge.bridge import BridgeTiming, FolderBridge, FsEvent

NODE = {"type": "file", "x": 0, "y": 0, "width": 400, "height": 400}
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) for peers")


# -- identities ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dev:
    """A device as the network sees it: its TLS material and the leaf DER it presents."""

    name: str
    device_id: str
    material: TlsMaterial

    @property
    def cert(self) -> bytes:
        return self.material.leaf_der


def make_dev(home: Path, name: str) -> Dev:
    identity = load_or_create(home, name=name)
    return Dev(name, identity.device_id, issue_leaf(identity))


@pytest.fixture(scope="module")
def devs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dev]:
    root = tmp_path_factory.mktemp("identities")
    return {n: make_dev(root / n, n) for n in ("alice", "bob", "mallory", "probe")}


def fresh_replica(name: str) -> Replica:
    return Replica(Store.memory(), device=name)


def add_card(replica: Replica, path: str, text: str = "", kind: str = "text") -> str:
    """Create a card the way a program using the engine would (origin API); returns its id."""
    card_id = new_id()
    board = path.rsplit("/", 1)[0] if "/" in path else ""
    view = CardView(id=card_id, kind=kind, path=path, board=board, node=dict(NODE))
    replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view), path=path)
    if text:
        replica.transact(card_id, Origin.API, lambda d: d.get(TEXT_KEY, type=Text).insert(0, text))
    return card_id


def paths_of(replica: Replica) -> set[str]:
    return {c.path for c in replica.cards().values()}


# -- in-process sessions joined by queues -------------------------------------------------------


def new_session(
    role: Role,
    keys: SpaceKeys,
    me: bytes,
    peer: bytes,
    *,
    nonce: bytes | None = None,
    replica: Replica | None = None,
    name: str = "",
) -> PeerSession:
    return PeerSession(
        role,
        replica or fresh_replica(name or role.value),
        MemoryBlobs(),
        keys,
        my_cert=me,
        peer_cert=peer,
        peer_id=f"peer-of-{name or role.value}",
        nonce=nonce or secrets.token_bytes(32),
        name=name or role.value,
    )


class Wire:
    """Two sessions joined by byte queues; records every message each side sent.

    ``wire.sent[s]`` lists the messages session ``s`` sent, ``wire.closed[s]`` the reason it
    closed (if it did).  :meth:`inject` puts crafted bytes on the wire towards a session.
    """

    def __init__(self, dialer: PeerSession, listener: PeerSession) -> None:
        self.dialer = dialer
        self.listener = listener
        self.sent: dict[PeerSession, list[Message]] = {dialer: [], listener: []}
        self.raw: dict[PeerSession, list[bytes]] = {dialer: [], listener: []}
        self.closed: dict[PeerSession, str] = {}
        self._decoders = {dialer: FrameDecoder(), listener: FrameDecoder()}
        self._queue: list[tuple[PeerSession, bytes]] = []

    def other(self, session: PeerSession) -> PeerSession:
        return self.listener if session is self.dialer else self.dialer

    def emit(self, sender: PeerSession, data: bytes) -> None:
        if not data:
            return
        self.raw[sender].append(data)
        self.sent[sender].extend(decode(f) for f in self._decoders[sender].feed(data))
        self._queue.append((self.other(sender), data))

    def inject(self, to: PeerSession, data: bytes) -> bytes:
        """Deliver crafted bytes to ``to`` now; returns (and queues) what it answered."""
        reply = to.receive(data)
        self.emit(to, reply)
        return reply

    def start(self) -> Wire:
        self.emit(self.dialer, self.dialer.start())
        self.emit(self.listener, self.listener.start())
        return self.run()

    def run(self) -> Wire:
        for _ in range(10_000):
            if not self._queue:
                return self
            to, data = self._queue.pop(0)
            if to in self.closed:
                continue
            try:
                reply = to.receive(data)
            except SessionClosed as exc:
                self.closed[to] = exc.reason
                continue
            self.emit(to, reply)
        raise AssertionError("sessions did not go quiet")

    def kinds(self, sender: PeerSession) -> list[str]:
        return [type(m).__name__ for m in self.sent[sender]]


def frame(message: Message) -> bytes:
    return encode_frame(encode(message))


# -- real TLS clients ---------------------------------------------------------------------------


class Client:
    """A blocking TLS connection from this process, optionally driving a :class:`PeerSession`.

    Every byte the far end sends is decoded into :attr:`frames` (whatever the session makes of
    it); :attr:`eof` turns true once the far end has closed the connection.
    """

    def __init__(
        self, port: int, dev: Dev, keys: SpaceKeys | None = None, replica: Replica | None = None
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = client_context(dev.material).wrap_socket(raw)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.peer_cert = self.sock.getpeercert(binary_form=True)
        assert self.peer_cert
        self.frames: list[Message] = []
        self.eof = False
        self.closed_reason: str | None = None
        self._decoder = FrameDecoder()
        self.session: PeerSession | None = None
        if keys is not None:
            self.session = PeerSession(
                Role.DIALER,
                replica or fresh_replica(dev.name),
                MemoryBlobs(),
                keys,
                my_cert=dev.cert,
                peer_cert=self.peer_cert,
                peer_id="the-daemon",
                nonce=secrets.token_bytes(32),
                name=dev.name,
            )
            self.send(self.session.start())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pump(self, until: Callable[[], object], timeout: float = 10.0) -> bool:
        """Read (and answer, if a session drives this client) until ``until()`` or EOF."""
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
            if self.session is not None and self.session.phase is not Phase.CLOSED:
                try:
                    reply = self.session.receive(data)
                except SessionClosed as exc:
                    self.closed_reason = exc.reason
                    continue
                if reply:
                    self.send(reply)
        return True

    def wait_eof(self, timeout: float) -> bool:
        return self.pump(lambda: self.eof, timeout)

    def kinds(self) -> list[str]:
        return [type(m).__name__ for m in self.frames]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def shape(frames: list[Message]) -> list[tuple[str, int]]:
    """What a dialer can observe of a listener's answer apart from random nonces."""
    out = []
    for m in frames:
        size = len(encode(m))
        if isinstance(m, Offer | Accept):
            out.append((f"{type(m).__name__}[{len(m.proofs)}]", size))
        else:
            out.append((type(m).__name__, size))
    return out


# -- real daemons -------------------------------------------------------------------------------


class Net:
    """Daemon A (the target, listening on 127.0.0.1) and, on demand, honest daemon B, which
    joined with A's real share link and dials A."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.a_home, self.a_space = root / "home-a", root / "space-a"
        self.a_home.mkdir()
        run_tack(self.a_home, "init", str(self.a_space))
        (self.a_space / "hello.md").write_text("hello from A\n", encoding="utf-8")
        self.a = Daemon(self.a_space, self.a_home, ("--no-mdns", "--listen", "127.0.0.1"))
        self.a.start()
        match = LISTENING.search(self.a.wait_for_line("listening on"))
        assert match, self.a.log()
        self.port = int(match.group(1))
        self.link = run_tack(self.a_home, "share", str(self.a_space)).stdout.strip()
        self.keys = parse_link(self.link)
        self.b: Daemon | None = None
        self.b_space = root / "space-b"
        self._checks = 0

    def honest_peer(self) -> Daemon:
        if self.b is None:
            home = self.root / "home-b"
            home.mkdir()
            run_tack(home, "join", self.link, str(self.b_space))
            args = ("--no-mdns", "--listen", "127.0.0.1", "--peer", f"127.0.0.1:{self.port}")
            self.b = Daemon(self.b_space, home, args).start()
        return self.b

    def context(self) -> str:
        return self.a.log() + ("\n" + self.b.log() if self.b else "")

    def assert_serving(self, probe: Dev) -> None:
        """A is alive, takes a fresh honest connection to sync, and syncs a new file to B."""
        assert self.a.running, self.a.log()
        client = Client(self.port, probe, self.keys)
        try:
            synced = client.pump(lambda: "hello.md" in paths_of(client.session.replica))  # type: ignore[union-attr]
            assert synced, (
                f"an honest dialer did not sync: {client.closed_reason}\n{self.context()}"
            )
        finally:
            client.close()
        b = self.honest_peer()
        self._checks += 1
        name = f"check-{self._checks}.md"
        body = f"honest file {self._checks} ✓\n"
        (self.a_space / name).write_text(body, encoding="utf-8")
        wait_until(
            lambda: (self.b_space / name).read_text(encoding="utf-8") == body,
            timeout=20,
            what=f"{name} to reach the honest peer",
            context=self.context,
        )
        assert b.running
        assert not self.a.troubles(), self.a.log()

    def mark(self) -> int:
        """Where A's log stands now (for :meth:`logged_about`)."""
        return len(self.a.lines)

    def logged_about(self, address: str, since: int, timeout: float = 5.0) -> str:
        """The first line of A's log, from line ``since`` (a :meth:`mark` taken before the
        connection was made) on, that names a connection from ``address``.

        Only lines from ``since`` on: A runs for the whole module and a client's address is an
        ephemeral port, which an earlier connection may have had -- a line about that one says
        nothing about this connection."""

        def find() -> str | None:
            return next((line for line in self.a.lines[since:] if address in line), None)

        return wait_until(find, timeout, f"A to log something about {address}", context=self.a.log)

    def stop(self) -> None:
        for daemon in (self.b, self.a):
            if daemon is not None and daemon.proc is not None:
                daemon.stop()
                if daemon.proc.stderr is not None:
                    daemon.proc.stderr.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    world = Net(tmp_path_factory.mktemp("net"))
    try:
        yield world
    finally:
        world.stop()


# == 1. wrong secret ============================================================================


def test_wrong_secret_gets_an_empty_accept_and_the_daemon_keeps_serving(
    net: Net, devs: dict[str, Dev]
) -> None:
    impostor = new_space_keys(net.keys.space_id)  # the right space id, a different secret

    # (a) A courteous impostor that says goodbye: we then hold everything A ever sent it.
    since = net.mark()
    client = Client(net.port, devs["mallory"], impostor)
    try:
        assert client.pump(lambda: client.closed_reason is not None)
        assert "does not share this space" in (client.closed_reason or "")
        client.send(frame(Bye("bye")))
        assert client.wait_eof(10), "A did not close after the impostor's goodbye"
    finally:
        client.close()
    assert client.kinds() == ["Hello", "Accept"], client.frames
    assert client.frames[1] == Accept(())
    assert client.session is not None and client.session.replica.cards() == {}
    assert client.session.stats.updates_in == 0 and client.session.peer_access is None

    # (b) An impostor that hangs up after the refusal, as Tack's own dialer does (its
    # session.close() after SessionClosed sends nothing).
    quiet = Client(net.port, devs["mallory"], impostor)
    try:
        assert quiet.pump(lambda: quiet.closed_reason is not None)
        assert quiet.frames == [quiet.frames[0], Accept(())]
    finally:
        quiet.close()

    net.assert_serving(devs["probe"])

    # The refusal itself must leave a trace in A's log (DESIGN §4: closed "with a logged
    # reason"), whether or not the peer says goodbye.
    net.logged_about(client.address, since)
    net.logged_about(quiet.address, since)


# == 2. indistinguishability ====================================================================


def test_a_prober_cannot_tell_whether_the_daemon_has_the_space(
    net: Net, devs: dict[str, Dev]
) -> None:
    def answer(keys: SpaceKeys) -> list[Message]:
        client = Client(net.port, devs["mallory"], keys)
        try:
            assert client.pump(lambda: client.closed_reason is not None)
            client.send(frame(Bye("done")))
            assert client.wait_eof(10)
            return client.frames
        finally:
            client.close()

    same_id_wrong_secret = answer(new_space_keys(net.keys.space_id))
    unknown_space = answer(new_space_keys())
    assert shape(same_id_wrong_secret) == shape(unknown_space)
    assert [type(m).__name__ for m in unknown_space] == ["Hello", "Accept"]
    assert same_id_wrong_secret[1] == unknown_space[1] == Accept(())
    # Apart from the fresh nonce, the two Hellos are the same.
    hello_a, hello_b = same_id_wrong_secret[0], unknown_space[0]
    assert isinstance(hello_a, Hello) and isinstance(hello_b, Hello)
    assert (hello_a.version, hello_a.name) == (hello_b.version, hello_b.name)
    assert hello_a.nonce != hello_b.nonce
    # A decoy-padded offer (one real-looking write proof and a random one) changes nothing.
    padded = Client(net.port, devs["mallory"])
    try:
        assert padded.pump(lambda: padded.frames)
        padded.send(frame(Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory")))
        padded.send(frame(Offer((secrets.token_bytes(96), secrets.token_bytes(32)))))
        assert padded.pump(lambda: len(padded.frames) >= 2)
        assert padded.frames[1] == Accept(())
    finally:
        padded.close()
    net.assert_serving(devs["probe"])


def test_frames_packed_behind_a_refused_offer_get_no_answer_from_the_daemon(
    net: Net, devs: dict[str, Dev]
) -> None:
    """A dialer with no secret (not even the space id) writes Hello, an empty Offer and sync
    requests in one go, so they arrive in one read: the daemon must answer the refused offer
    and nothing after it."""
    client = Client(net.port, devs["mallory"])
    try:
        packed = [
            Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory"),
            Offer(()),
            Sync(SPACE_DOC, ysync(SYNC_STEP1, b"\x00")),
            BlobGet(b"\x00" * 32, 0),
            Awareness(b"\x00"),
        ]
        client.send(b"".join(frame(m) for m in packed))
        assert client.pump(lambda: any(isinstance(m, Accept) for m in client.frames))
        with contextlib.suppress(OSError):
            client.send(frame(Bye("done")))
        client.wait_eof(10)
    finally:
        client.close()
    leaked = [m for m in client.frames if isinstance(m, Sync | BlobData)]
    assert not leaked, f"the daemon answered a peer it had refused: {leaked[:2]}"
    assert client.kinds() == ["Hello", "Accept"]
    net.assert_serving(devs["probe"])


# == 3. replay ==================================================================================


def test_a_recorded_offer_replayed_in_a_new_session_is_refused(devs: dict[str, Dev]) -> None:
    keys = new_space_keys()
    alice, bob = devs["alice"], devs["bob"]
    bob_replica = fresh_replica("bob")
    add_card(bob_replica, "secret.md", "only for alice")
    nonce_d, nonce_l = b"\x01" * 32, b"\x02" * 32

    honest = Wire(
        new_session(Role.DIALER, keys, alice.cert, bob.cert, nonce=nonce_d, name="alice"),
        new_session(Role.LISTENER, keys, bob.cert, alice.cert, nonce=nonce_l, replica=bob_replica),
    ).start()
    assert honest.dialer.synced and honest.listener.synced
    recorded_hello, recorded_offer = honest.raw[honest.dialer][:2]
    assert [type(decode(f)).__name__ for f in FrameDecoder().feed(recorded_offer)] == ["Offer"]

    # Mallory replays alice's Hello and Offer, byte for byte, to bob in a new session (even
    # presenting alice's certificate, which he could not do without her key: only the nonce
    # is fresh).
    def replay(listener_nonce: bytes) -> tuple[PeerSession, list[Message]]:
        bob_again = new_session(
            Role.LISTENER, keys, bob.cert, alice.cert, nonce=listener_nonce, replica=bob_replica
        )
        sent = [decode(f) for f in FrameDecoder().feed(bob_again.start())]
        for data in (recorded_hello, recorded_offer):
            sent += [decode(f) for f in FrameDecoder().feed(bob_again.receive(data))]
        return bob_again, sent

    bob_again, sent = replay(b"\x03" * 32)
    assert [type(m).__name__ for m in sent] == ["Hello", "Accept"]
    assert sent[1] == Accept(())
    assert bob_again.peer_access is None and not bob_again.synced
    # Control: with the old listener nonce the very same bytes would pass, so it is the fresh
    # nonce (not some other difference) that defeats the replay.
    control, control_sent = replay(nonce_l)
    assert control.synced and any(isinstance(m, Sync) for m in control_sent)

    # And the other way: bob's recorded Accept, replayed to alice's next session, is refused.
    recorded_bob_hello, recorded_accept = honest.raw[honest.listener][:2]
    alice_again = new_session(Role.DIALER, keys, alice.cert, bob.cert, name="alice")
    alice_again.start()
    alice_again.receive(recorded_bob_hello)
    with pytest.raises(SessionClosed, match="does not share"):
        alice_again.receive(recorded_accept)
    assert alice_again.replica.cards() == {}


@pytest.mark.parametrize("proof", ["none", "random", "wrong secret"])
def test_frames_behind_a_refused_offer_are_not_answered_in_process(
    devs: dict[str, Dev], proof: str
) -> None:
    keys = new_space_keys()
    mallory, bob = devs["mallory"], devs["bob"]
    bob_replica = fresh_replica("bob")
    add_card(bob_replica, "secret.md", "bob's secret")
    before = bob_replica.state_vector(SPACE_DOC)
    bob_s = new_session(Role.LISTENER, keys, bob.cert, mallory.cert, replica=bob_replica)
    hello_b = decode(FrameDecoder().feed(bob_s.start())[0])
    assert isinstance(hello_b, Hello)
    mallory_nonce = secrets.token_bytes(32)
    proofs: tuple[bytes, ...] = ()
    if proof == "random":
        proofs = (secrets.token_bytes(96),)
    elif proof == "wrong secret":
        t = transcript(mallory_nonce, hello_b.nonce, mallory.cert, bob.cert)
        proofs = (make_proof(new_space_keys(keys.space_id), OFFER, t),)
    mallory_replica = fresh_replica("mallory")
    card = add_card(mallory_replica, "planted.md", "planted")
    packed = [
        Hello(PROTOCOL_VERSION, mallory_nonce, "mallory"),
        Offer(proofs),
        Sync(SPACE_DOC, ysync(SYNC_STEP1, b"\x00")),
        Sync(SPACE_DOC, ysync(SYNC_UPDATE, mallory_replica.encode_state(SPACE_DOC))),
        Sync(card, ysync(SYNC_STEP2, mallory_replica.encode_state(card))),
        BlobGet(b"\x00" * 32, 0),
    ]
    answered: list[Message] = []
    with contextlib.suppress(SessionClosed):
        reply = bob_s.receive(b"".join(frame(m) for m in packed))
        answered = [decode(f) for f in FrameDecoder().feed(reply)]
    assert not [m for m in answered if not isinstance(m, Accept)], answered
    assert all(m == Accept(()) for m in answered)
    assert not bob_s.synced and bob_s.peer_access is None
    assert bob_replica.state_vector(SPACE_DOC) == before
    assert "planted.md" not in paths_of(bob_replica)


# == 4. man in the middle =======================================================================


def test_a_relayed_offer_is_refused_in_process(devs: dict[str, Dev]) -> None:
    keys = new_space_keys()
    alice, bob, mallory = devs["alice"], devs["bob"], devs["mallory"]
    bob_replica = fresh_replica("bob")
    add_card(bob_replica, "secret.md", "not for mallory")

    # Alice dials Mallory (she sees his certificate), Mallory dials Bob (Bob sees Mallory's
    # certificate) and forwards every byte unchanged both ways, nonces included.
    relayed = Wire(
        new_session(Role.DIALER, keys, alice.cert, mallory.cert, name="alice"),
        new_session(Role.LISTENER, keys, bob.cert, mallory.cert, replica=bob_replica),
    ).start()
    assert relayed.kinds(relayed.listener) == ["Hello", "Accept"]
    assert relayed.sent[relayed.listener][1] == Accept(())
    assert not relayed.listener.synced and relayed.listener.peer_access is None
    assert "does not share" in relayed.closed[relayed.dialer]

    # A Mallory who holds a *read* link relays too, and re-MACs alice's offer for Bob's
    # transcript to pass her signature off as his: he gets read access at most, never write.
    alice_s = new_session(Role.DIALER, keys, alice.cert, mallory.cert, name="alice")
    bob_s = new_session(Role.LISTENER, keys, bob.cert, mallory.cert, replica=bob_replica)
    hello_a = decode(FrameDecoder().feed(alice_s.start())[0])
    hello_b = decode(FrameDecoder().feed(bob_s.start())[0])
    assert isinstance(hello_a, Hello) and isinstance(hello_b, Hello)
    bob_s.receive(frame(hello_a))
    offer = decode(FrameDecoder().feed(alice_s.receive(frame(hello_b)))[0])
    assert isinstance(offer, Offer) and len(offer.proofs[0]) == 96
    at_bob = transcript(hello_a.nonce, hello_b.nonce, mallory.cert, bob.cert)
    my_mac = make_proof(read_only(keys), OFFER, at_bob)
    forged = Offer((my_mac + offer.proofs[0][32:],))
    answer = [decode(f) for f in FrameDecoder().feed(bob_s.receive(frame(forged)))]
    assert answer == [Accept(())]
    assert bob_s.peer_access is None


class Relay:
    """A TCP relay on 127.0.0.1 run by Mallory in a thread of its own (asyncio).

    With ``mitm`` set it terminates TLS on both sides with Mallory's own identity and forwards
    the decrypted application bytes, recording what the target sent (:attr:`from_target`);
    without it, it forwards the raw TCP bytes (TLS passes through untouched).
    """

    def __init__(self, target_port: int, mitm: Dev | None) -> None:
        self.target_port = target_port
        self.mitm = mitm
        self.from_target = bytearray()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        tls = server_context(self.mitm.material) if self.mitm else None
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=tls)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = client_context(self.mitm.material) if self.mitm else None
        self._writers.append(writer)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port, ssl=tls)
        except OSError:
            writer.close()
            return
        self._writers.append(up_w)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, sink: bytearray | None
        ) -> None:
            try:
                while data := await src.read(65536):
                    if sink is not None:
                        sink += data
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        sink = self.from_target if self.mitm else None
        await asyncio.gather(pipe(reader, up_w, None), pipe(up_r, writer, sink))

    def close(self) -> None:
        async def stop() -> None:
            for writer in self._writers:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)
            if self._server is not None:
                self._server.close()
                await asyncio.wait_for(self._server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def test_a_tls_terminating_relay_gets_refused_by_a_real_daemon(
    net: Net, devs: dict[str, Dev]
) -> None:
    # Control: a relay that only forwards TCP bytes is harmless, and the honest device syncs
    # through it -- so the refusal below is about the certificates, not the relay.
    plain = Relay(net.port, mitm=None)
    try:
        honest = Client(plain.port, devs["alice"], net.keys)
        try:
            assert honest.pump(lambda: "hello.md" in paths_of(honest.session.replica))  # type: ignore[union-attr]
        finally:
            honest.close()
    finally:
        plain.close()

    relay = Relay(net.port, mitm=devs["mallory"])
    try:
        victim = Client(relay.port, devs["alice"], net.keys)
        try:
            assert victim.pump(lambda: victim.closed_reason is not None), victim.frames
            assert "does not share" in (victim.closed_reason or "")
        finally:
            victim.close()
        assert victim.kinds() == ["Hello", "Accept"]
        assert victim.frames[1] == Accept(())
        assert victim.session is not None and victim.session.replica.cards() == {}
        # What Mallory saw in the clear from the daemon: a Hello and an empty Accept.
        seen = [decode(f) for f in FrameDecoder().feed(bytes(relay.from_target))]
        assert [type(m).__name__ for m in seen] == ["Hello", "Accept"], seen
        assert seen[1] == Accept(())
    finally:
        relay.close()
    net.assert_serving(devs["probe"])


# == 5. a read-only peer writing ================================================================


@pytest.mark.parametrize("step", [SYNC_UPDATE, SYNC_STEP2])
def test_updates_from_a_read_only_peer_are_refused_and_the_link_stays_up(
    devs: dict[str, Dev], step: int
) -> None:
    keys = new_space_keys()
    alice, bob = devs["alice"], devs["bob"]
    writer_replica = fresh_replica("writer")
    text_id = add_card(writer_replica, "w.md", "the writer's words")
    wire = Wire(
        new_session(Role.DIALER, read_only(keys), alice.cert, bob.cert, name="reader"),
        new_session(Role.LISTENER, keys, bob.cert, alice.cert, replica=writer_replica),
    ).start()
    reader, writer = wire.dialer, wire.listener
    assert reader.synced and writer.synced and writer.peer_access == "read"
    assert paths_of(reader.replica) == {"w.md"}
    before_cards = writer_replica.cards()
    before_space = writer_replica.state_vector(SPACE_DOC)
    before_text = writer_replica.state_vector(text_id)

    # The reader adds a card to its own replica: a real Yjs update.  Its session never sends
    # it (read-only replicas keep their edits)...
    change = reader.replica.transact(
        SPACE_DOC,
        Origin.API,
        lambda d: spacedoc.put_card(d, CardView(new_id(), "text", "evil.md", "", node=NODE)),
    )
    assert change is not None
    assert reader.local_change(change) == b""
    # ...so it crafts the frame itself, and edits the writer's card text the same way.
    edit = reader.replica.transact(
        text_id, Origin.API, lambda d: d.get(TEXT_KEY, type=Text).insert(0, "VANDAL ")
    )
    assert edit is not None
    for doc_id, update in ((SPACE_DOC, change.update), (text_id, edit.update)):
        reply = wire.inject(writer, frame(Sync(doc_id, ysync(step, update))))
        answers = [decode(f) for f in FrameDecoder().feed(reply)]
        assert len(answers) == 1 and isinstance(answers[0], Notice), answers
        assert answers[0].code == NOTICE_READ_ONLY
    wire.run()

    assert writer.stats.refused == 2
    assert len(writer.stats.refusals) == 2
    assert writer.stats.updates_in == 0
    assert writer_replica.cards() == before_cards
    assert writer_replica.state_vector(SPACE_DOC) == before_space
    assert writer_replica.state_vector(text_id) == before_text
    assert writer_replica.text(text_id) == "the writer's words"
    assert writer.synced and not wire.closed

    # The connection still works: presence from the reader is taken, and the writer's new
    # card (forwarded as the network adapter forwards committed changes) reaches the reader.
    wire.inject(writer, frame(Awareness(b"\x00")))
    forward = writer_replica.changes.subscribe(
        lambda ch: wire.emit(writer, writer.local_change(ch))
    )
    try:
        add_card(writer_replica, "later.md", "still talking")
        wire.run()
    finally:
        forward.dispose()
    assert not wire.closed, wire.closed
    assert writer.synced and reader.synced
    later = reader.replica.card_at("later.md")
    assert later is not None and reader.replica.text(later.id) == "still talking"
    assert "evil.md" not in paths_of(writer_replica)


# == 6. malformed, truncated, oversized and slow input ==========================================


CASES: dict[str, Callable[[], list[bytes]]] = {
    "random bytes": lambda: [random.Random(20240601).randbytes(4096)],
    "random framed payload": lambda: [encode_frame(random.Random(7).randbytes(300))],
    "1 GiB frame header": lambda: [(1 << 30).to_bytes(4, "big")],
    "hello then garbage": lambda: [
        frame(Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory")),
        encode_frame(b"\xfe" + random.Random(3).randbytes(64)),
    ],
    "hello then sync before the proof": lambda: [
        frame(Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory")),
        frame(Sync(SPACE_DOC, ysync(SYNC_STEP1, b"\x00"))),
    ],
    "wrong protocol version": lambda: [frame(Hello(99, secrets.token_bytes(32), "mallory"))],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_closes_the_connection_with_a_logged_reason(
    net: Net, devs: dict[str, Dev], case: str
) -> None:
    since = net.mark()
    client = Client(net.port, devs["mallory"])
    try:
        for chunk in CASES[case]():
            with contextlib.suppress(OSError):
                client.send(chunk)
        assert client.wait_eof(15), f"A kept the connection open after {case}\n{net.a.log()}"
        assert not any(isinstance(m, Sync | BlobData) for m in client.frames)
    finally:
        client.close()
    net.assert_serving(devs["probe"])
    net.logged_about(client.address, since)


def test_a_truncated_hello_then_close_is_logged(net: Net, devs: dict[str, Dev]) -> None:
    hello = frame(Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory"))
    since = net.mark()
    client = Client(net.port, devs["mallory"])
    try:
        client.send(hello[: len(hello) // 2])
        assert client.pump(lambda: client.frames)  # A's own Hello: it has read ours
    finally:
        client.close()
    net.assert_serving(devs["probe"])
    net.logged_about(client.address, since)


def test_a_slowloris_is_cut_off_by_the_handshake_timeout(net: Net, devs: dict[str, Dev]) -> None:
    hello = frame(Hello(PROTOCOL_VERSION, secrets.token_bytes(32), "mallory"))
    since = net.mark()
    client = Client(net.port, devs["mallory"])
    started = time.monotonic()
    sent = 0
    try:
        while not client.eof and time.monotonic() - started < 15 and sent < len(hello):
            try:
                client.send(hello[sent : sent + 1])
            except OSError:
                client.eof = True
                break
            sent += 1
            # The pause between bytes is the read timeout that notices A hanging up.
            client.pump(lambda: False, timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert sent < len(hello), "the slow Hello completed before A gave up"
    assert client.eof and elapsed < 15, f"A kept a slowloris for {elapsed:.1f} s"
    line = net.logged_about(client.address, since)
    assert "in time" in line, f"{line}\n{net.a.log()}"
    net.assert_serving(devs["probe"])


# -- fuzzing the session in process --------------------------------------------------------------

_KEYS = new_space_keys()
_CERT_D = b"dialer certificate (any bytes do in process)"
_CERT_L = b"listener certificate"


def _real_update() -> bytes:
    doc: Doc[Any] = Doc()
    with doc.transaction():
        spacedoc.put_card(doc, CardView("c0ffee00c0ffee00", "text", "a.md", "", node=NODE))
        doc.get(TEXT_KEY, type=Text).insert(0, "hello")
    return doc.get_update()


REAL_UPDATE = _real_update()
KINDS = [0, 1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 255]


@st.composite
def mangled_update(draw: st.DrawFn) -> bytes:
    data = bytearray(REAL_UPDATE)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


payloads = st.one_of(
    st.builds(lambda k, b: bytes([k]) + b, st.sampled_from(KINDS), st.binary(max_size=120)),
    st.builds(
        lambda doc, step, data: encode(Sync(doc, ysync(step, data))),
        st.sampled_from([SPACE_DOC, "c0ffee00c0ffee00", "../x", "a b"]),
        st.sampled_from([SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE, 3, 255]),
        st.one_of(st.binary(max_size=80), mangled_update(), st.just(REAL_UPDATE)),
    ),
    st.builds(
        lambda d, o: encode(BlobGet(d, o)),
        st.binary(min_size=32, max_size=32),
        st.integers(0, 2**40),
    ),
    st.builds(
        lambda d, o, t, b: encode(BlobData(d, o, t, b)),
        st.binary(min_size=32, max_size=32),
        st.integers(0, 100),
        st.integers(0, 100),
        st.binary(max_size=50),
    ),
    st.builds(lambda p: encode(Offer(tuple(p))), st.lists(st.binary(max_size=100), max_size=3)),
    st.builds(lambda p: encode(Accept(tuple(p))), st.lists(st.binary(max_size=100), max_size=3)),
    st.builds(
        lambda v, n: encode(Hello(v, n, "fuzz")),
        st.integers(0, 3),
        st.binary(min_size=32, max_size=32),
    ),
)
streams = st.one_of(
    st.binary(max_size=300),
    st.lists(payloads, min_size=1, max_size=5).map(lambda ps: b"".join(map(encode_frame, ps))),
    st.tuples(st.lists(payloads, max_size=3), st.binary(max_size=40)).map(
        lambda t: b"".join(map(encode_frame, t[0])) + t[1]
    ),
)


def session_at(phase: str, role: Role) -> PeerSession:
    """A real session of ``role`` in ``phase`` (hello, proof or sync) with a real peer."""
    d_replica, l_replica = fresh_replica("d"), fresh_replica("l")
    add_card(l_replica, "a.md", "listener text")
    dialer = new_session(Role.DIALER, _KEYS, _CERT_D, _CERT_L, replica=d_replica, name="d")
    listener = new_session(Role.LISTENER, _KEYS, _CERT_L, _CERT_D, replica=l_replica, name="l")
    target = dialer if role is Role.DIALER else listener
    if phase == "hello":
        target.start()
    elif phase == "proof":
        other = listener if target is dialer else dialer
        target.start()
        target.receive(other.start())
        assert target.phase is Phase.PROOF
    else:
        Wire(dialer, listener).start()
        assert target.synced
    return target


@settings(
    max_examples=int(os.environ.get("TACK_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    phase=st.sampled_from(["hello", "proof", "sync"]),
    role=st.sampled_from([Role.DIALER, Role.LISTENER]),
    data=streams,
    cut=st.integers(0, 400),
)
def test_fuzzed_bytes_at_any_phase_only_ever_close_the_session(
    phase: str, role: Role, data: bytes, cut: int
) -> None:
    session = session_at(phase, role)
    try:
        for chunk in (data[:cut], data[cut:]):
            session.receive(chunk)
    except SessionClosed as exc:
        assert exc.reason
        assert session.phase is Phase.CLOSED
        with pytest.raises(SessionClosed):
            session.receive(b"\x00")
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__name__} escaped PeerSession.receive: {exc}") from exc


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    role=st.sampled_from([Role.DIALER, Role.LISTENER]),
    data=st.one_of(
        streams,
        st.tuples(
            st.lists(st.binary(max_size=100), max_size=2).map(lambda p: encode(Offer(tuple(p)))),
            st.lists(payloads, min_size=1, max_size=4),
        ).map(lambda t: encode_frame(t[0]) + b"".join(map(encode_frame, t[1]))),
    ),
)
def test_fuzzed_bytes_before_the_proof_never_draw_space_data(role: Role, data: bytes) -> None:
    for phase in ("hello", "proof"):
        session = session_at(phase, role)
        try:
            reply = session.receive(data)
        except SessionClosed:
            continue
        if session.peer_access is None:
            sent = [decode(f) for f in FrameDecoder().feed(reply)]
            leaked = [m for m in sent if isinstance(m, Sync | BlobData | Awareness)]
            assert not leaked, f"{phase}: answered {leaked[:2]} before any proof"


# == 7. hostile paths in remote updates =========================================================

TIMING = BridgeTiming(debounce=0.02, render=0.005, canvas=0.05, delete_grace=0.3)


class Victim:
    """A device with a real folder and bridge (the pattern of tests/test_multidevice.py)."""

    def __init__(self, root: Path, keys: SpaceKeys, scheduler: TestScheduler) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.replica = Replica(Store.memory(), device="victim")
        self.blobs = MemoryBlobs()
        self.bridge = FolderBridge(root, self.replica, self.blobs, scheduler, TIMING)
        self.node = MemoryDevice("victim", self.replica, self.blobs, keys, self.bridge.blob_arrived)

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.bridge.on_event(FsEvent("modified", rel))


class Hostile:
    """A writer peer that knows the secret and edits its replica directly (origin API)."""

    def __init__(self, tmp: Path) -> None:
        self.scheduler = TestScheduler()
        self.keys = new_space_keys()
        self.net = MemoryNetwork()
        self.victim = Victim(tmp / "home" / "victim", self.keys, self.scheduler)
        self.replica = Replica(Store.memory(), device="mallory")
        self.node = MemoryDevice("mallory", self.replica, MemoryBlobs(), self.keys)
        self.net.connect(self.node, self.victim.node)

    def settle(self, rounds: int = 80) -> None:
        quiet = 0
        for _ in range(rounds):
            self.scheduler.advance_by(0.5)
            quiet = quiet + 1 if self.net.flush() == 0 else 0
            if quiet >= 3:
                return
        raise AssertionError("devices did not go quiet")

    def card(self, path: str, text: str, board: str | None = None, kind: str = "text") -> str:
        card_id = new_id()
        if board is None:
            board = path.rsplit("/", 1)[0] if "/" in path else ""
        view = CardView(id=card_id, kind=kind, path=path, board=board, node=dict(NODE))
        self.replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))
        if text and kind == "text":
            self.set_text(card_id, text)
        return card_id

    def set_text(self, card_id: str, text: str) -> None:
        def replace_all(d: Doc[Any]) -> None:
            t = d.get(TEXT_KEY, type=Text)
            if len(t):
                del t[0 : len(t)]
            t.insert(0, text)

        self.replica.transact(card_id, Origin.API, replace_all)

    def rename(self, card_id: str, path: str) -> None:
        board = path.rsplit("/", 1)[0] if "/" in path else ""
        self.replica.transact(
            SPACE_DOC,
            Origin.API,
            lambda d: spacedoc.update_card(d, card_id, path=path, board=board),
        )


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of everything under ``root`` except ``skip``, never following links."""
    out: dict[str, tuple[int, int]] = {}
    for top, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if Path(top, d) != skip]
        for name in dirs + names:
            st_ = os.lstat(Path(top, name))
            out[str(Path(top, name).relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture
def hostile(tmp_path: Path) -> Hostile:
    return Hostile(tmp_path)


def test_hostile_card_paths_are_never_written_outside_the_space(
    tmp_path: Path, hostile: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tack.bridge")
    victim = hostile.victim
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (victim.root / "link").symlink_to(outside, target_is_directory=True)
    etc_target = Path("/etc/tack-pwned.md")
    etc_existed = etc_target.exists()
    victim.write("mine.md", "the victim's own card\n")
    hostile.card("ok.md", "an honest card\n")
    movers = {
        p: hostile.card(f"mover-{i}.md", "soon moved\n")
        for i, p in enumerate(
            [
                "../escape-renamed.md",
                "/etc/tack-pwned-renamed.md",
                "a/../../x-renamed.md",
                "link/pwned-renamed.md",
            ]
        )
    }
    hostile.settle()
    assert (victim.root / "ok.md").read_text(encoding="utf-8") == "an honest card\n"
    assert all((victim.root / f"mover-{i}.md").exists() for i in range(4))
    before = snapshot(tmp_path, victim.root)

    hostile_paths = ["../escape.md", "/etc/tack-pwned.md", "a/../../x.md", "link/pwned.md"]
    for path in hostile_paths:
        hostile.card(path, "pwned\n")
    for path, card_id in movers.items():
        hostile.rename(card_id, path)
    # Board cards and a card whose *board* field leads out, so a board.canvas would land there.
    hostile.card("../evil-board", "", kind="board")
    hostile.card("link/evil-board", "", kind="board")
    hostile.card("fine-1.md", "x\n", board=str(outside))
    hostile.card("fine-2.md", "x\n", board="../outside-dir")
    hostile.card("fine-3.md", "x\n", board="link")
    hostile.settle()

    try:
        assert not (tmp_path / "home" / "escape.md").exists()
        assert not (tmp_path / "home" / "x.md").exists()
        assert list(outside.iterdir()) == []
        if not etc_existed:
            assert not etc_target.exists()
        assert not Path("/etc/tack-pwned-renamed.md").exists()
        assert snapshot(tmp_path, victim.root) == before
    finally:
        if not etc_existed:
            for leaked in (etc_target, Path("/etc/tack-pwned-renamed.md")):
                with contextlib.suppress(OSError):
                    leaked.unlink()
    # The renamed cards' files stayed put, inside the space.
    assert all((victim.root / f"mover-{i}.md").exists() for i in range(4))

    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for path in [*hostile_paths, *movers, "../evil-board", "link/evil-board"]:
        assert path in warnings, f"no reason logged for {path!r}:\n{warnings}"

    # The victim keeps syncing honest cards, both ways, on the same session.
    hostile.card("after.md", "still friends\n")
    victim.write("mine.md", "the victim's own card, edited\n")
    hostile.settle()
    assert (victim.root / "after.md").read_text(encoding="utf-8") == "still friends\n"
    mine = hostile.replica.card_at("mine.md")
    assert mine is not None and hostile.replica.text(mine.id) == "the victim's own card, edited\n"
    assert hostile.net.closed_reasons() == []


def tree_of(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (if it exists) with its content, never following links."""
    out: dict[str, bytes] = {}
    for top, _dirs, names in os.walk(root):
        for name in names:
            path = Path(top, name)
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def test_remote_cards_cannot_reach_into_tack_or_git_state(hostile: Hostile) -> None:
    """``.tack`` and ``.git`` are never cards (fsbridge/ignore.py: "the watcher, the scanner
    and the writer all ask is_ignored"), so a writer peer must not be able to read or write
    them through cards at those paths: not the victim's keys, not its git credentials, not a
    git hook or ``core.fsmonitor`` (which git runs as a command)."""
    victim = hostile.victim
    private = {
        ".tack/config.json": '{"keys": "VICTIM-PRIVATE-KEYS"}\n',
        ".git/config": "[remote]\n\turl = https://me:SECRET-TOKEN@example.com/repo\n",
    }
    for rel, text in private.items():
        (victim.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (victim.root / rel).write_text(text, encoding="utf-8")
    victim.write("mine.md", "hello\n")
    hostile.settle()
    before = {d: tree_of(victim.root / d) for d in (".tack", ".git")}
    evil = "[core]\n\tfsmonitor = touch /tmp/pwned\n"

    for rel in [*private, ".git/hooks/post-checkout", "sub/.git/config", ".tack/store.sqlite"]:
        hostile.card(rel, evil)
    hostile.settle()
    # Nothing of the victim's private files flows back to the attacker, under any card...
    for card in hostile.replica.cards().values():
        if card.kind in ("text", "note"):
            text = hostile.replica.text(card.id)
            assert "VICTIM-PRIVATE-KEYS" not in text and "SECRET-TOKEN" not in text, (
                f"the victim's private file leaked to the peer as card {card.path!r}: {text!r}"
            )
    # ...and editing every card the attacker can see under .tack or .git writes nothing there.
    for card in hostile.replica.cards().values():
        parts = card.path.split("/")
        if card.kind == "text" and (".git" in parts or ".tack" in parts):
            hostile.set_text(card.id, evil)
    hostile.settle()
    after = {d: tree_of(victim.root / d) for d in (".tack", ".git")}
    assert after == before, "a peer's cards changed the victim's .tack or .git"
    assert not (victim.root / "sub" / ".git").exists()
    assert hostile.net.closed_reasons() == []


def test_no_card_of_a_render_batch_lands_in_a_symlinked_folder(
    tmp_path: Path, hostile: Hostile
) -> None:
    """A render batch looks at each folder once (not per file): every card of the batch in
    a folder that is a symlink is refused, the ones in a real folder are written."""
    victim = hostile.victim
    outside = tmp_path / "outside-many"
    outside.mkdir()
    (victim.root / "linked").symlink_to(outside, target_is_directory=True)
    for i in range(6):
        hostile.card(f"linked/c{i}.md", "pwned\n")
        hostile.card(f"real/c{i}.md", "fine\n")
    hostile.settle()
    assert list(outside.iterdir()) == []
    assert [(victim.root / f"real/c{i}.md").read_text(encoding="utf-8") for i in range(6)] == [
        "fine\n"
    ] * 6


def test_a_symlinked_file_among_a_render_batch_s_files_is_not_written_through(
    tmp_path: Path, hostile: Hostile
) -> None:
    """Once a folder is found safe for a render batch, only each file itself is looked at:
    a symlink among the batch's files of that folder is still refused, the others written."""
    victim = hostile.victim
    outside = tmp_path / "outside-one"
    outside.mkdir()
    target = outside / "target.txt"
    target.write_text("untouched\n", encoding="utf-8")
    (victim.root / "real").mkdir()
    (victim.root / "real" / "c3.md").symlink_to(target)
    for i in range(6):
        hostile.card(f"real/c{i}.md", "fine\n")
    hostile.settle()
    assert target.read_text(encoding="utf-8") == "untouched\n"
    assert (victim.root / "real" / "c3.md").is_symlink()
    assert [
        (victim.root / f"real/c{i}.md").read_text(encoding="utf-8") for i in (0, 1, 2, 4, 5)
    ] == ["fine\n"] * 5


def test_a_symlinked_file_in_the_space_is_not_read_for_a_peer(
    tmp_path: Path, hostile: Hostile
) -> None:
    """A file symlinked into the space (``shared.md -> ../outside/secret.txt``) is never a
    card (fsbridge/scanner.py), so a peer's card at that name must not make the victim read
    the link's target -- outside the space -- and send it back, nor write through the link."""
    victim = hostile.victim
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("OUTSIDE-SECRET\n", encoding="utf-8")
    (victim.root / "shared.md").symlink_to(secret)
    victim.write("mine.md", "hello\n")
    hostile.settle()
    card_id = hostile.card("shared.md", "the peer's text\n")
    hostile.settle()
    for card in hostile.replica.cards().values():
        if card.kind == "text":
            text = hostile.replica.text(card.id)
            assert "OUTSIDE-SECRET" not in text, (
                f"{card.path!r} carried the link's target: {text!r}"
            )
    hostile.set_text(card_id, "overwrite\n")
    hostile.settle()
    assert secret.read_text(encoding="utf-8") == "OUTSIDE-SECRET\n"
    assert list(outside.iterdir()) == [secret]
    assert hostile.net.closed_reasons() == []
