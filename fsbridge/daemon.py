"""``tack up``: one space, one process, one owner loop.

Wires the real adapters together in one place: the space lock, the SQLite store, the blob
directory, the folder bridge on an asyncio loop (through RxPY's asyncio scheduler, used on
the loop only), and the watcher, whose events arrive on the loop from its own process (in
bursts, see :mod:`fsbridge.watcher`).
The watcher starts *before* the start-up scan so no edit can slip between the two.
Stopping (SIGINT/SIGTERM) stops the watcher, lets the bridge finish what it is doing, and
closes the store; anything still debounced is picked up by the next start's scan.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reactivex.scheduler.eventloop import AsyncIOScheduler

from engine import DirBlobs, Replica, Store
from engine.identity import Identity
from engine.network import Network, NetworkConfig, PeerInfo
from engine.presence import Presence
from engine.tls import issue_leaf
from fsbridge.bridge import BridgeTiming, FolderBridge
from fsbridge.device import this_device
from fsbridge.spacedir import SpaceDir, open_space
from fsbridge.spacelock import SpaceLock
from fsbridge.watcher import FolderWatcher

if TYPE_CHECKING:  # imported when mDNS is on (zeroconf takes 30 ms to import)
    from engine.discovery import Discovery, PeerAddress

log = logging.getLogger("tack")


class SpaceGone(RuntimeError):
    """The space's own state disappeared while Tack ran; it stopped without touching files."""


@dataclass
class Running:
    """The live parts of a running space, for tests and embedding."""

    space: SpaceDir
    replica: Replica
    bridge: FolderBridge
    watcher: FolderWatcher
    network: Network | None = None


@dataclass(frozen=True)
class NetOptions:
    """How ``tack up`` talks to peers (``None`` in :func:`serve` = no networking at all)."""

    listen: str = "0.0.0.0"
    port: int = 0
    peers: tuple[tuple[str, int], ...] = ()
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ("127.0.0.1",)
    name: str | None = None  # this device's name as peers see it (saved for next time)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    return host.strip("[]"), int(port)


async def serve(
    root: Path,
    stop: asyncio.Event,
    timing: BridgeTiming | None = None,
    on_ready: Callable[[Running], None] | None = None,
    net: NetOptions | None = None,
) -> None:
    space = open_space(root)
    lock = SpaceLock(space.tack)
    lock.acquire()
    store = Store.open(space.store_path)
    network: Network | None = None
    discovery: Discovery | None = None
    watcher: FolderWatcher | None = None
    try:
        identity = this_device(net.name if net is not None else None)
        loop = asyncio.get_running_loop()
        # The bridge runs on the loop only, so its scheduler need not be thread-safe (a
        # thread-safe schedule writes to the loop's wake-up pipe every time).
        scheduler = AsyncIOScheduler(loop)
        replica = Replica(store, identity.device_id)
        blobs = DirBlobs(space.blobs_path)
        bridge = FolderBridge(space.root, replica, blobs, scheduler, timing)
        bridge.on_problems = lambda problems: store.set_meta(
            "problems", json.dumps(sorted(problems.values()), ensure_ascii=False)
        )
        fatal: list[str] = []

        def stop_for(reason: str) -> None:
            log.error("%s", reason)
            fatal.append(reason)
            stop.set()

        bridge.on_fatal = stop_for
        store.set_meta("problems", "[]")
        store.set_meta("peers", "[]")
        keys = space.keys()
        store.set_meta("access", "read-write" if keys.can_write else "read-only")

        watcher = FolderWatcher(space.root, bridge.on_event, loop, on_fatal=stop_for)
        watcher.start()
        started = time.monotonic()
        bridge.scan(keep_going=lambda: not stop.is_set(), canvases=False)  # flushed when ready
        if stop.is_set():
            log.info("stopped during the start-up scan; the next start finishes it")
        else:
            network, discovery = await _get_ready(
                net, space, replica, blobs, bridge, identity, store, watcher, started, on_ready
            )
        await stop.wait()
        watcher.stop()
        if discovery is not None:
            await discovery.stop()
        if network is not None:
            await network.stop()
        bridge.dispose()
        replica.close()  # writes the heads it batched, so the next start reads no document
        if fatal:
            raise SpaceGone(fatal[0])
        log.info("Tack stopped; everything saved")
    finally:
        if watcher is not None:
            watcher.stop()  # already stopped, unless the start-up failed after it started
        store.close()
        lock.release()


async def _get_ready(
    net: NetOptions | None,
    space: SpaceDir,
    replica: Replica,
    blobs: DirBlobs,
    bridge: FolderBridge,
    identity: Identity,
    store: Store,
    watcher: FolderWatcher,
    started: float,
    on_ready: Callable[[Running], None] | None,
) -> tuple[Network | None, Discovery | None]:
    """After the start-up scan: canvases, the network, and the "ready" line."""
    bridge.flush_canvas_now()
    store.set_meta("device", identity.device_id)
    store.set_meta("device_name", identity.name)
    network: Network | None = None
    discovery: Discovery | None = None
    if net is not None:
        network, discovery = await _start_network(
            net, space, replica, blobs, bridge, identity, store
        )
    log.info(
        "Tack is watching %s (space %s, device %s, %d cards) — ready in %.0f ms",
        space.root,
        space.space_id()[:8],
        identity.short_id(),
        len(replica.cards()),
        (time.monotonic() - started) * 1000,
    )
    if on_ready is not None:
        on_ready(Running(space, replica, bridge, watcher, network))
    return network, discovery


async def _start_network(
    net: NetOptions,
    space: SpaceDir,
    replica: Replica,
    blobs: DirBlobs,
    bridge: FolderBridge,
    identity: Identity,
    store: Store,
) -> tuple[Network, Discovery | None]:
    keys = space.keys()
    peers = list(net.peers) + [parse_address(p) for p in space.peers()]

    presence = Presence(replica, identity.device_id, identity.name)

    def publish(infos: list[PeerInfo]) -> None:
        report = [network.peer_json(i) for i in infos]
        store.set_meta("peers", json.dumps(report, ensure_ascii=False))

    network = Network(
        replica,
        blobs,
        keys,
        identity,
        issue_leaf(identity),
        NetworkConfig(host=net.listen, port=net.port, name=identity.name, peers=peers),
        on_blob=bridge.blob_arrived,
        on_peers=publish,
        presence=presence,
    )
    port = await network.start()
    store.set_meta("port", str(port))
    log.info(
        "listening on %s:%d for peers%s",
        net.listen,
        port,
        "" if keys.can_write else " (read-only replica: your edits stay local)",
    )
    if not net.mdns:
        return network, None
    from engine.discovery import Discovery  # only with mDNS

    def found(peer: PeerAddress) -> None:
        if not network.connected_to(peer.device_id):
            network.dial(peer.host, peer.port)

    discovery = Discovery(
        identity.device_id,
        port,
        list(net.mdns_interfaces),
        on_found=found,
        on_lost=lambda device_id: None,
    )
    # mDNS probing takes a second or two; sync over manual peers need not wait for it.
    asyncio.get_running_loop().create_task(_start_discovery(discovery))
    return network, discovery


async def _start_discovery(discovery: Discovery) -> None:
    try:
        await discovery.start()
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("mDNS discovery is off: %s (manual --peer addresses still work)", exc)


# Python collects the whole heap after every 10 collections of its middle generation (if
# the objects made since the last full collection are a quarter of those that survived it).
# A join makes its long-lived objects in a burst -- a document, a card view and their
# observers per card -- so a 10,000-card join paid for four full collections, 0.17 s of its
# 0.27 s of collecting (BENCHMARKS.md, eighth round).  Full collections a tenth as often:
# the young generations, where short-lived cycles die, are collected as before.
FULL_COLLECTION_AFTER = 100  # middle-generation collections (Python's default: 10)


def run_forever(
    root: Path, timing: BridgeTiming | None = None, net: NetOptions | None = None
) -> None:
    """Run until SIGINT or SIGTERM."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(*_: object) -> None:
            # A plain handler, not loop.add_signal_handler: it runs between two bytecodes
            # even while the loop is busy in a long start-up scan, which checks ``stop``
            # per card; the no-op callback wakes a loop that is waiting in select().
            stop.set()
            loop.call_soon_threadsafe(lambda: None)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        await serve(root, stop, timing, net=net)

    asyncio.run(main())
