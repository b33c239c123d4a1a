"""engine.discovery on real sockets: loopback only, or private network namespaces.

Never multicasts on this machine's real interfaces: every Zeroconf here (ours, the peers run
as subprocesses, the hostile registrar) is bound to ``127.0.0.1`` or to a veth address inside
namespaces the test creates (tests/netns.py).  Other Tack tests may be browsing loopback at the
same time, so every assertion is about the random device ids this test made up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from netns import NetnsUnavailable, VethPair, veth_pair

from engine.discovery import SERVICE_TYPE, Discovery, PeerAddress, lan_ipv4_addresses
from engine.identity import format_device_id

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ["127.0.0.1"]
TIMEOUT = 10.0

# A discovery peer as a separate process: prints one JSON line per event, stops (with goodbye
# packets) on SIGTERM.  argv: device_id port interface [ttl]
PEER_SCRIPT = """
import asyncio, json, signal, sys
from engine.discovery import Discovery

def emit(**event):
    print(json.dumps(event), flush=True)

async def main():
    device_id, port, interface = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 120
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    d = Discovery(
        device_id, port, [interface],
        on_found=lambda p: emit(event="found", id=p.device_id, host=p.host, port=p.port),
        on_lost=lambda i: emit(event="lost", id=i),
        ttl=ttl,
    )
    await d.start()
    emit(event="ready", name=d.instance_name)
    await stop.wait()
    await d.stop()
    emit(event="stopped")

asyncio.run(main())
"""


def new_id() -> str:
    return format_device_id(os.urandom(32))


class Recorder:
    """on_found/on_lost for one Discovery; ``wait`` blocks until a condition on the events."""

    def __init__(self) -> None:
        self.found: list[PeerAddress] = []
        self.lost: list[str] = []
        self._changed = asyncio.Event()

    def on_found(self, peer: PeerAddress) -> None:
        self.found.append(peer)
        self._changed.set()

    def on_lost(self, device_id: str) -> None:
        self.lost.append(device_id)
        self._changed.set()

    def found_of(self, device_id: str) -> list[PeerAddress]:
        return [p for p in self.found if p.device_id == device_id]

    async def wait(
        self, predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}: found={self.found} lost={self.lost}"
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class PeerProcess:
    """A PEER_SCRIPT subprocess and the events it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.events: list[dict[str, Any]] = []

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        for event in self.events:
            if predicate(event):
                return event
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                raise AssertionError(
                    f"peer: timed out waiting for {what}; {self.describe()}"
                ) from None
            if not line:
                raise AssertionError(f"peer exited before {what}; {self.describe()}")
            event = json.loads(line)
            self.events.append(event)
            if predicate(event):
                return event

    def describe(self) -> str:
        err = self.stderr_path.read_text(errors="replace")[-2000:]
        return f"events={self.events} stderr={err!r}"

    async def terminate(self) -> None:
        """SIGTERM (the peer says goodbye), then collect the rest of its events."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        rest = await asyncio.wait_for(self.proc.stdout.read(), TIMEOUT)
        self.events.extend(json.loads(line) for line in rest.splitlines() if line.strip())
        await asyncio.wait_for(self.proc.wait(), TIMEOUT)


@asynccontextmanager
async def peer_process(
    tmp_path: Path, tag: str, args: Sequence[str], prefix: Sequence[str] = ()
) -> AsyncIterator[PeerProcess]:
    stderr_path = tmp_path / f"peer-{tag}.stderr"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-c",
            PEER_SCRIPT,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=env,
        )
    peer = PeerProcess(proc, stderr_path)
    try:
        yield peer
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def is_found(device_id: str, host: str, port: int) -> Callable[[dict[str, Any]], bool]:
    def predicate(e: dict[str, Any]) -> bool:
        return e["event"] == "found" and (e["id"], e["host"], e["port"]) == (device_id, host, port)

    return predicate


# -- 1. one process, loopback ----------------------------------------------------------------


def test_two_instances_find_each_other_and_see_the_goodbye() -> None:
    async def scenario() -> None:
        id_a, id_b = new_id(), new_id()
        rec_a, rec_b = Recorder(), Recorder()
        a = Discovery(id_a, 41001, LOOPBACK, rec_a.on_found, rec_a.on_lost)
        b = Discovery(id_b, 41002, LOOPBACK, rec_b.on_found, rec_b.on_lost)
        try:
            await asyncio.gather(a.start(), b.start())
            await rec_a.wait(lambda: bool(rec_a.found_of(id_b)), "a to find b")
            await rec_b.wait(lambda: bool(rec_b.found_of(id_a)), "b to find a")
            assert rec_a.found_of(id_b) == [PeerAddress(id_b, "127.0.0.1", 41002)]
            assert rec_b.found_of(id_a) == [PeerAddress(id_a, "127.0.0.1", 41001)]
            assert not rec_a.found_of(id_a) and not rec_b.found_of(id_b), "found itself"
            assert a.instance_name.endswith("." + SERVICE_TYPE)
            assert id_a not in a.instance_name and id_b not in b.instance_name

            await b.stop()
            await rec_a.wait(lambda: id_b in rec_a.lost, "a to see b's goodbye")
            assert rec_a.lost.count(id_b) == 1
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_rejects_implicit_or_bogus_interfaces() -> None:
    def ignore(_: object) -> None:
        pass

    for bad in ([], ["0.0.0.0"], ["224.0.0.251"], ["::1"], ["eth0"], "127.0.0.1"):
        with pytest.raises((ValueError, TypeError)):
            Discovery(new_id(), 41000, bad, ignore, ignore)
    with pytest.raises(ValueError):
        Discovery("not-a-device-id", 41000, LOOPBACK, ignore, ignore)

    async def not_ours() -> None:
        d = Discovery(new_id(), 41000, ["10.213.255.254"], ignore, ignore)
        with pytest.raises(OSError):
            await d.start()
        await d.stop()

    asyncio.run(not_ours())


def test_lan_addresses_are_an_explicit_list() -> None:
    for addr in lan_ipv4_addresses():  # only reads the interface table
        assert not ipaddress.IPv4Address(addr).is_loopback


# -- 2. across processes, loopback ---------------------------------------------------------------


def test_finds_a_peer_process_and_loses_it_when_it_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        mine, theirs = new_id(), new_id()
        rec = Recorder()
        d = Discovery(mine, 41011, LOOPBACK, rec.on_found, rec.on_lost)
        try:
            await d.start()
            async with peer_process(tmp_path, "lo", [theirs, "41012", "127.0.0.1"]) as peer:
                await peer.wait_event(lambda e: e["event"] == "ready", "peer ready")
                await rec.wait(lambda: bool(rec.found_of(theirs)), "finding the peer process")
                assert rec.found_of(theirs) == [PeerAddress(theirs, "127.0.0.1", 41012)]
                # ... and it finds us.
                await peer.wait_event(is_found(mine, "127.0.0.1", 41011), "peer to find us")

                await peer.terminate()
                assert peer.events[-1] == {"event": "stopped"}, peer.describe()
                await rec.wait(lambda: theirs in rec.lost, "losing the stopped peer")
        finally:
            await d.stop()

    asyncio.run(scenario())


def test_a_killed_peer_is_lost_when_its_records_expire(tmp_path: Path) -> None:
    # No goodbye from a SIGKILLed process: the peer is lost once its records' TTL runs out
    # (3 s here, DEFAULT_TTL in real use), a check notices and a fresh query goes unanswered.
    async def scenario() -> None:
        mine, theirs = new_id(), new_id()
        rec = Recorder()
        d = Discovery(mine, 41013, LOOPBACK, rec.on_found, rec.on_lost, check_interval=0.5)
        try:
            await d.start()
            async with peer_process(tmp_path, "kill", [theirs, "41014", "127.0.0.1", "3"]) as p:
                await rec.wait(lambda: bool(rec.found_of(theirs)), "finding the peer process")
                # Alive past its TTL: refreshed by the checks, not lost.
                await p.wait_event(lambda e: e["event"] == "ready", "peer ready")
                # (A fixed wait is the only way to show that something does *not* happen.)
                await asyncio.sleep(4.0)
                assert theirs not in rec.lost
                p.proc.kill()
                await p.proc.wait()
                await rec.wait(lambda: theirs in rec.lost, "losing the killed peer", 15.0)
                assert rec.found_of(theirs) == [PeerAddress(theirs, "127.0.0.1", 41014)]
        finally:
            await d.stop()

    asyncio.run(scenario())


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_hostile_txt_records_are_ignored_and_logged() -> None:
    # The hostile registrar talks raw zeroconf, bound to loopback like everything here.
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    async def scenario() -> None:
        good, typo, wrong_version = new_id(), new_id(), new_id()
        typo = typo[:-1] + ("B" if typo.endswith("A") else "A")  # a wrong check character
        suffix = os.urandom(3).hex()
        bad_txts: dict[str, bytes | dict[bytes, bytes | None]] = {
            "noid": {b"v": b"1"},
            "emptyid": {b"id": None, b"v": b"1"},
            "binary": {b"id": b"\xff\xfe\x00garbage", b"v": b"1"},
            "notanid": {b"id": b"HELLO-WORLD", b"v": b"1"},
            "typo": {b"id": typo.encode(), b"v": b"1"},
            "version": {b"id": wrong_version.encode(), b"v": b"2"},
            "truncated": b"\xffid=ABC",  # a length byte pointing past the end of the record
            "huge": {b"id": b"A" * 250, b"v": b"1"},
        }
        capture = _Capture()
        logger = logging.getLogger("engine.discovery")
        logger.addHandler(capture)
        rec = Recorder()
        d = Discovery(new_id(), 41021, LOOPBACK, rec.on_found, rec.on_lost)
        hostile = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
        try:
            await d.start()
            infos = []
            for label, txt in [*bad_txts.items(), ("good", {b"id": good.encode(), b"v": b"1"})]:
                name = f"x-{label}-{suffix}.{SERVICE_TYPE}"
                info = AsyncServiceInfo(
                    SERVICE_TYPE,
                    name,
                    port=41022,
                    properties=txt,
                    server=f"x-{suffix}.local.",
                    parsed_addresses=["127.0.0.1"],
                )
                infos.append(info)
            announced = await asyncio.gather(*(hostile.async_register_service(i) for i in infos))
            await asyncio.gather(*announced)

            await rec.wait(lambda: bool(rec.found_of(good)), "the well-formed service")
            assert rec.found_of(good) == [PeerAddress(good, "127.0.0.1", 41022)]

            def all_complained() -> bool:
                return all(
                    any(f"x-{label}-{suffix}" in m for m in capture.messages) for label in bad_txts
                )

            deadline = time.monotonic() + TIMEOUT
            while not all_complained():
                assert time.monotonic() < deadline, f"not all logged: {capture.messages}"
                await asyncio.sleep(0.05)
            assert rec.found_of(good) == [PeerAddress(good, "127.0.0.1", 41022)]
            assert not rec.found_of(wrong_version)
        finally:
            logger.removeHandler(capture)
            await hostile.async_close()
            await d.stop()

    asyncio.run(scenario())


# -- 3. two network namespaces joined by a veth pair -------------------------------------------


@pytest.fixture
def namespaces() -> Iterator[VethPair]:
    try:
        with veth_pair() as pair:
            yield pair
    except NetnsUnavailable as e:
        pytest.skip(f"network namespace test needs root and iproute2: {e}")


def test_peers_in_two_network_namespaces_find_each_other(
    tmp_path: Path, namespaces: VethPair
) -> None:
    pair = namespaces

    async def scenario() -> None:
        id_a, id_b = new_id(), new_id()
        args_a = [id_a, "41031", pair.addr_a]
        args_b = [id_b, "41032", pair.addr_b]
        async with (
            peer_process(tmp_path, "a", args_a, pair.exec_prefix(pair.ns_a)) as a,
            peer_process(tmp_path, "b", args_b, pair.exec_prefix(pair.ns_b)) as b,
        ):
            await a.wait_event(is_found(id_b, pair.addr_b, 41032), "a to find b")
            await b.wait_event(is_found(id_a, pair.addr_a, 41031), "b to find a")
            assert not any(e.get("host", "").startswith("127.") for e in a.events + b.events)
            await a.terminate()
            await b.wait_event(lambda e: e == {"event": "lost", "id": id_a}, "b to lose a")
            await b.terminate()

    asyncio.run(scenario())
