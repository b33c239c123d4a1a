"""Tack devices for benchmarks: one folder, one ``TACK_HOME`` and one ``tack up`` process each.

Devices are made the way a user makes them — ``tack init`` on the first, ``tack share`` for a
link, ``tack join`` on the others — and run with ``--listen 127.0.0.1 --no-mdns`` plus
explicit ``--peer`` addresses, so nothing leaves loopback and no multicast is sent.  Each
daemon's stderr is drained by a thread into :attr:`TackDevice.lines` (a chatty daemon never
blocks on a full pipe) with the harness's monotonic time of each line, so "ready" can be
timed from the log without sleeping.

Invariant: whoever starts a daemon stops it (:meth:`TackDevice.stop`, SIGTERM then SIGKILL);
:class:`Fleet` stops every daemon it started, even when a scenario fails.
"""

from __future__ import annotations

import compileall
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

TACK = Path(sys.executable).parent / "tack"
READY = "Tack is watching"
LISTENING = re.compile(r"listening on (\S+):(\d+) for peers")
NET_ARGS = ("--listen", "127.0.0.1", "--no-mdns")
TROUBLE = re.compile(r"Traceback|internal error|nhandled exception|watcher overflowed")


def compile_code(*trees: Path) -> None:
    """Compile Tack's modules to bytecode, as ``pip install`` does, wherever the daemons
    will import them from (``trees``, ``PYTHONPATH``, this checkout).  With an editable
    install and ``PYTHONDONTWRITEBYTECODE`` set (as on the CI machines), every ``tack``
    process would otherwise compile them from source at start, about 0.1 s each."""
    roots = [*trees, *(Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    roots.append(Path(__file__).resolve().parent.parent)
    for root in roots:
        for package in ("engine", "fsbridge"):
            if (root / package).is_dir():
                compileall.compile_dir(root / package, quiet=1)


class BenchError(RuntimeError):
    """A scenario could not be carried out (a daemon died, a wait timed out)."""


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tack_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TACK_HOME=str(home), NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


def run_tack(home: Path, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(TACK), *args],
        env=tack_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"tack {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class TackDevice:
    """One device: ``space`` (its folder), ``home`` (its TACK_HOME), at most one daemon."""

    def __init__(self, name: str, space: Path, home: Path) -> None:
        self.name = name
        self.space = space
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[tuple[float, str]] = []
        self.spawned_at = 0.0
        self._reader: threading.Thread | None = None

    # -- the command line -------------------------------------------------------------------

    def init(self) -> None:
        run_tack(self.home, "init", str(self.space))

    def share(self) -> str:
        link = run_tack(self.home, "share", str(self.space)).strip()
        if not link.startswith("tack:"):
            raise BenchError(f"tack share printed {link!r}")
        return link

    def join(self, link: str) -> None:
        run_tack(self.home, "join", link, str(self.space))

    # -- the daemon -------------------------------------------------------------------------

    def up(
        self, *args: str, peers: Sequence[str] = (), wait: bool = True, timeout: float = 600
    ) -> TackDevice:
        if self.running:
            raise BenchError(f"{self.name} is already running")
        self.lines = []
        argv = [str(TACK), "up", str(self.space), *NET_ARGS, *args]
        for peer in peers:
            argv += ["--peer", peer]
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=tack_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def line_time(self, needle: str) -> float | None:
        for when, line in list(self.lines):
            if needle in line:
                return when
        return None

    def wait_line(self, needle: str, timeout: float) -> float:
        def seen() -> float | None:
            when = self.line_time(needle)
            if when is None and self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader catch the last lines
                raise BenchError(
                    f"tack up ({self.name}) exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            return when

        found = wait_for(seen, timeout, f"{needle!r} from {self.name}")
        assert isinstance(found, float)
        return found

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from spawning ``tack up`` to its "ready" log line."""
        return self.wait_line(READY, timeout) - self.spawned_at

    @property
    def port(self) -> int:
        for _, line in self.lines:
            match = LISTENING.search(line)
            if match:
                return int(match.group(2))
        raise BenchError(f"{self.name} has not said which port it listens on")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def troubles(self) -> list[str]:
        return [line for _, line in self.lines if TROUBLE.search(line)]

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.proc = None


class Fleet:
    """The Tack devices of one scenario, under one work folder; stops them all on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: list[TackDevice] = []

    def device(self, name: str) -> TackDevice:
        dev = TackDevice(name, (self.root / f"space-{name}").resolve(), self.root / f"home-{name}")
        self.devices.append(dev)
        return dev

    def founder(self, name: str) -> TackDevice:
        dev = self.device(name)
        dev.space.mkdir(parents=True, exist_ok=True)
        return dev

    def stop_all(self) -> None:
        for dev in self.devices:
            with contextlib.suppress(Exception):
                dev.stop()

    def troubles(self) -> list[str]:
        return [f"{d.name}: {t}" for d in self.devices for t in d.troubles()]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Syncthing runs as a monitor process and a child)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB, summed over the process and its descendants."""
    rss = hwm = 0
    for p in proc_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss, hwm


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (all threads)."""
    return sum(_cpu_ticks(f"/proc/{p}/stat") for p in proc_tree(pid)) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process's main thread alone (the daemon's event loop,
    where a join's work is done; its watcher is a child process)."""
    return _cpu_ticks(f"/proc/{pid}/task/{pid}/stat") / os.sysconf("SC_CLK_TCK")


def _cpu_ticks(stat: str) -> int:
    """User + system clock ticks from a ``/proc/.../stat`` file (0 if it is gone)."""
    with contextlib.suppress(OSError), open(stat, encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    return 0
