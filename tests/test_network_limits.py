"""Network's connection limits, in process over real loopback sockets (engine/network.py).

Connections that have proven nothing have a budget of their own (``MAX_HANDSHAKES``,
``MAX_HANDSHAKES_PER_ADDRESS``); a newcomer evicts the oldest unproven connection instead of
being refused, so silent connections cannot lock honest peers out, and proven peers are
never evicted for them.  The listener counts plain TCP connections and starts TLS itself,
with its own timeout, aborting what it drops.  The real-daemon versions, with memory and
socket counts, are in tests/test_hostile_peers.py (``-m slow``); these take about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pycrdt import Text

from engine import MemoryBlobs, Origin, Replica, Store, network
from engine.identity import load_or_create
from engine.network import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_ADDRESS, Network, NetworkConfig
from engine.presence import Presence
from engine.sharelink import SpaceKeys, new_space_keys
from engine.tls import issue_leaf

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def node(
    home: Path,
    name: str,
    keys: SpaceKeys,
    dial: int | None = None,
    presence: type[Presence] | None = None,
) -> AsyncIterator[Network]:
    """A started :class:`Network` on 127.0.0.1 (dialing 127.0.0.1:``dial``; announcing a
    ``presence`` of that type, if given), stopped after."""
    identity = load_or_create(home / name, name=name)
    peers = [("127.0.0.1", dial)] if dial is not None else []
    replica = Replica(Store.memory(), device=name)
    net = Network(
        replica,
        MemoryBlobs(),
        keys,
        identity,
        issue_leaf(identity),
        NetworkConfig(host="127.0.0.1", peers=peers),
        presence=None if presence is None else presence(replica, identity.device_id, name),
    )
    await net.start()
    try:
        yield net
    finally:
        await net.stop()


async def until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def silent(port: int, count: int, source: str = "127.0.0.1") -> list[Streams]:
    """``count`` TCP connections that never start TLS."""
    return [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        for _ in range(count)
    ]


def close_all(connections: list[Streams]) -> None:
    for _, writer in connections:
        writer.transport.abort()


def dropped(caplog: pytest.LogCaptureFixture, address: str = "") -> int:
    return sum(
        "still in the handshake" in r.getMessage() and address in r.getMessage()
        for r in caplog.records
    )


def run(scenario: Callable[[], Awaitable[None]], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tack.net"):
        asyncio.run(asyncio.wait_for(scenario(), 30))


def test_silent_connections_evict_each_other_never_an_honest_or_a_synced_peer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(A regression test: MAX_CONNECTIONS counted unproven connections, so 64 silent ones
    refused an honest peer for the whole handshake timeout.)"""
    keys = new_space_keys()

    async def scenario() -> None:
        async with node(tmp_path, "a", keys) as a:
            storm = await silent(a.port, MAX_HANDSHAKES + 40)
            await until(
                lambda: dropped(caplog) >= 40 + MAX_HANDSHAKES - MAX_HANDSHAKES_PER_ADDRESS,
                10,
                "the storm to be trimmed to the per-address budget",
            )
            async with node(tmp_path, "b", keys, dial=a.port) as b:
                await until(lambda: a.connected_to(b.identity.device_id), 5, "b to sync")
                more = await silent(a.port, MAX_HANDSHAKES + 40)  # b has proven itself now
                await until(
                    lambda: (
                        dropped(caplog) >= 2 * (MAX_HANDSHAKES + 40) - MAX_HANDSHAKES_PER_ADDRESS
                    ),
                    10,
                    "the second storm to be trimmed",
                )
                assert a.connected_to(b.identity.device_id)
            close_all(storm + more)

    run(scenario, caplog)
    assert "too many connections" in caplog.text  # what the log says when it drops one


def test_a_storm_from_one_address_does_not_evict_handshakes_from_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = new_space_keys()
    here = MAX_HANDSHAKES_PER_ADDRESS - 1

    async def scenario() -> None:
        async with node(tmp_path, "a", keys) as a:
            waiting = await silent(a.port, here)  # from 127.0.0.1, within its own limit
            storm = await silent(a.port, 3 * MAX_HANDSHAKES, source="127.0.0.2")
            await until(
                lambda: dropped(caplog) >= 3 * MAX_HANDSHAKES - (MAX_HANDSHAKES - here),
                10,
                "the storm to be trimmed",
            )
            assert dropped(caplog, "127.0.0.1:") == 0
            async with node(tmp_path, "b", keys, dial=a.port) as b:  # also from 127.0.0.1
                await until(lambda: a.connected_to(b.identity.device_id), 5, "b to sync")
            assert dropped(caplog, "127.0.0.1:") == 0
            close_all(waiting + storm)

    run(scenario, caplog)


def test_a_connection_that_never_starts_tls_is_aborted_after_the_tls_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network, "TLS_HANDSHAKE_TIMEOUT", 0.3)
    keys = new_space_keys()

    async def scenario() -> None:
        async with node(tmp_path, "a", keys) as a:
            [(reader, writer)] = await silent(a.port, 1)
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(1024), 5) == b""  # closed, unread
            assert time.monotonic() - started < 3
            writer.transport.abort()

    run(scenario, caplog)
    assert "no TLS" in caplog.text


def test_synced_peers_have_their_own_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network, "MAX_CONNECTIONS", 1)
    keys = new_space_keys()

    async def scenario() -> None:
        async with (
            node(tmp_path, "a", keys) as a,
            node(tmp_path, "b", keys, dial=a.port) as b,
        ):
            await until(lambda: a.connected_to(b.identity.device_id), 5, "b to sync")
            async with node(tmp_path, "c", keys, dial=a.port) as c:
                await until(
                    lambda: "too many connections (1 synced peers)" in caplog.text,
                    5,
                    "a to refuse c",
                )
                assert not a.connected_to(c.identity.device_id)
                assert a.connected_to(b.identity.device_id)

    run(scenario, caplog)


def edit(replica: Replica) -> None:
    """One local change (a character typed into ``card``)."""
    replica.transact("card", Origin.API, lambda d: d.get("content", type=Text).insert(0, "x"))


class SlowPresence(Presence):
    """A presence whose digest takes ``cost`` seconds to recompute (a large space)."""

    cost = 0.04

    def refresh(self) -> bytes:
        time.sleep(self.cost)  # the work itself, not a wait for something else
        return super().refresh()


def test_presence_is_refreshed_less_often_when_its_digest_is_costly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A change re-announces presence after PRESENCE_DELAY, unless the last refresh was so
    costly that refreshing that often would take more than PRESENCE_SHARE of the loop."""
    assert network.presence_delay(0.0) == network.PRESENCE_DELAY
    assert network.presence_delay(1.0) == pytest.approx(1.0 / network.PRESENCE_SHARE)

    async def scenario() -> None:
        async with node(tmp_path, "p", new_space_keys(), presence=SlowPresence) as net:
            replica, loop = net.replica, asyncio.get_running_loop()
            edit(replica)
            first = net._refresh_pending
            assert first is not None
            assert first.when() - loop.time() <= network.PRESENCE_DELAY
            await until(lambda: net._refresh_pending is None, 5, "the first refresh")
            edit(replica)
            second = net._refresh_pending
            assert second is not None
            assert second.when() - loop.time() >= 0.9 * SlowPresence.cost / network.PRESENCE_SHARE

    run(scenario, caplog)


class CountedPresence(Presence):
    """A presence that notes the loop time of each refresh."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.refreshed: list[float] = []

    def refresh(self) -> bytes:
        self.refreshed.append(asyncio.get_running_loop().time())
        return super().refresh()


def test_presence_waits_for_a_pause_in_a_stream_of_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While changes keep arriving (a join), the digest is recomputed only after a pause of
    PRESENCE_DELAY, or PRESENCE_MAX_WAIT after the first change it announces; not every
    PRESENCE_DELAY as a plain throttle would."""
    monkeypatch.setattr(network, "PRESENCE_DELAY", 0.4)
    monkeypatch.setattr(network, "PRESENCE_MAX_WAIT", 1.2)

    async def scenario() -> None:
        async with node(tmp_path, "p", new_space_keys(), presence=CountedPresence) as net:
            replica, presence, loop = net.replica, net.presence, asyncio.get_running_loop()
            assert isinstance(presence, CountedPresence)
            started = loop.time()
            while loop.time() - started < 3.0:  # a change every 20 ms for 3 s
                edit(replica)
                await asyncio.sleep(0.02)
            stopped = loop.time()
            during = list(presence.refreshed)
            await until(lambda: net._refresh_pending is None, 5, "the refresh after the pause")
            # A plain 0.4 s throttle refreshes 7 times in 3 s; waiting for a pause, only
            # every 1.2 s (the longest wait), the first not before it.
            assert 1 <= len(during) <= 3, during
            assert during[0] - started >= 1.2
            assert presence.refreshed[-1] >= stopped  # and once the stream stopped

    run(scenario, caplog)
