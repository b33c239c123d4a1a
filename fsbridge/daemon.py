"""``tack up``: one space, one process, one owner loop.

Wires the real adapters together in one place: the space lock, the SQLite store, the blob
directory, the folder bridge on an asyncio loop (through RxPY's thread-safe asyncio
scheduler), and the watchdog thread, whose events hop onto the loop before touching state.
The watcher starts *before* the start-up scan so no edit can slip between the two.
Stopping (SIGINT/SIGTERM) stops the watcher, lets the bridge finish what it is doing, and
closes the store; anything still debounced is picked up by the next start's scan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler

from engine import DirBlobs, Replica, Store
from fsbridge.bridge import BridgeTiming, FolderBridge, FsEvent
from fsbridge.device import this_device
from fsbridge.spacedir import SpaceDir, open_space
from fsbridge.spacelock import SpaceLock
from fsbridge.watcher import FolderWatcher

log = logging.getLogger("tack")


@dataclass
class Running:
    """The live parts of a running space, for tests and embedding."""

    space: SpaceDir
    replica: Replica
    bridge: FolderBridge
    watcher: FolderWatcher


async def serve(
    root: Path,
    stop: asyncio.Event,
    timing: BridgeTiming | None = None,
    on_ready: Callable[[Running], None] | None = None,
) -> None:
    space = open_space(root)
    lock = SpaceLock(space.tack)
    lock.acquire()
    store = Store.open(space.store_path)
    try:
        identity = this_device()
        loop = asyncio.get_running_loop()
        scheduler = AsyncIOThreadSafeScheduler(loop)
        replica = Replica(store, identity.device_id)
        bridge = FolderBridge(space.root, replica, DirBlobs(space.blobs_path), scheduler, timing)
        bridge.on_problems = lambda problems: store.set_meta(
            "problems", json.dumps(sorted(problems.values()), ensure_ascii=False)
        )
        store.set_meta("problems", "[]")

        def hop(event: FsEvent) -> None:
            scheduler.schedule(lambda *_: bridge.on_event(event))

        watcher = FolderWatcher(space.root, hop)
        watcher.start()
        started = time.monotonic()
        bridge.scan()
        bridge.flush_canvas_now()
        store.set_meta("device", identity.device_id)
        log.info(
            "Tack is watching %s (space %s, device %s, %d cards) — ready in %.0f ms",
            space.root,
            space.space_id()[:8],
            identity.short_id(),
            len(replica.cards()),
            (time.monotonic() - started) * 1000,
        )
        if on_ready is not None:
            on_ready(Running(space, replica, bridge, watcher))
        await stop.wait()
        watcher.stop()
        bridge.dispose()
        log.info("Tack stopped; everything saved")
    finally:
        store.close()
        lock.release()


def run_forever(root: Path, timing: BridgeTiming | None = None) -> None:
    """Run until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(root, stop, timing)

    asyncio.run(main())
