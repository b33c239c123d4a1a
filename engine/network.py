"""The network adapter: TLS listener, dialers with backoff, one session per peer pair.

This is where sockets meet :class:`~engine.session.PeerSession`.  It owns:

* a TLS 1.3 listener (:mod:`engine.tls`) on the chosen host and port;
* one dial loop per known address (manual ``host:port`` peers and mDNS discoveries), which
  reconnects with exponential backoff after a failure or a lost connection;
* the rule that two devices end up with **one** connection even when they dial each other at
  the same moment: of two sessions with the same peer, the one dialed by the smaller device
  ID survives, on both sides;
* forwarding committed local changes to every synced session (the session itself drops a
  change that came from its own peer);
* bounds against hostile peers: a handshake that does not finish in time, a connection that
  sends malformed frames, and too many connections at once are all closed with a logged
  reason, without disturbing other peers.

Connection limits.  The listener accepts plain TCP and starts TLS itself
(:meth:`asyncio.StreamWriter.start_tls`), so a connection is counted from the moment it is
accepted, before any TLS work is spent on it.  Inbound connections that have not yet proven a
capability for the space (TLS, ``Hello`` and proof still to come) have a budget of their own:
at most :data:`MAX_HANDSHAKES`, and :data:`MAX_HANDSHAKES_PER_ADDRESS` from one address.  A
new connection over either limit evicts the oldest unproven connection -- of its own address,
or else of the address holding the most -- instead of being refused: connections that say
nothing cannot hold the slots and lock honest peers out, and a storm from one address evicts
its own connections, not another address's.  Each has :data:`HANDSHAKE_TIMEOUT` in all
(:data:`TLS_HANDSHAKE_TIMEOUT` of it for TLS).  Proven peers are never evicted for them: they
count only against :data:`MAX_CONNECTIONS`.  Connections that are refused, evicted or time
out are aborted (the socket closes at once, no TLS ``close_notify`` is waited for); every
other close waits at most :data:`CLOSE_TIMEOUT` for the peer.

Backpressure.  Blob chunks a peer asked for are pulled from the session
(:meth:`~engine.session.PeerSession.next_blob_data`) by a task per connection that writes one
chunk and then waits for the transport to drain, so a peer that asks and never reads holds one
chunk in the send buffer, not the blobs it asked for.  The reading side keeps reading while
blob chunks wait (two peers sending each other blobs cannot deadlock) and stops only when
other answers pile up past :data:`SEND_BACKLOG`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reactivex.abc import DisposableBase

from engine.blobs import Blobs
from engine.changes import Change, Origin
from engine.identity import Identity, device_id_of_cert
from engine.presence import Presence
from engine.replica import Replica
from engine.session import PeerSession, Phase, Role, SessionClosed
from engine.sharelink import SpaceKeys
from engine.tls import TlsMaterial, client_context, server_context

log = logging.getLogger("tack.net")

HANDSHAKE_TIMEOUT = 10.0  # seconds from accept (or connect) to a proven session
TLS_HANDSHAKE_TIMEOUT = 5.0  # of which the listener gives TLS at most this much
CLOSE_TIMEOUT = 2.0  # seconds a closing connection may wait for the peer before it is aborted
PRESENCE_DELAY = 0.25  # seconds after a change before our presence (and sync digest) is
# re-announced -- or longer, so that recomputing the digest (tens of ms for 10,000 cards)
# takes at most PRESENCE_SHARE of the loop while changes stream in (a join)
PRESENCE_SHARE = 0.05
# ... and while changes keep streaming in (a join, a checkout), the refresh waits for a
# PRESENCE_DELAY without changes, but never more than PRESENCE_MAX_WAIT after the first
# change it announces: a digest computed mid-stream is stale at once, and a join paid for
# several (about 5 % of its time for 10,000 cards).
PRESENCE_MAX_WAIT = 5.0
MAX_CONNECTIONS = 64  # synced (proven) peers at once
MAX_HANDSHAKES = 32  # inbound connections not yet proven, at once
MAX_HANDSHAKES_PER_ADDRESS = 8  # ... of which from one address
READ_SIZE = 256 * 1024
SEND_BACKLOG = 2 * 1024 * 1024  # bytes queued to a peer above which we stop reading from it


def presence_delay(cost: float) -> float:
    """Seconds from a change to the presence refresh it causes, when the last refresh took
    ``cost`` seconds: :data:`PRESENCE_DELAY`, or long enough that refreshes take at most
    :data:`PRESENCE_SHARE` of the time."""
    return max(PRESENCE_DELAY, cost / PRESENCE_SHARE)


@dataclass
class PeerInfo:
    """What status shows about one peer."""

    device_id: str
    name: str = ""
    address: str = ""
    connected: bool = False
    access: str = ""
    last_seen: float = 0.0
    last_error: str = ""
    refused: int = 0


@dataclass
class _Live:
    session: PeerSession
    writer: asyncio.StreamWriter
    dialer_id: str
    wake_sender: asyncio.Event
    subscription: DisposableBase | None = None
    outbox: list[bytes] = field(default_factory=list)
    replaced: bool = False  # closed by _register for another connection to the same peer


@dataclass
class _Unproven:
    """An inbound connection that has not proven a capability yet (it may be evicted)."""

    host: str
    address: str
    transport: asyncio.WriteTransport  # the TCP transport: abort() closes the socket at once
    task: asyncio.Task[None]


@dataclass
class NetworkConfig:
    host: str = "127.0.0.1"
    port: int = 0
    name: str = ""
    backoff_first: float = 0.2
    backoff_max: float = 10.0
    peers: list[tuple[str, int]] = field(default_factory=list)


class Network:
    """Connects one replica of one space to its peers."""

    def __init__(
        self,
        replica: Replica,
        blobs: Blobs,
        keys: SpaceKeys,
        identity: Identity,
        material: TlsMaterial,
        config: NetworkConfig,
        on_blob: Callable[[str], None] | None = None,
        on_peers: Callable[[list[PeerInfo]], None] | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.replica = replica
        self.blobs = blobs
        self.keys = keys
        self.identity = identity
        self.material = material
        self.config = config
        self.port = 0
        self._on_blob = on_blob
        self._on_peers = on_peers
        self.presence = presence
        self._refresh_pending: asyncio.TimerHandle | None = None
        self._presence_cost = 0.0  # seconds the last presence refresh took
        self._changes_since = (0.0, 0.0)  # loop times of the first and last unannounced change
        self._presence_sub: DisposableBase | None = None
        self._server: asyncio.Server | None = None
        self._live: dict[str, _Live] = {}
        self._peers: dict[str, PeerInfo] = {}
        self._dialing: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._unproven: dict[asyncio.Task[None], _Unproven] = {}  # oldest first
        self._tls: ssl.SSLContext | None = None
        self._stopping = False
        self._address_peer: dict[tuple[str, int], str] = {}
        self._flush_scheduled = False
        self._dial_errors: dict[tuple[str, int], str] = {}
        self._handlers: set[asyncio.Task[None]] = set()  # listener-side connection tasks
        self._gone: dict[str, asyncio.Event] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> int:
        if self.presence is not None:
            self._presence_sub = self.replica.changes.subscribe(self._on_local_change)
        self._tls = server_context(self.material)
        # Plain TCP: TLS is started per connection in _accepted, after it has been counted.
        self._server = await asyncio.start_server(
            self._accepted, self.config.host, self.config.port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        for host, port in self.config.peers:
            self.dial(host, port)
        return self.port

    async def stop(self) -> None:
        self._stopping = True
        if self._presence_sub is not None:
            self._presence_sub.dispose()
        if self._refresh_pending is not None:
            self._refresh_pending.cancel()
        for task in list(self._dialing.values()):
            task.cancel()
        for live in list(self._live.values()):
            with contextlib.suppress(Exception):
                live.writer.write(live.session.close("shutting down"))
                live.writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for task in [*self._dialing.values(), *self._handlers]:
            task.cancel()
        for task in [*self._dialing.values(), *self._handlers]:
            with contextlib.suppress(BaseException):
                await task

    # -- dialing ------------------------------------------------------------------------------

    def dial(self, host: str, port: int) -> None:
        """Keep a connection to ``host:port`` up (idempotent)."""
        key = (host, port)
        if key in self._dialing or self._stopping:
            return
        self._dialing[key] = asyncio.get_running_loop().create_task(self._dial_loop(host, port))

    def connected_to(self, device_id: str) -> bool:
        return device_id in self._live

    async def _dial_loop(self, host: str, port: int) -> None:
        delay = self.config.backoff_first
        while not self._stopping:
            known = self._address_peer.get((host, port))
            if known is not None and known in self._live:
                # Already connected to that device (perhaps it dialed us): wait until it goes.
                gone = self._gone.setdefault(known, asyncio.Event())
                await gone.wait()
                continue
            synced = False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=client_context(self.material)),
                    HANDSHAKE_TIMEOUT,
                )
                synced = await self._run(
                    reader, writer, Role.DIALER, f"{host}:{port}", (host, port)
                )
            except (OSError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                if self._dial_errors.get((host, port)) != reason:
                    log.info("cannot reach %s:%d: %s (retrying)", host, port, reason)
                self._dial_errors[(host, port)] = reason
                self._note_error(host, port, reason)
            except Exception as exc:  # a local failure (the store): keep redialing anyway
                log.warning("connection to %s:%d failed here: %s (retrying)", host, port, exc)
                self._note_error(host, port, str(exc))
            else:
                self._dial_errors.pop((host, port), None)
            if synced:
                delay = self.config.backoff_first
            await asyncio.sleep(delay)
            delay = min(self.config.backoff_max, delay * 2)

    def _note_error(self, host: str, port: int, reason: str) -> None:
        peer_id = self._address_peer.get((host, port))
        info = self._peers.get(peer_id) if peer_id else None
        if info is not None and not info.connected:
            info.last_error = reason
            self._publish()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        raw = writer.transport
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        if self._stopping or self._tls is None:
            raw.abort()
            return
        # Counted before any TLS work: nothing below runs for a connection not admitted.
        self._make_room(host)
        self._unproven[task] = _Unproven(host, address, raw, task)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            try:
                await writer.start_tls(self._tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
            except OSError as exc:  # ssl.SSLError, a reset, or the TLS handshake timeout
                log.info("connection from %s: no TLS: %s", address, str(exc) or type(exc).__name__)
                return
            await self._run(reader, writer, Role.LISTENER, address, deadline=deadline)
        except (OSError, TimeoutError) as exc:
            log.info("connection from %s ended: %s", address, exc)
        except asyncio.CancelledError:
            pass  # stop() or an eviction: end quietly (asyncio's callback would log the cancel)
        finally:
            if self._unproven.pop(task, None) is not None:
                raw.abort()  # never proven: nothing to say goodbye to

    def _make_room(self, host: str) -> None:
        """Make room for one more unproven connection from ``host``: evict the oldest of that
        address when it is at its own limit, else, when all are taken, the oldest of the
        address holding the most (so one address cannot crowd out another)."""
        pending = list(self._unproven.values())
        same = [u for u in pending if u.host == host]
        if len(same) >= MAX_HANDSHAKES_PER_ADDRESS:
            self._evict(same[0])
        elif len(pending) >= MAX_HANDSHAKES:
            counts = Counter(u.host for u in pending)
            heaviest = max(counts, key=lambda h: counts[h])
            self._evict(next(u for u in pending if u.host == heaviest))

    def _evict(self, victim: _Unproven) -> None:
        del self._unproven[victim.task]
        log.warning(
            "dropping connection from %s: too many connections still in the handshake",
            victim.address,
        )
        victim.transport.abort()
        victim.task.cancel()

    async def _hang_up(self, writer: asyncio.StreamWriter, *, abort: bool) -> None:
        """Close a connection: at once (``abort``: refused or timed out), else gracefully,
        but never waiting more than :data:`CLOSE_TIMEOUT` for the peer's ``close_notify``."""
        if abort:
            writer.transport.abort()
            return
        writer.close()
        if self._stopping:
            return  # shutting down: let goodbyes already written go out, wait for nobody
        try:
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception:  # the peer did not answer in time, or the connection broke
            writer.transport.abort()

    # -- one connection -----------------------------------------------------------------------

    async def _run(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        role: Role,
        address: str,
        dialed: tuple[str, int] | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Drive one connection until it ends; returns whether it reached sync.

        ``deadline`` (monotonic) is when an unproven connection is given up; by default
        :data:`HANDSHAKE_TIMEOUT` from now."""
        if deadline is None:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        reached_sync = False
        live: _Live | None = None
        session: PeerSession | None = None
        sender: asyncio.Task[None] | None = None
        wake_sender = asyncio.Event()
        abort = False
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            peer_cert = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if not peer_cert:
                log.warning("%s presented no certificate", address)
                abort = True
                return False
            peer_id = device_id_of_cert(peer_cert)
            if peer_id == self.identity.device_id:
                abort = True
                return False  # ourselves (a discovery echo)
            if dialed is not None:
                self._address_peer[dialed] = peer_id
            info = self._peers.setdefault(peer_id, PeerInfo(peer_id))
            info.address = address

            def heard(payload: bytes) -> None:
                self._heard(peer_id, payload)

            session = PeerSession(
                role,
                self.replica,
                self.blobs,
                self.keys,
                my_cert=self.material.leaf_der,
                peer_cert=peer_cert,
                peer_id=peer_id,
                nonce=secrets.token_bytes(32),
                name=self.config.name or self.identity.name,
                on_blob=self._blob_arrived,
                on_awareness=heard,
                paced_blobs=True,
            )
            dialer = self.identity.device_id if role is Role.DIALER else peer_id
            writer.write(session.start())
            while True:
                timeout = None if session.synced else max(0.1, deadline - time.monotonic())
                lost: OSError | None = None
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    log.warning(
                        "%s (%s) did not finish the handshake in time", address, peer_id[:7]
                    )
                    abort = True
                    return reached_sync
                except OSError as exc:
                    data, lost = b"", exc
                if live is not None and live.replaced:
                    # _register closed this connection (from another task) for a newer one to
                    # the same peer: whatever the read saw -- the end of the stream, a reset,
                    # the peer's answering goodbye -- is the end of a duplicate, not a failure,
                    # and the peer's status belongs to the connection that was kept.
                    log.info(
                        "connection with %s (%s) closed: duplicate connection (another one to "
                        "the same device is kept)",
                        address,
                        peer_id[:7],
                    )
                    return reached_sync
                if lost is not None:
                    info.last_error = f"connection lost: {lost}"
                    log.info("connection with %s (%s) lost: %s", address, peer_id[:7], lost)
                    return reached_sync
                if not data:
                    info.last_error = "connection closed by the peer"
                    log.info(
                        "%s (%s) closed the connection%s",
                        address,
                        peer_id[:7],
                        "" if session.synced else " before the handshake finished",
                    )
                    return reached_sync
                was_synced = session.synced
                try:
                    writer.write(session.receive(data))
                except SessionClosed as exc:
                    log.warning(
                        "connection with %s (%s) closed: %s", address, peer_id[:7], exc.reason
                    )
                    info.last_error = exc.reason
                    with contextlib.suppress(Exception):
                        writer.write(session.close(exc.reason))
                    return reached_sync
                if session.phase is Phase.CLOSED:
                    log.warning(
                        "refused %s (%s): it proved no capability for this space",
                        address,
                        peer_id[:7],
                    )
                    info.last_error = "no shared space"
                    with contextlib.suppress(Exception):
                        await writer.drain()
                    return reached_sync
                info.last_seen = time.time()
                if info.refused != session.stats.refused:
                    info.refused = session.stats.refused
                    self._publish()
                if session.synced and not was_synced:
                    if len(self._live) >= MAX_CONNECTIONS and peer_id not in self._live:
                        log.warning(
                            "refusing %s (%s): too many connections (%d synced peers)",
                            address,
                            peer_id[:7],
                            len(self._live),
                        )
                        info.last_error = "too many connections"
                        writer.write(session.close("too many connections"))
                        return False
                    reached_sync = True
                    task = asyncio.current_task()
                    if task is not None:
                        self._unproven.pop(task, None)  # proven: never evicted from now on
                    live = _Live(session, writer, dialer, wake_sender)
                    if not self._register(peer_id, live):
                        log.info(
                            "connection with %s (%s) closed: duplicate connection (the one "
                            "already synced is kept)",
                            address,
                            peer_id[:7],
                        )
                        writer.write(session.close("duplicate connection"))
                        live = None
                        return True
                    sender = asyncio.get_running_loop().create_task(
                        self._send_blobs(session, writer, wake_sender)
                    )
                    info.name = session.peer_name
                    info.access = session.peer_access or ""
                    info.connected = True
                    info.last_error = ""
                    if self.presence is not None:
                        writer.write(session.awareness(self.presence.local_update()))
                    log.info(
                        "synced with %s (%s, %s access) at %s",
                        session.peer_name,
                        peer_id[:7],
                        info.access,
                        address,
                    )
                    self._publish()
                if session.blob_data_pending:
                    wake_sender.set()
                if writer.transport.get_write_buffer_size() > SEND_BACKLOG:
                    await writer.drain()  # the peer is not reading: stop reading it too
        finally:
            if sender is not None:
                sender.cancel()
            if session is not None:
                session.ended()  # what it still awaited from this peer is awaited no more
            if live is not None:
                self._unregister(live)
            await self._hang_up(writer, abort=abort)

    async def _send_blobs(
        self, session: PeerSession, writer: asyncio.StreamWriter, wake: asyncio.Event
    ) -> None:
        """Send the blob chunks ``session`` owes its peer: one chunk, then wait until the
        transport has drained, so at most about one chunk waits in memory however much the
        peer asked for.  Runs until the connection ends (:meth:`_run` cancels it)."""
        try:
            while True:
                await wake.wait()
                wake.clear()
                while not writer.transport.is_closing() and (data := session.next_blob_data()):
                    writer.write(data)
                    await writer.drain()
        except OSError:
            pass  # the connection broke; _run notices on its side and ends it
        except Exception as exc:  # a local failure (reading the blob): end the connection
            log.warning("could not send blob data to %s: %s", session.peer_id[:7], exc)
            writer.transport.abort()

    def _register(self, peer_id: str, live: _Live) -> bool:
        existing = self._live.get(peer_id)
        if existing is not None:
            # Two connections to one peer: keep the one the smaller device ID dialed.
            if existing.dialer_id <= live.dialer_id:
                return False
            self._unregister(existing)
            existing.replaced = True  # its own _run ends it quietly when its read returns
            with contextlib.suppress(Exception):
                existing.writer.write(existing.session.close("duplicate connection"))
                existing.writer.close()
        live.subscription = self.replica.changes.subscribe(
            lambda change: self._forward(live, change)
        )
        self._live[peer_id] = live
        self._gone[peer_id] = asyncio.Event()
        return True

    def _unregister(self, live: _Live) -> None:
        if live.subscription is not None:
            live.subscription.dispose()
            live.subscription = None
        peer_id = live.session.peer_id
        if self._live.get(peer_id) is live:
            del self._live[peer_id]
            self._gone.setdefault(peer_id, asyncio.Event()).set()
            info = self._peers.get(peer_id)
            if info is not None:
                info.connected = False
            log.info("disconnected from %s (%s)", live.session.peer_name, peer_id[:7])
            self._publish()

    def _blob_arrived(self, digest: str) -> None:
        if self._on_blob is not None:
            self._on_blob(digest)
        for live in list(self._live.values()):
            live.session.blob_arrived(digest)  # paced: queued for the connection's sender
            if live.session.blob_data_pending:
                live.wake_sender.set()

    def _forward(self, live: _Live, change: Change) -> None:
        data = live.session.local_change(change)
        if data:
            live.outbox.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send what this loop tick produced, after one durability barrier for all of it."""
        self._flush_scheduled = False
        try:
            self.replica.store.barrier()
        except Exception as exc:
            log.warning("could not make local changes durable before sending: %s", exc)
        for live in list(self._live.values()):
            if live.outbox:
                data = b"".join(live.outbox)
                live.outbox.clear()
                with contextlib.suppress(Exception):
                    live.writer.write(data)

    # -- presence -----------------------------------------------------------------------------

    def _heard(self, peer_id: str, payload: bytes) -> None:
        if self.presence is None:
            return
        try:
            self.presence.apply(peer_id, payload)
        except ValueError as exc:
            log.warning("ignored presence from %s: %s", peer_id[:7], exc)
            return
        self._publish()

    def _on_local_change(self, change: Change) -> None:
        if self.presence is None:
            return
        if change.origin is Origin.FILE and change.path:
            self.presence.touched(change.path)
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._refresh_pending is None:
            self._changes_since = (now, now)
            delay = presence_delay(self._presence_cost)
            self._refresh_pending = loop.call_later(delay, self._refresh_presence)
        else:
            self._changes_since = (self._changes_since[0], now)

    def _refresh_presence(self) -> None:
        self._refresh_pending = None
        if self.presence is not None and not self._stopping:
            loop = asyncio.get_running_loop()
            first, last = self._changes_since
            due = min(last + PRESENCE_DELAY, first + PRESENCE_MAX_WAIT)
            if due > loop.time():  # changes still streaming in: wait for a pause
                self._refresh_pending = loop.call_at(due, self._refresh_presence)
                return
            started = time.monotonic()
            try:
                self.broadcast_awareness(self.presence.refresh())
            except Exception as exc:  # the store may be failing; presence can wait
                log.warning("could not refresh presence: %s", exc)
            self._presence_cost = time.monotonic() - started
            self._publish()

    def broadcast_awareness(self, payload: bytes) -> None:
        for live in self._live.values():
            data = live.session.awareness(payload)
            if data:
                live.writer.write(data)

    # -- status -------------------------------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        return sorted(self._peers.values(), key=lambda p: p.device_id)

    def sessions(self) -> dict[str, PeerSession]:
        return {peer_id: live.session for peer_id, live in self._live.items()}

    def _publish(self) -> None:
        if self._on_peers is not None and not self._stopping:
            try:
                self._on_peers(self.peers())
            except Exception as exc:  # status is best effort; sync must not stop for it
                log.warning("could not record peer status: %s", exc)

    def peer_json(self, info: PeerInfo) -> dict[str, Any]:
        """What ``tack status`` shows about one peer, presence included."""
        seen = self.presence.peer(info.device_id) if self.presence is not None else {}
        return {
            "device": info.device_id,
            "name": info.name or seen.get("name", ""),
            "user": seen.get("user", ""),
            "colour": seen.get("colour", ""),
            "recent": seen.get("recent", []),
            "address": info.address,
            "connected": info.connected,
            "in_sync": info.connected and bool(seen.get("in_sync")),
            "access": info.access,
            "refused": info.refused,
            "last_error": info.last_error,
        }
