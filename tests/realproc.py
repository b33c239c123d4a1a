"""Helpers for real-process tests: the real ``tack`` CLI, real ``tack up`` daemons, real editors.

Everything here talks to Tack the way a user does — through the ``tack`` executable and the
folder — and never reaches into a running daemon.  Synchronisation is by *conditions*, never by
fixed sleeps: :func:`wait_until` polls a predicate until it holds.  The single exception is
:func:`wait_settled`, a quiescence check ("nothing has happened for a short while"), which is the
only way to show that something does *not* happen (Tack rewriting a file the user just saved).

Invariants: every :class:`Daemon` is stopped (SIGTERM, then SIGKILL) by whoever started it; each
process gets its own ``TACK_HOME``; a daemon's stderr is drained by a thread into
:attr:`Daemon.lines`, so a chatty daemon can never block on a full pipe, and the log is at hand
for failure messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class GiveUp(AssertionError):
    """Raised by a predicate to end a :func:`wait_until` at once (e.g. the daemon died)."""


TACK = Path(sys.executable).parent / "tack"
"""The installed console script (``python -m fsbridge.cli`` has no ``__main__`` entry)."""

READY = "Tack is watching"
STOPPED = "Tack stopped"
EXIT_RUNNING = 3

CANVAS = "board.canvas"
_JUNK = re.compile(r"(~|\.sw[a-p]|\.swpx)$|^4913$|^\.tack-tmp-|^\.#")
"""Editor/Tack leftovers that must never become cards (a subset of DESIGN §2's list)."""


# -- waiting ------------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    what: str = "a condition",
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    An exception raised by the predicate counts as "not yet" (a status read racing a write, a
    file mid-rename); the last one is shown if the wait times out.  ``context`` adds detail to
    the failure message (typically a daemon's log).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except GiveUp:
            raise
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}; last result: {last!r}"
            if context is not None:
                message += "\n" + context()
            raise AssertionError(message)
        time.sleep(interval)


def wait_settled(
    space: Path,
    home: Path,
    quiet: float = 0.5,
    timeout: float = 30.0,
    context: Callable[[], str] | None = None,
) -> None:
    """Quiescence check: wait until Tack has done nothing for ``quiet`` seconds.

    "Nothing" means: the number of ``tack log`` entries has not changed, and no file in the
    space (outside ``.tack/`` and ``.git/``) changed inode, mtime or size — so neither the
    documents nor the folder moved.  Call it only *after* waiting for the expected effect
    (e.g. status shows the edit); it is the one legitimate quiet period in these tests, needed
    to assert that something (a second write of a just-saved file) does not happen.  The
    quiet time is longer than the daemon's debounce and delete-grace delays.
    """

    def signature() -> tuple[int, dict[str, tuple[int, int, int]]]:
        return len(log_lines(space, home, limit=10**9)), folder_snapshot(space)

    deadline = time.monotonic() + timeout
    last = signature()
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() >= deadline:
            message = f"Tack did not settle within {timeout:.0f} s"
            if context is not None:
                message += "\n" + context()
            raise AssertionError(message)
        time.sleep(0.05)
        now = signature()
        if now != last:
            last, since = now, time.monotonic()


# -- the tack command line -----------------------------------------------------------------------


def tack_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TACK_HOME=str(home), NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


def run_tack(
    home: Path, *args: str, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(TACK), *args],
        env=tack_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tack {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def status(space: Path, home: Path) -> dict[str, Any]:
    out = run_tack(home, "status", str(space), "--json").stdout
    data: dict[str, Any] = json.loads(out)
    return data


def log_lines(space: Path, home: Path, path: str | None = None, limit: int = 200) -> list[str]:
    args = ["log", str(space), *([path] if path else []), "-n", str(limit)]
    return run_tack(home, *args).stdout.splitlines()


def cards(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All cards of a status report with a path (file and board cards), by path."""
    out: dict[str, dict[str, Any]] = {}
    for board in report["boards"]:
        for card in board["cards"]:
            if card["path"]:
                assert card["path"] not in out, f"two cards claim {card['path']}: {report}"
                out[card["path"]] = {**card, "board": board["path"]}
    return out


def card_id(space: Path, home: Path, path: str) -> str | None:
    card = cards(status(space, home)).get(path)
    return card["id"] if card else None


def card_texts(space: Path) -> dict[str, str]:
    """What Tack's documents hold for every text card, by path, read from the store.

    Opens ``.tack/store.sqlite`` read-only (as ``tack status`` does) and never writes; safe
    while the daemon runs.  This is the one peek behind the CLI: status shows no content.
    """
    from engine import Replica, Store

    store = Store.open(space / ".tack" / "store.sqlite", readonly=True)
    try:
        replica = Replica(store, device="test-reader")
        return {c.path: replica.text(c.id) for c in replica.cards().values() if c.kind == "text"}
    finally:
        store.close()


def texts_agree(space: Path, paths: Sequence[str] | None = None) -> bool:
    """Raise (for :func:`wait_until`) unless each text card's document equals its file."""
    texts = card_texts(space)
    wrong = []
    for path in paths if paths is not None else sorted(texts):
        disk = (space / path).read_bytes().decode("utf-8")
        if texts.get(path) != disk:
            wrong.append(f"{path}: document {texts.get(path)!r:.80} != file {disk!r:.80}")
    if wrong:
        raise AssertionError(f"{len(wrong)} card(s) differ from their files: {wrong[:5]}")
    return True


# -- the folder ----------------------------------------------------------------------------------


def is_junk(name: str) -> bool:
    return bool(_JUNK.search(name))


def user_tree(space: Path) -> tuple[set[str], set[str]]:
    """What should be cards: (card files, board folders), relative POSIX paths.

    Skips ``.tack/`` at the root, ``.git`` anywhere, ``board.canvas`` files and editor junk.
    """
    files: set[str] = set()
    dirs: set[str] = set()
    for top, subdirs, names in os.walk(space):
        rel_top = os.path.relpath(top, space)
        rel_top = "" if rel_top == "." else rel_top.replace(os.sep, "/")
        subdirs[:] = [d for d in subdirs if d != ".git" and not (rel_top == "" and d == ".tack")]
        for d in subdirs:
            dirs.add(f"{rel_top}/{d}" if rel_top else d)
        for name in names:
            if name == CANVAS or name == ".git" or is_junk(name):
                continue
            files.add(f"{rel_top}/{name}" if rel_top else name)
    return files, dirs


def folder_snapshot(space: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every file in the space outside ``.tack/`` and ``.git/``."""
    snap: dict[str, tuple[int, int, int]] = {}
    for top, subdirs, names in os.walk(space):
        subdirs[:] = [d for d in subdirs if d not in (".git", ".tack")]
        for name in names:
            full = os.path.join(top, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(full)
                snap[os.path.relpath(full, space)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return snap


def stamp(path: Path) -> tuple[int, int]:
    """A file's (inode, mtime_ns): changes if anyone rewrites or replaces it."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def disagreements(space: Path, home: Path) -> list[str]:
    """Where ``tack status`` and the folder (and the boards' canvases) disagree; [] if nowhere."""
    report = status(space, home)
    problems: list[str] = []
    try:
        by_path = cards(report)
    except AssertionError as exc:
        return [str(exc)]
    files, dirs = user_tree(space)
    file_cards = {p for p, c in by_path.items() if c["kind"] in ("text", "binary")}
    board_cards = {p for p, c in by_path.items() if c["kind"] == "board"}
    if files - file_cards:
        problems.append(f"files without a card: {sorted(files - file_cards)[:10]}")
    if file_cards - files:
        problems.append(f"cards without a file: {sorted(file_cards - files)[:10]}")
    if dirs - board_cards:
        problems.append(f"folders without a board card: {sorted(dirs - board_cards)[:10]}")
    if board_cards - dirs:
        problems.append(f"board cards without a folder: {sorted(board_cards - dirs)[:10]}")
    for path, card in by_path.items():
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if card["board"] != parent:
            problems.append(f"{path} listed on board {card['board']!r}, not {parent!r}")
    for board in sorted(dirs | {""}):
        canvas_file = space / board / CANVAS
        try:
            nodes = json.loads(canvas_file.read_text(encoding="utf-8"))["nodes"]
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{canvas_file.relative_to(space)} unreadable: {exc}")
            continue
        listed = {n["file"]: n["id"] for n in nodes if n.get("type") == "file"}
        wanted = {
            (f"{p}/{CANVAS}" if c["kind"] == "board" else p): c["id"]
            for p, c in by_path.items()
            if c["board"] == board
        }
        if listed != wanted:
            problems.append(
                f"{canvas_file.relative_to(space)} lists {sorted(listed.items())[:6]}, "
                f"status has {sorted(wanted.items())[:6]}"
            )
    if report["problems"]:
        problems.append(f"status reports problems: {report['problems']}")
    return problems


def agrees(space: Path, home: Path) -> bool:
    problems = disagreements(space, home)
    if problems:
        raise AssertionError("; ".join(problems))
    return True


# -- processes -----------------------------------------------------------------------------------


OFFLINE = ("--offline",)
"""``tack up`` options for single-device tests: no listening socket and no mDNS, so a test
daemon neither dials nor is dialled by the other Tack processes on this machine (and starts
without waiting for the network)."""


class Daemon:
    """One ``tack up SPACE [ARGS]`` process with its own ``TACK_HOME``."""

    def __init__(self, space: Path, home: Path, args: Sequence[str] = OFFLINE) -> None:
        self.space = space
        self.home = home
        self.args = tuple(args)
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self, wait_ready: bool = True, timeout: float = 30) -> Daemon:
        self.proc = subprocess.Popen(
            [str(TACK), "up", str(self.space), *self.args],
            env=tack_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for_line(READY, timeout)
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "tack up log:\n  " + "\n  ".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 20) -> str:
        def found() -> str | None:
            hit = next((line for line in self.lines if needle in line), None)
            if hit is None and self.proc is not None and self.proc.poll() is not None:
                raise GiveUp(f"tack up exited with {self.proc.returncode}\n{self.log()}")
            return hit

        return wait_until(found, timeout, f"{needle!r} in the tack up log", context=self.log)

    def stopped_cleanly(self) -> bool:
        """Exited with 0 after logging that it stopped (call after :meth:`stop`)."""
        assert self.proc is not None
        return self.proc.returncode == 0 and any(STOPPED in line for line in self.lines)

    def troubles(self) -> list[str]:
        """Log lines that show an internal error (a traceback or a logged exception)."""
        return [line for line in self.lines if "Traceback" in line or "internal error" in line]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` and wait; returns the exit code (SIGKILL if it will not stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode


@dataclass
class PtyProgram:
    """An interactive program on a pseudo-terminal, driven by keystrokes (for nano)."""

    pid: int
    fd: int
    output: bytearray

    @classmethod
    def spawn(cls, argv: Sequence[str], cwd: Path, rows: int = 24, cols: int = 80) -> PtyProgram:
        env = dict(os.environ, TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        pid, fd = pty.fork()
        if pid == 0:  # child
            try:
                os.chdir(cwd)
                os.execvpe(argv[0], list(argv), env)
            finally:
                os._exit(127)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        return cls(pid, fd, bytearray())

    def _pump(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.output += chunk
        return True

    def expect(self, needle: bytes, timeout: float = 10) -> None:
        """Wait until ``needle`` appears in the output after the current end (screen text)."""
        start = len(self.output)
        deadline = time.monotonic() + timeout
        while needle not in self.output[start:]:
            if time.monotonic() >= deadline or not self._pump(0.05):
                raise AssertionError(
                    f"{needle!r} never appeared; screen output: {bytes(self.output[-2000:])!r}"
                )

    def expect_any(self, needle: bytes, timeout: float = 10) -> None:
        """Like :meth:`expect`, but also accept output already received."""
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            if time.monotonic() >= deadline or not self._pump(0.05):
                raise AssertionError(
                    f"{needle!r} never appeared; screen output: {bytes(self.output[-2000:])!r}"
                )

    def send(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float = 10) -> int:
        """Drain output until the program exits; returns its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self._pump(0.05)
        self.kill()
        raise AssertionError(f"program did not exit; output: {bytes(self.output[-2000:])!r}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)
