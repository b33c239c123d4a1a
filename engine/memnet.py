"""The in-memory fake of :mod:`engine.network`: sessions wired together without sockets.

:class:`MemoryNetwork` links replicas pairwise with real :class:`~engine.session.PeerSession`
objects (real handshake, real proofs, real y-protocols sync) but carries bytes through
queues, so many devices run in one process, in one thread, in milliseconds.  Links can be
cut (``partition``) and restored (``heal``); a healed link starts fresh sessions, exactly as
a reconnect does.  Nothing moves until :meth:`MemoryNetwork.flush` pumps the queues, which
keeps tests deterministic and lets them interleave edits with delivery.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from reactivex.abc import DisposableBase

from engine.blobs import Blobs
from engine.changes import Change
from engine.replica import Replica
from engine.session import PeerSession, Role, SessionClosed
from engine.sharelink import SpaceKeys


@dataclass
class MemoryDevice:
    name: str
    replica: Replica
    blobs: Blobs
    keys: SpaceKeys
    on_blob: Callable[[str], None] | None = None

    @property
    def cert(self) -> bytes:
        return hashlib.sha256(b"fake cert " + self.name.encode()).digest()


@dataclass
class _Link:
    a: MemoryDevice
    b: MemoryDevice
    up: bool = True
    sessions: dict[str, PeerSession] = field(default_factory=dict)
    subscriptions: list[DisposableBase] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


class MemoryNetwork:
    """Devices joined by in-memory links, pumped by :meth:`flush`."""

    def __init__(self) -> None:
        self._links: dict[frozenset[str], _Link] = {}
        self._queue: deque[tuple[_Link, str, bytes]] = deque()
        self._nonces = itertools.count()
        self.refusals: list[str] = []

    def connect(self, a: MemoryDevice, b: MemoryDevice) -> None:
        link = _Link(a, b)
        self._links[frozenset((a.name, b.name))] = link
        self._open(link)

    def _open(self, link: _Link) -> None:
        for me, peer, role in ((link.a, link.b, Role.DIALER), (link.b, link.a, Role.LISTENER)):
            nonce = hashlib.sha256(f"nonce {next(self._nonces)}".encode()).digest()
            link.sessions[me.name] = PeerSession(
                role,
                me.replica,
                me.blobs,
                me.keys,
                my_cert=me.cert,
                peer_cert=peer.cert,
                peer_id=peer.name,
                nonce=nonce,
                name=me.name,
                on_blob=self._on_blob_of(me),
            )
        for me, peer in ((link.a, link.b), (link.b, link.a)):
            session = link.sessions[me.name]
            self._send(link, peer.name, session.start())
            link.subscriptions.append(me.replica.changes.subscribe(self._forwarder(link, me, peer)))

    def _forwarder(
        self, link: _Link, me: MemoryDevice, peer: MemoryDevice
    ) -> Callable[[Change], None]:
        def forward(change: Change) -> None:
            session = link.sessions.get(me.name)
            if link.up and session is not None:
                self._send(link, peer.name, session.local_change(change))

        return forward

    def _on_blob_of(self, me: MemoryDevice) -> Callable[[str], None]:
        return lambda digest: self._blob_arrived(me, digest)

    def _blob_arrived(self, me: MemoryDevice, digest: str) -> None:
        """As :class:`engine.network.Network` does: tell the bridge, and pass the blob on to
        peers that asked for it before it was here."""
        if me.on_blob is not None:
            me.on_blob(digest)
        for link in self._links.values():
            if me.name in (link.a.name, link.b.name) and link.up:
                session = link.sessions.get(me.name)
                other = link.b.name if me.name == link.a.name else link.a.name
                if session is not None:
                    self._send(link, other, session.blob_arrived(digest))

    def _send(self, link: _Link, to: str, data: bytes) -> None:
        if data and link.up:
            self._queue.append((link, to, data))

    def partition(self, a: str, b: str) -> None:
        link = self._links[frozenset((a, b))]
        link.up = False
        # Bytes in flight on a cut connection are lost, as on a real one.
        self._queue = deque(item for item in self._queue if item[0] is not link)
        for sub in link.subscriptions:
            sub.dispose()
        link.subscriptions.clear()
        for session in link.sessions.values():
            session.ended()
        link.sessions.clear()

    def heal(self, a: str, b: str) -> None:
        link = self._links[frozenset((a, b))]
        if not link.up:
            link.up = True
            self._open(link)

    def flush(self, limit: int = 100_000) -> int:
        """Deliver queued bytes until nothing moves; returns how many deliveries ran."""
        delivered = 0
        while self._queue:
            delivered += 1
            if delivered > limit:
                raise RuntimeError("network did not go quiet")
            self.deliver_one()
        return delivered

    def deliver_one(self) -> bool:
        """Deliver the oldest queued bytes (one read on the receiving side, whose answer is
        queued); False if nothing was queued.  Tests interleave it with their scheduler."""
        if not self._queue:
            return False
        link, to, data = self._queue.popleft()
        session = link.sessions.get(to)
        if not link.up or session is None:
            return True
        other = link.a.name if to == link.b.name else link.b.name
        try:
            reply = session.receive(data)
        except SessionClosed as exc:
            link.closed.append(f"{to}: {exc.reason}")
            return True
        self._send(link, other, reply)
        self.refusals.extend(session.stats.refusals)
        session.stats.refusals.clear()
        return True

    def session(self, me: str, peer: str) -> PeerSession | None:
        return self._links[frozenset((me, peer))].sessions.get(me)

    def closed_reasons(self) -> list[str]:
        return [reason for link in self._links.values() for reason in link.closed]
