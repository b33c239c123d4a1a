"""A TCP fault proxy for real-socket tests: pass, delay, stall and cut connections on demand.

:class:`FaultProxy` listens on ``127.0.0.1`` and relays every accepted connection to one target
``(host, port)``.  It knows nothing of TLS or of Tack's frames: it moves opaque byte chunks,
which is exactly what a flaky network does.  Its behaviour can be switched at any moment from
the test's thread:

* :meth:`~FaultProxy.passthrough` — forward every chunk at once (the default);
* :meth:`~FaultProxy.delay` — wait ``ms`` milliseconds before forwarding each chunk (order is
  kept: each direction of each connection is one sequential pump);
* :meth:`~FaultProxy.stall` — hold bytes: every pump keeps the chunk it has read and reads no
  more, so the kernel's socket buffers fill and TCP back-pressure holds the senders;
  :meth:`~FaultProxy.release` (or any other mode) lets the held bytes through, in order;
* :meth:`~FaultProxy.cut` — arm a one-shot cut: once ``after`` more bytes have been forwarded in
  the chosen direction, the connection carrying them is closed on both sides.  When ``after``
  falls inside a chunk, that chunk is forwarded only in part (:attr:`Counters.mid_chunk_cuts`),
  so a TLS record — and the frame inside it — is cut mid-way;
* :meth:`~FaultProxy.cut_now` — close every live connection at once;
* :meth:`~FaultProxy.block` / :meth:`~FaultProxy.unblock` — a partition: new connections are
  accepted and closed at once, without reaching the target.

Invariants: everything runs on one private asyncio loop in one daemon thread; the test's thread
only changes the mode (through the loop) and reads :meth:`~FaultProxy.counters` (a consistent
snapshot taken under a lock).  It is bounded: at most ``max_connections`` live connections
(further ones are refused), reads of at most ``chunk_size`` bytes, and at most one unforwarded
chunk per direction per connection.  :meth:`~FaultProxy.close` (also on ``with`` exit) closes
the listener and every connection, stops the loop and joins the thread; it is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Direction = Literal["up", "down"]
"""``up``: from the client that dialed the proxy to the target; ``down``: back again."""

MODES = ("pass", "delay", "stall")


@dataclass(frozen=True)
class CutRecord:
    """One cut: which direction, at which byte of that direction's stream, and how much of the
    chunk being forwarded got through (``0 < sent < chunk`` means a chunk was split)."""

    direction: str
    stream_offset: int
    sent: int
    chunk: int

    @property
    def mid_chunk(self) -> bool:
        return 0 < self.sent < self.chunk


@dataclass(frozen=True)
class Counters:
    """A snapshot of what the proxy has done so far."""

    accepted: int = 0  # connections relayed to the target
    active: int = 0  # live relayed connections now
    refused: int = 0  # accepted but closed at once (blocked, too many, target down)
    bytes_up: int = 0
    bytes_down: int = 0
    chunks_delayed: int = 0
    held: int = 0  # bytes read but not yet forwarded (stalled) right now
    cuts: int = 0
    mid_chunk_cuts: int = 0
    cut_log: tuple[CutRecord, ...] = field(default_factory=tuple)


@dataclass
class _Arm:
    remaining: int
    direction: Direction | None


class _Conn:
    def __init__(self, cid: int, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter):
        self.cid = cid
        self.writers = (client, upstream)
        self.offsets: dict[str, int] = {"up": 0, "down": 0}
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def close(self, hard: bool) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            with contextlib.suppress(Exception):
                if hard:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        # SO_LINGER 0: the close sends a RST instead of a FIN.
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                        )
                    writer.transport.abort()
                else:
                    writer.close()


class FaultProxy:
    """Relays ``127.0.0.1:<port>`` to ``target``, with switchable faults (see the module doc)."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        max_connections: int = 16,
        chunk_size: int = 64 * 1024,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.host = host
        self.max_connections = max_connections
        self.chunk_size = chunk_size
        self.connect_timeout = connect_timeout
        self.port = 0
        self._lock = threading.Lock()
        self._counters = Counters()
        self._mode = "pass"
        self._delay = 0.0
        self._hard_cut = False
        self._blocked = False
        self._arm: _Arm | None = None
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._started = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if self._started:
            return self
        self._started = True
        self._thread.start()
        self._run(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accepted, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Close the listener and every connection, stop the loop, join the thread."""
        if self._closed:
            return
        self._closed = True
        if self._started and self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(self._stop(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = []
        for conn in list(self._conns.values()):
            conn.close(hard=True)
            tasks += conn.tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- switching modes (from any thread) ----------------------------------------------------

    def passthrough(self) -> None:
        """Forward every chunk at once (also releases a stall)."""
        self._switch("pass")

    def delay(self, ms: float) -> None:
        """Hold each chunk ``ms`` milliseconds before forwarding it."""
        self._switch("delay", ms / 1000.0)

    def stall(self) -> None:
        """Forward nothing; every pump holds the chunk it has and reads no more."""
        self._switch("stall")

    def release(self) -> None:
        """End a stall: held bytes flow on, in order (same as :meth:`passthrough`)."""
        self._switch("pass")

    def cut(self, after: int = 0, direction: Direction | None = None, hard: bool = False) -> None:
        """Arm a one-shot cut after ``after`` more bytes in ``direction`` (``None``: either).

        The connection that carries those bytes is closed on both sides; the bytes up to the
        cut point are delivered first.  ``hard`` closes with a TCP reset instead of a FIN.
        """
        if after < 0:
            raise ValueError("after must be >= 0")

        def arm() -> None:
            self._arm = _Arm(after, direction)
            self._hard_cut = hard

        self._call(arm)

    def disarm(self) -> None:
        def clear() -> None:
            self._arm = None

        self._call(clear)

    @property
    def armed(self) -> bool:
        return self._arm is not None

    def cut_now(self, hard: bool = False) -> int:
        """Close every live connection now; returns how many were closed."""

        def cut_all() -> int:
            conns = [c for c in self._conns.values() if not c.closed]
            for conn in conns:
                self._record_cut(conn, "up", 0, 0)
                conn.close(hard)
            return len(conns)

        return self._call(cut_all)

    def block(self) -> None:
        """Refuse new connections (accept, then close at once)."""

        def on() -> None:
            self._blocked = True

        self._call(on)

    def unblock(self) -> None:
        def off() -> None:
            self._blocked = False

        self._call(off)

    @property
    def mode(self) -> str:
        return self._mode

    def counters(self) -> Counters:
        with self._lock:
            return replace(self._counters)

    # -- internals ----------------------------------------------------------------------------

    def _switch(self, mode: str, delay: float = 0.0) -> None:
        assert mode in MODES

        def apply() -> None:
            self._mode = mode
            self._delay = delay
            assert self._flowing is not None
            if mode == "stall":
                self._flowing.clear()
            else:
                self._flowing.set()

        self._call(apply)

    def _call(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self._run(wrapper())

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        if not self._started or (self._closed and not self._loop.is_running()):
            coro.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _count(self, **delta: int) -> None:
        with self._lock:
            values = {k: getattr(self._counters, k) + v for k, v in delta.items()}
            self._counters = replace(self._counters, **values)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._blocked or len(self._conns) >= self.max_connections:
            self._count(refused=1)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), self.connect_timeout
            )
        except (OSError, TimeoutError):
            self._count(refused=1)
            writer.close()
            return
        self._next_id += 1
        conn = _Conn(self._next_id, writer, up_writer)
        self._conns[conn.cid] = conn
        self._count(accepted=1, active=1)
        loop = asyncio.get_running_loop()
        conn.tasks = [
            loop.create_task(self._pump(conn, reader, up_writer, "up")),
            loop.create_task(self._pump(conn, up_reader, writer, "down")),
        ]
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            conn.close(hard=False)
            self._conns.pop(conn.cid, None)
            self._count(active=-1)

    async def _pump(
        self,
        conn: _Conn,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        assert self._flowing is not None
        try:
            while not conn.closed:
                data = await src.read(self.chunk_size)
                if not data:
                    break
                self._count(held=len(data))
                try:
                    await self._flowing.wait()
                    if self._mode == "delay" and self._delay > 0:
                        self._count(chunks_delayed=1)
                        await asyncio.sleep(self._delay)
                        await self._flowing.wait()  # a stall may have begun meanwhile
                finally:
                    self._count(held=-len(data))
                if conn.closed:
                    break
                arm = self._arm
                if arm is not None and arm.direction in (None, direction):
                    if arm.remaining < len(data):
                        sent = arm.remaining
                        self._arm = None
                        if sent:
                            dst.write(data[:sent])
                            self._forwarded(conn, direction, sent)
                            with contextlib.suppress(Exception):
                                await dst.drain()
                        self._record_cut(conn, direction, sent, len(data))
                        conn.close(self._hard_cut)
                        break
                    arm.remaining -= len(data)
                dst.write(data)
                self._forwarded(conn, direction, len(data))
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not conn.closed:
                # One side finished: pass the end of stream on, let the other pump run out.
                with contextlib.suppress(Exception):
                    if dst.can_write_eof():
                        dst.write_eof()

    def _forwarded(self, conn: _Conn, direction: Direction, n: int) -> None:
        conn.offsets[direction] += n
        if direction == "up":
            self._count(bytes_up=n)
        else:
            self._count(bytes_down=n)

    def _record_cut(self, conn: _Conn, direction: str, sent: int, chunk: int) -> None:
        record = CutRecord(direction, conn.offsets.get(direction, 0), sent, chunk)
        with self._lock:
            c = self._counters
            self._counters = replace(
                c,
                cuts=c.cuts + 1,
                mid_chunk_cuts=c.mid_chunk_cuts + (1 if record.mid_chunk else 0),
                cut_log=(*c.cut_log, record),
            )
