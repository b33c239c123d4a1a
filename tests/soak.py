"""Crash-and-soak driver: three real ``tack up`` processes, real editors, ``kill -9`` every few s.

Run it by hand for the long profile (the default test run has a short one,
``tests/test_soak.py``)::

    .venv/bin/python tests/soak.py --minutes 30
    .venv/bin/python tests/soak.py --seconds 120 --kills 30 --seed 7 --dir /tmp/soak --keep

(``python -m tests.soak`` works too where no installed distribution ships a top-level
``tests`` package; fast-diff-match-patch 2.1.0 does, and it shadows this folder.)  The root
folder keeps, besides the spaces and homes, every daemon's log (``logs/``), every save
(``saves.jsonl``), the kills (``kills.json``), each device's inotify stream
(``events-*.txt``) and ``soak-report.json``.

The scene (all on loopback, nothing leaves the machine):

* Device A makes a space with a few text cards (one in a nested board) and shares it; B and C
  join it, each with its own ``TACK_HOME``.  All three run ``tack up --no-mdns --listen
  127.0.0.1 --port P`` with ``--peer`` to the other two (a full mesh on fixed ports, so a
  restarted device is found again at the same address).
* *Workers* (threads, each with its own ``random.Random`` derived from the seed) pick a device
  and a card and insert one unique token (``tok-w<worker>n<number>``) as a new line between
  two lines, or as a word at the end of a token line, with a mix of real tools: a Python
  in-place write, a temp file + ``os.replace`` (sometimes under an ignored temp name,
  sometimes under a card-looking one), ``sed -i`` and real ``vim -es`` (default rename save,
  or ``backupcopy=yes`` in-place save).  They edit the file as it is on that device at that
  moment, so they race with Tack's own writes, and they keep editing a device's folder while
  its Tack is down (those edits must be taken in at restart).  One worker edits one file of
  one device at a time (two editors saving one file at once would clobber each other without
  any help from Tack).
* The *killer* sends SIGKILL to a random device every 2-4 s (faster if needed to reach the
  minimum number of kills in time) and restarts it at once or after a short random pause;
  sometimes the victim is still starting up.
* At the end: stop killing, restart whatever is down, stop the workers, and wait (polling)
  until all folders are identical and every device shows both peers connected and in sync.
  The wait has no fixed length: it gives up only when nothing has changed for
  ``converge_timeout`` seconds (or after twice that in all), so a loaded machine still
  syncing gets its time.  Then check the invariants (:meth:`Soak.check`), stop every daemon
  with SIGTERM, and check that they stopped cleanly and left the folders alone.

Invariants checked:

1. All folders are identical byte for byte (everything outside ``.tack/``), and hold exactly
   the shared cards and their boards' ``board.canvas`` (no conflict copy, no stray file).
2. Every token that was saved and not deleted is present exactly once, in the card it was
   saved into (no loss, no duplication, nothing invented, nothing moved to another card).
3. No card file or token was written outside the spaces (the homes, the test root).
4. No ``.tack-tmp-*`` file is left anywhere.
5. ``tack status`` agrees with each folder (cards, boards, canvases, no problems), each text
   card's document equals its file, no daemon logged an internal error, every daemon we did
   not kill exits 0 on SIGTERM.

What "not deleted" means.  The workers never delete, but a save made from a stale read is a
delete: ``sed -i`` or vim reads the file, Tack replaces it with a merge that brings a peer's
token, and the tool then renames its own (older + one token) version over it.  Tack cannot
tell that from a user deleting the peer's line, and must not resurrect it.  To tell a Tack
bug from such a save, every device's folder is watched with inotify from this process, and
each save is bracketed by two marker files (``.soak-<id>-a~`` / ``-b~``, created and removed
at once; ``*~`` is always ignored by Tack).  A save is *racy* if a Tack rename
(``.tack-tmp-*`` -> the card) lies between its markers in that one ordered event stream; the
tokens a racy rename-style save may have deleted (those of the card not in the content read
at its start, saved before it ended, and not yet read from that device's file by an earlier
save) may be missing at the end — never duplicated — if a store's log shows that save's
device deleting them then (once compaction folded the log, its history table must at least
show a deleting file ingest there: "unverified").  In-place
saves cannot clobber (they write through the descriptor they read from), vim refuses to save
over a file changed since it read it (the save is then *declined* and its token must not
appear), and a Python in-place save that lands in a file Tack had just replaced is
*uncertain* (Tack picks it up only if it was inside its own replace window).

Every failure message carries the seed (a harness error too: it is a failure, not a crash
of the run); the run's root folder (spaces, homes, logs) is kept when the run fails.  A lost
or doubled token is reported with its story: where the workers last read it from disk and
where they then found it gone, each store's updates that changed its count (or, once
compaction folded them into a snapshot, the history rows that deleted text and each
restart's first ingest of the card), and the daemons' crash-recovery log lines.  The
``events-*.txt`` files also keep every DELETE and CLOSE_WRITE, so a post-mortem can place an
editor's writes against Tack's renames.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # run as ``python -m tests.soak`` or ``python tests/soak.py``
    sys.path.insert(0, str(_HERE))

from realproc import (  # noqa: E402
    READY,
    TACK,
    Daemon,
    disagreements,
    folder_snapshot,
    run_tack,
    status,
    texts_agree,
)

LOOPBACK = "127.0.0.1"
TEMP_PREFIX = ".tack-tmp-"
CANVAS = "board.canvas"
DEVICES = ("A", "B", "C")
SUB = "sub"
INITIAL: dict[str, bytes] = {
    "alpha.md": b"# Alpha\n\nfirst plain line\n",
    "beta.md": "# Beta — ünïcödé 😀\n\nsecond line, ☃ snowman\n".encode(),
    "gamma.txt": b"gamma notes\n",
    f"{SUB}/delta.md": "# Delta in a nested board — 日本語\n".encode(),
}
CARDS = tuple(INITIAL)
CANVASES = (CANVAS, f"{SUB}/{CANVAS}")
TOKEN = re.compile(r"tok-w\d+n\d{6}")
WORDS = ("plain", "héllo wörld", "😀 emoji", "日本語", "tab\there", "a—b", "")
TOOLS = ("inplace", "replace", "sed", "vim")
TROUBLE = re.compile(r"Traceback|internal error|Unhandled exception|unhandled exception")
VIM = shutil.which("vim")
SED = shutil.which("sed")
TOOL_ENV = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
TOOL_ENV.pop("VIMINIT", None)
TOOL_ENV.pop("EXINIT", None)


# -- inotify (ctypes): one ordered event stream per device ---------------------------------------

IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("iIII")


class DirEvents:
    """Records CREATE, MOVED_FROM/MOVED_TO, DELETE and CLOSE_WRITE events of some folders, in
    the kernel's order.

    One inotify instance has one queue, so events of all watched folders are totally ordered:
    that is what lets a save's marker files bracket the renames Tack made meanwhile.  DELETE
    and CLOSE_WRITE only serve post-mortems (``events-*.txt``): a CLOSE_WRITE of a card after
    Tack's rename onto it, inside one save's markers, is an editor closing the file it opened
    before the rename (the kernel reports writes to an unlinked file under its old name).
    """

    def __init__(self, dirs: dict[str, Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.wds: dict[int, str] = {}
        for rel, path in dirs.items():
            wd = libc.inotify_add_watch(
                self.fd,
                os.fsencode(path),
                IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE,
            )
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch({path}) failed")
            self.wds[wd] = rel
        self.events: list[tuple[str, int, int, str]] = []  # (dir, mask, cookie, name)
        self.overflowed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inotify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, 1 << 18)
            except BlockingIOError:
                return
            offset = 0
            while offset < len(buf):
                wd, mask, cookie, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True
                    continue
                name = os.fsdecode(raw.rstrip(b"\0"))
                self.events.append((self.wds.get(wd, "?"), mask, cookie, name))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.fd)

    def tack_writes_between(self) -> Callable[[str, str, str, str], bool]:
        """A function (dir, name, marker_a, marker_b) -> did Tack rename a file onto ``name``
        between the two markers' creation?  Built once after recording stopped."""
        where: dict[tuple[str, str], int] = {}
        tack_moves: dict[tuple[str, str], list[int]] = {}
        moved_from: dict[int, str] = {}
        for index, (folder, mask, cookie, name) in enumerate(self.events):
            if mask & IN_CREATE and name.startswith(".soak-"):
                where[(folder, name)] = index
            elif mask & IN_MOVED_FROM:
                moved_from[cookie] = name
            elif mask & IN_MOVED_TO and moved_from.get(cookie, "").startswith(TEMP_PREFIX):
                tack_moves.setdefault((folder, name), []).append(index)

        def between(folder: str, name: str, marker_a: str, marker_b: str) -> bool:
            start = where.get((folder, marker_a))
            end = where.get((folder, marker_b))
            if start is None or end is None:
                return True  # cannot tell: count it as racy (the lenient side)
            return any(start < i < end for i in tack_moves.get((folder, name), []))

        return between


# -- devices -------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago on loopback."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Kill:
    at: float  # seconds since the run began (the same clock as saves' and the stores' times)
    device: str
    ready: bool  # whether the victim had finished starting
    down_for: float  # pause before the restart


@dataclass
class Device:
    name: str
    space: Path
    home: Path
    port: int = 0
    args: tuple[str, ...] = ()
    daemons: list[Daemon] = field(default_factory=list)
    device_id: str = ""
    events: DirEvents | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    exited_by_itself: list[str] = field(default_factory=list)

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    @property
    def up(self) -> bool:
        return bool(self.daemons) and self.daemon.running

    def start(self) -> Daemon:
        daemon = Daemon(self.space, self.home, self.args)
        self.daemons.append(daemon)
        return daemon.start(wait_ready=False)

    def check_alive(self) -> None:
        """Note it if the current daemon ended though nobody killed or stopped it."""
        if self.daemons and not self.daemon.running:
            message = (
                f"tack up #{len(self.daemons)} on {self.name} exited by itself "
                f"({self.daemon.proc.returncode if self.daemon.proc else '?'})\n"
                + self.log_tail(1, 40)
            )
            if message not in self.exited_by_itself:
                self.exited_by_itself.append(message)

    def kill(self) -> bool:
        """SIGKILL the running daemon; returns whether it had reported ready."""
        daemon = self.daemon
        ready = any(READY in line for line in daemon.lines)
        code = daemon.stop(signal.SIGKILL, timeout=30)
        if code != -signal.SIGKILL:
            self.exited_by_itself.append(
                f"tack up #{len(self.daemons)} on {self.name} had exited ({code}) before its "
                f"kill\n" + self.log_tail(1, 40)
            )
        return ready

    def log_tail(self, daemons: int = 2, lines: int = 25) -> str:
        out = []
        first = max(0, len(self.daemons) - daemons)
        for number, daemon in enumerate(self.daemons[first:], start=first + 1):
            out.append(f"  --- {self.name} tack up #{number} ---")
            out.extend(f"  {line}" for line in daemon.lines[-lines:])
        return "\n".join(out)


def tree(space: Path) -> dict[str, bytes]:
    """Every file of the space outside ``.tack/`` at its root, by relative POSIX path."""
    out: dict[str, bytes] = {}
    for top, subdirs, names in os.walk(space):
        rel_top = os.path.relpath(top, space)
        subdirs[:] = [d for d in subdirs if not (rel_top == "." and d == ".tack")]
        for name in names:
            full = Path(top) / name
            with contextlib.suppress(FileNotFoundError):
                out[full.relative_to(space).as_posix()] = full.read_bytes()
    return out


def tree_diff(trees: dict[str, dict[str, bytes]]) -> list[str]:
    names = list(trees)
    first = trees[names[0]]
    diffs = []
    for other in names[1:]:
        theirs = trees[other]
        for path in sorted(set(first) | set(theirs)):
            mine, their = first.get(path), theirs.get(path)
            if mine is None or their is None:
                diffs.append(f"{path} only on {other if mine is None else names[0]}")
            elif mine != their:
                diffs.append(f"{path} differs between {names[0]} and {other}")
    return diffs


# -- saves -----------------------------------------------------------------------------------------


class TokenSet:
    """Some of the run's tokens, as a bitmap over their numbers in ``index`` (shared by all
    sets of a run).  Every save keeps the tokens it read; a 30-minute run makes ~20,000 saves
    of cards holding thousands of tokens, which as frozensets of strings took gigabytes."""

    __slots__ = ("_bits", "_index")

    def __init__(self, index: dict[str, int], tokens: Iterable[str] = ()) -> None:
        numbers = [index[t] for t in tokens if t in index]
        bits = bytearray((max(numbers) >> 3) + 1 if numbers else 0)
        for n in numbers:
            bits[n >> 3] |= 1 << (n & 7)
        self._bits = bytes(bits)
        self._index = index

    def __contains__(self, token: object) -> bool:
        n = self._index.get(token) if isinstance(token, str) else None
        return (
            n is not None and n >> 3 < len(self._bits) and bool(self._bits[n >> 3] >> (n & 7) & 1)
        )


NO_TOKENS = TokenSet({})


@dataclass
class Save:
    id: int
    worker: int
    device: str
    card: str
    tool: str
    token: str
    started: float  # monotonic
    ended: float = 0.0
    wall: tuple[float, float] = (0.0, 0.0)  # time.time() at start and end (for the store log)
    outcome: str = "landed"  # landed | declined | uncertain
    before: TokenSet = NO_TOKENS  # tokens in the content read at the start
    while_down: bool = False
    racy: bool = False  # set after the run (see the module docstring)

    @property
    def marker_a(self) -> str:
        return f".soak-{self.id}-a~"

    @property
    def marker_b(self) -> str:
        return f".soak-{self.id}-b~"


def _mark(folder: Path, name: str) -> None:
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    os.unlink(folder / name)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _insert(data: bytes, text: bytes, rng: random.Random, word: bool) -> bytes:
    """``data`` with ``text`` added as a new line at a random line boundary, or (``word``) as
    a word at the end of a random token line.  Never removes or splits anything."""
    lines = data.splitlines(keepends=True)
    if word:
        token_lines = [i for i, line in enumerate(lines) if TOKEN.search(line.decode("utf-8"))]
        if token_lines:
            i = rng.choice(token_lines)
            body = lines[i].rstrip(b"\r\n")
            lines[i] = body + b" " + text + lines[i][len(body) :]
            return b"".join(lines)
    top = len(lines) if not lines or lines[-1].endswith(b"\n") else len(lines) - 1
    k = rng.randint(0, top)
    return b"".join([*lines[:k], text + b"\n", *lines[k:]])


class Workers:
    """Threads that save tokens into the cards of all devices with real tools."""

    def __init__(self, soak: Soak, count: int) -> None:
        self.soak = soak
        self.count = count
        self.saves: list[Save] = []
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._file_locks = {(d, c): threading.Lock() for d in DEVICES for c in CARDS}
        self._vanished: set[tuple[str, str]] = set()
        self.numbers: dict[str, int] = {}  # token -> its number in the TokenSets
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.tools = tuple(t for t in TOOLS if (t != "vim" or VIM) and (t != "sed" or SED))
        self.vim_ok = soak.root / "vim-ok"
        self.backups_removed = 0
        self.vim_ok.mkdir(exist_ok=True)

    def start(self) -> None:
        for number in range(1, self.count + 1):
            thread = threading.Thread(target=self._run, args=(number,), name=f"worker-{number}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, number: int) -> None:
        rng = random.Random(f"{self.soak.seed}/worker/{number}")
        count = itertools.count(1)
        try:
            while not self._stop.is_set():
                device = rng.choice(DEVICES)
                card = rng.choice(CARDS)
                tool = rng.choice(self.tools)
                token = f"tok-w{number}n{next(count):06d}"
                with self._id_lock:
                    save_id = next(self._ids)
                    self.numbers[token] = len(self.numbers)
                save = Save(save_id, number, device, card, tool, token, time.monotonic())
                with self._file_locks[(device, card)]:
                    save.while_down = not self.soak.device(device).up
                    wall = time.time()
                    try:
                        self._save(save, rng)
                    except FileNotFoundError as exc:
                        # The card's file is gone, and only Tack removes card files: a
                        # failure (the end check lists the file too).  Note it once and keep
                        # saving into the other cards, so the run still tests the rest.
                        if (device, card) not in self._vanished:
                            self._vanished.add((device, card))
                            self.errors.append(
                                f"worker {number}: {device}:{card} vanished "
                                f"(+{wall - self.soak.t0_wall:.2f}s): {exc!r}"
                            )
                        continue
                    save.ended = time.monotonic()
                    save.wall = (wall, time.time())
                self.saves.append(save)
                self._stop.wait(rng.uniform(*self.soak.pause))
        except BaseException as exc:  # a broken harness must fail the run, not hang it
            import traceback

            self.errors.append(f"worker {number}: {exc!r}\n{traceback.format_exc()}")

    def _tokens(self, data: bytes) -> TokenSet:
        return TokenSet(self.numbers, TOKEN.findall(data.decode("utf-8")))

    # one save, by one tool ----------------------------------------------------------------

    def _save(self, save: Save, rng: random.Random) -> None:
        space = self.soak.device(save.device).space
        path = space / save.card
        folder = path.parent
        word = rng.choice(WORDS)
        text = save.token + (f" {word}" if word and save.tool != "vim" else "")
        _mark(folder, save.marker_a)
        try:
            getattr(self, f"_with_{save.tool}")(save, path, text.encode(), rng)
        finally:
            _mark(folder, save.marker_b)

    def _with_inplace(self, save: Save, path: Path, text: bytes, rng: random.Random) -> None:
        """Read and write through one descriptor (like nano, or ``open(p, 'r+')``)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            data = _read_fd(fd)
            save.before = self._tokens(data)
            new = _insert(data, text, rng, word=rng.random() < 0.3)
            mine = os.fstat(fd)
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                save.outcome = "declined"  # replaced since we read it: the user reloads
                return
            os.pwrite(fd, new, 0)  # one write, never shorter: no truncation needed
            now = os.stat(path)
            if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                save.outcome = "uncertain"  # replaced between our check and our write
        finally:
            os.close(fd)

    def _with_replace(self, save: Save, path: Path, text: bytes, rng: random.Random) -> None:
        """Temp file + fsync + ``os.replace`` (most editors); the temp name is usually one
        Tack ignores, sometimes one that looks like a card."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = _read_fd(fd)
            mine = os.fstat(fd)
        finally:
            os.close(fd)
        save.before = self._tokens(data)
        new = _insert(data, text, rng, word=rng.random() < 0.3)
        if rng.random() < 0.25:
            temp = path.with_name(f"{path.stem}.soak{save.id}.tmp")
        else:
            temp = path.with_name(f".{path.name}.soak{save.id}~")
        with open(temp, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        now = os.stat(path)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            os.unlink(temp)
            save.outcome = "declined"
            return
        os.replace(temp, path)

    def _with_sed(self, save: Save, path: Path, text: bytes, rng: random.Random) -> None:
        """``sed -i`` (GNU: reads, writes ``./sedXXXXXX``, renames it over the file)."""
        assert SED is not None
        data = path.read_bytes()
        save.before = self._tokens(data)
        lines = len(data.splitlines())
        k = rng.randint(0, lines)
        script = f"1i {text.decode()}" if k == 0 else f"{k}a {text.decode()}"
        subprocess.run(
            [SED, "-i", script, path.name],
            cwd=path.parent,
            env=TOOL_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=60,
        )

    def _with_vim(self, save: Save, path: Path, text: bytes, rng: random.Random) -> None:
        """Real vim, non-interactive.  Default save (rename the old file away, write a new
        one) or ``backupcopy=yes`` (truncate and write in place).  vim refuses to write over
        a file that changed since it read it: then the save is declined."""
        assert VIM is not None
        data = path.read_bytes()
        save.before = self._tokens(data)
        k = rng.randint(0, len(data.splitlines()))
        ok = self.vim_ok / str(save.id)
        mode = rng.choice(["set backupcopy=auto", "set backupcopy=yes"])
        done = subprocess.run(
            [
                VIM,
                "-N",
                "-u",
                "NONE",
                "-i",
                "NONE",
                "-es",
                "-c",
                "set backupskip=",
                "-c",
                mode,
                "-c",
                f"call append({k}, '{text.decode()}')",
                "-c",
                "let v:errmsg = ''",
                "-c",
                "write",
                "-c",
                f"call writefile([v:errmsg], '{ok}')",
                "-c",
                "qall!",
                path.name,
            ],
            cwd=path.parent,
            env=TOOL_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        backup = path.with_name(path.name + "~")
        if backup.exists():  # vim keeps its backup when a write fails: the user deletes it
            backup.unlink()
            self.backups_removed += 1
        if not ok.exists():
            save.outcome = "declined"  # "file changed since reading it": vim did not write
            if done.returncode not in (0, 1):
                raise RuntimeError(f"vim failed ({done.returncode}): {done.stderr!r}")
            return
        error = ok.read_text().strip()
        ok.unlink()
        if "E949" in error:  # "File changed while writing": vim gave up before writing
            save.outcome = "declined"
        elif error:
            raise RuntimeError(f"vim could not save {path}: {error}")


# -- the soak ----------------------------------------------------------------------------------


@dataclass
class Result:
    seed: int
    seconds: float
    kills: list[Kill]
    saves: list[Save]
    failures: list[str]
    converged_in: float
    elapsed: float
    root: Path
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        by_tool = Counter(s.tool for s in self.saves)
        by_outcome = Counter(s.outcome for s in self.saves)
        racy = sum(1 for s in self.saves if s.racy)
        down = sum(1 for s in self.saves if s.while_down)
        early = sum(1 for k in self.kills if not k.ready)
        lines = [
            f"seed {self.seed} (replay: TACK_SOAK_SEED={self.seed} or --seed {self.seed}); "
            f"root {self.root}",
            f"soak {self.seconds:.0f} s, {len(self.kills)} kills ({early} before ready), "
            f"{len(self.saves)} saves {dict(by_tool)} {dict(by_outcome)}, {down} while the "
            f"device was down, {racy} racing a Tack write; converged in "
            f"{self.converged_in:.1f} s; {self.elapsed:.0f} s in all",
            *self.notes,
        ]
        if self.failures:
            lines.append(f"{len(self.failures)} FAILURE(S):")
            lines.extend(f"- {f}" for f in self.failures)
        return "\n".join(lines)


class Soak:
    def __init__(
        self,
        root: Path,
        seed: int,
        seconds: float,
        min_kills: int,
        workers: int = 3,
        kill_every: tuple[float, float] = (2.0, 4.0),
        max_down: float = 1.5,
        pause: tuple[float, float] = (0.05, 0.4),
        startup_kill_share: float = 0.15,
        startup_kill: tuple[float, float] = (0.05, 0.8),
        converge_timeout: float = 120.0,
        log: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.root = root.resolve()
        self.seed = seed
        self.seconds = seconds
        self.min_kills = min_kills
        self.worker_count = workers
        self.kill_every = kill_every
        self.max_down = max_down
        self.pause = pause
        self.startup_kill_share = startup_kill_share
        self.startup_kill = startup_kill
        self.converge_timeout = converge_timeout
        self.log = log
        self.devices: list[Device] = []
        self.kills: list[Kill] = []
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.rng = random.Random(f"{seed}/killer")
        self._homes_before: dict[str, bytes] = {}
        self.t0_wall = time.time()

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)

    def logs(self, daemons: int = 2, lines: int = 25) -> str:
        return "\n".join(d.log_tail(daemons, lines) for d in self.devices)

    # setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in DEVICES:
            home = self.root / f"home-{name}"
            home.mkdir()
            self.devices.append(Device(name, self.root / f"space-{name}", home))
        founder = self.devices[0]
        founder.space.mkdir()
        for rel, data in INITIAL.items():
            (founder.space / rel).parent.mkdir(parents=True, exist_ok=True)
            (founder.space / rel).write_bytes(data)
        run_tack(founder.home, "init", str(founder.space))
        link = run_tack(founder.home, "share", str(founder.space)).stdout.strip()
        for dev in self.devices[1:]:
            run_tack(dev.home, "join", link, str(dev.space))
        for dev, port in zip(self.devices, free_ports(len(self.devices)), strict=True):
            dev.port = port
        for dev in self.devices:
            peers = [
                a for d in self.devices if d is not dev for a in ("--peer", f"{LOOPBACK}:{d.port}")
            ]
            dev.args = ("--no-mdns", "--listen", LOOPBACK, "--port", str(dev.port), *peers)
        for dev in self.devices:
            dev.start()
        for dev in self.devices:
            dev.daemon.wait_for_line(READY, 60)
        self.log(f"three devices up after {time.time() - self.t0_wall:.1f} s")
        took = self.wait_converged(60, "the first sync")
        self.log(f"first sync took {took:.1f} s")
        for dev in self.devices:
            dev.device_id = status(dev.space, dev.home)["device"]
            dev.events = DirEvents({"": dev.space, SUB: dev.space / SUB})
        self._homes_before = self._outside_files()

    # convergence -------------------------------------------------------------------------------

    def sync_gaps(self) -> list[str]:
        """Why the devices are not yet converged ([] when they are)."""
        gaps: list[str] = []
        for dev in self.devices:
            dev.check_alive()
            if not dev.up:
                gaps.append(f"{dev.name} is not running")
        if gaps:
            return gaps
        trees = {d.name: tree(d.space) for d in self.devices}
        gaps.extend(tree_diff(trees)[:6])
        if gaps:
            return gaps
        ids = {d.name: status(d.space, d.home) for d in self.devices}
        for dev in self.devices:
            report = ids[dev.name]
            if not report["running"]:
                gaps.append(f"{dev.name}: status says not running")
                continue
            others = {ids[d.name]["device"] for d in self.devices if d is not dev}
            synced = {p["device"] for p in report["peers"] if p["connected"] and p["in_sync"]}
            if others - synced:
                peers = [(p["name"], p["connected"], p["in_sync"]) for p in report["peers"]]
                gaps.append(f"{dev.name} not in sync with all peers: {peers}")
        return gaps

    def wait_converged(self, timeout: float, what: str) -> float:
        """Poll until converged twice in a row with the same folders; returns seconds taken.

        The deadline follows progress, not the clock alone: the wait gives up once nothing
        (the gaps, the three folders' files) has changed for ``timeout`` seconds, or after
        twice ``timeout`` in all -- so a slow, loaded machine that is still syncing gets
        its time, and a stuck one fails as soon as it is plainly stuck.
        """
        began = time.monotonic()
        last_progress = began
        progress: object = None
        gaps: list[str] = ["never checked"]
        last_tree: dict[str, bytes] | None = None
        while True:
            now = time.monotonic()
            if now - last_progress >= timeout or now - began >= 2 * timeout:
                break
            for dev in self.devices:
                if dev.exited_by_itself:
                    raise AssertionError(
                        f"during {what}: " + "\n".join(dev.exited_by_itself) + self._context()
                    )
            try:
                gaps = self.sync_gaps()
            except Exception as exc:  # a status read racing a write: not yet
                gaps = [repr(exc)]
            signature = (tuple(gaps), [folder_snapshot(d.space) for d in self.devices])
            if signature != progress:
                progress, last_progress = signature, time.monotonic()
            if not gaps:
                now = tree(self.devices[0].space)
                if now == last_tree:
                    return time.monotonic() - began
                last_tree = now
                time.sleep(0.5)
                continue
            last_tree = None
            time.sleep(0.25)
        raise AssertionError(
            f"{what}: devices did not converge in {time.monotonic() - began:.0f} s (no "
            f"progress for {time.monotonic() - last_progress:.0f} s): {gaps}" + self._context()
        )

    def _context(self) -> str:
        return f"\nseed {self.seed}, root {self.root}\n" + self.logs()

    # the soak ------------------------------------------------------------------------------------

    def run(self) -> Result:
        began = time.monotonic()
        converged_in = 0.0
        saves: list[Save] = []
        try:
            self.setup()
            workers = Workers(self, self.worker_count)
            workers.start()
            try:
                self._kill_loop()
            finally:
                for dev in self.devices:
                    if not dev.up:
                        dev.start()
                workers.stop()
            saves = workers.saves
            self.failures.extend(workers.errors)
            if workers.backups_removed:
                self.notes.append(
                    f"{workers.backups_removed} vim backup files left by E949 removed"
                )
            self.log(
                f"{len(self.kills)} kills, {len(saves)} saves; waiting for the devices to agree"
            )
            converged_in = self.wait_converged(self.converge_timeout, "the end of the soak")
            self.check(saves)
        except AssertionError as exc:
            self.failures.append(
                str(exc) if f"seed {self.seed}," in str(exc) else str(exc) + self._context()
            )
        except Exception as exc:  # a broken harness or tool: still a failure with the seed
            import traceback

            self.failures.append(
                f"{exc!r} in the harness\n{traceback.format_exc()}" + self._context()
            )
        finally:
            self.shutdown()
            self._dump(saves)
        return Result(
            self.seed,
            self.seconds,
            self.kills,
            saves,
            self.failures,
            converged_in,
            time.monotonic() - began,
            self.root,
            self.notes,
        )

    def _kill_loop(self) -> None:
        began = time.monotonic()
        end = began + self.seconds
        again: Device | None = None  # the device just restarted, to be killed while starting
        while True:
            now = time.monotonic()
            owed = self.min_kills - len(self.kills)
            if now >= end and owed <= 0:
                return
            gap = self.rng.uniform(*(self.startup_kill if again else self.kill_every))
            # Keep pace: the minimum number of kills must fit in the time left.
            cap = max(0.3, (end - now) / owed - 0.5) if owed > 0 else end - now
            time.sleep(min(gap, cap))
            if time.monotonic() >= end and self.min_kills <= len(self.kills):
                return
            dev = again or self.rng.choice(self.devices)
            again = dev if self.rng.random() < self.startup_kill_share else None
            with dev.lock:
                dev.check_alive()
                if dev.exited_by_itself:
                    raise AssertionError("\n".join(dev.exited_by_itself) + self._context())
                ready = dev.kill()
                down = self.rng.choice([0.0, 0.0, self.rng.uniform(0.0, self.max_down)])
                self.kills.append(Kill(time.time() - self.t0_wall, dev.name, ready, down))
                time.sleep(down)
                dev.start()
            if len(self.kills) % 10 == 0:
                self.log(f"{len(self.kills)} kills after {time.monotonic() - began:.0f} s")

    def _dump(self, saves: list[Save]) -> None:
        """Keep every daemon's log and every save beside the spaces, for a post-mortem."""
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        for dev in self.devices:
            for number, daemon in enumerate(dev.daemons, start=1):
                (logs / f"{dev.name}-{number:03d}.log").write_text("\n".join(daemon.lines) + "\n")
        with open(self.root / "saves.jsonl", "w", encoding="utf-8") as out:
            for save in saves:
                row = {k: v for k, v in vars(save).items() if k != "before"}
                row["wall"] = [round(w - self.t0_wall, 3) for w in save.wall]
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        kinds = {
            IN_CREATE: "create",
            IN_MOVED_FROM: "from",
            IN_MOVED_TO: "to",
            IN_DELETE: "delete",
            IN_CLOSE_WRITE: "closed",
        }
        for dev in self.devices:
            if dev.events is None:
                continue
            with open(self.root / f"events-{dev.name}.txt", "w", encoding="utf-8") as out:
                for folder, mask, cookie, name in dev.events.events:
                    kind = next((v for k, v in kinds.items() if mask & k), hex(mask))
                    out.write(f"{folder or '.'} {kind} {cookie} {name}\n")
        kills = {"t0": self.t0_wall, "kills": [vars(k) for k in self.kills]}
        (self.root / "kills.json").write_text(json.dumps(kills, indent=1))

    def shutdown(self) -> None:
        """SIGTERM every daemon still running; they must stop cleanly (exit 0)."""
        for dev in self.devices:
            for daemon in dev.daemons:
                if daemon.running:
                    code = daemon.stop()
                    if code != 0:
                        self.failures.append(
                            f"tack up on {dev.name} exited {code} on SIGTERM\n"
                            + dev.log_tail(1, 40)
                        )
            if dev.events is not None:
                dev.events.close()

    # the invariants -------------------------------------------------------------------------------

    def check(self, saves: list[Save]) -> None:
        fail = self.failures.append
        trees = {d.name: tree(d.space) for d in self.devices}
        diffs = tree_diff(trees)
        if diffs:
            fail(f"folders differ: {diffs[:10]}")
        final = trees["A"]

        # 1. the folders hold the shared cards and their canvases, nothing else.
        extra = sorted(set(final) - set(CARDS) - set(CANVASES))
        missing = sorted((set(CARDS) | set(CANVASES)) - set(final))
        if extra or missing:
            fail(f"files not made by the workers: {extra}; files gone: {missing}")

        # 4. no Tack temporary file anywhere (not even inside .tack/).
        temps = [str(p) for p in self.root.rglob(f"{TEMP_PREFIX}*")]
        if temps:
            fail(f"Tack temporary files left behind: {temps[:10]}")

        # 3. nothing written outside the spaces.
        outside = self._outside_files()
        new_outside = sorted(
            rel
            for rel, data in outside.items()
            if (rel not in self._homes_before and _looks_like_card(rel))
            or TOKEN.search(data.decode("utf-8", "replace"))
        )
        if new_outside:
            fail(f"card files or tokens outside the spaces: {new_outside[:10]}")

        # 2. tokens: nothing lost, doubled, invented or moved to another card.
        self._check_tokens(saves, {c: final.get(c, b"") for c in CARDS})

        # 5. status, documents and logs.
        for dev in self.devices:
            try:
                problems = disagreements(dev.space, dev.home)
            except Exception as exc:
                problems = [repr(exc)]
            if problems:
                fail(f"{dev.name}: tack status and the folder disagree: {problems}")
            try:
                texts_agree(dev.space, [c for c in CARDS if (dev.space / c).exists()])
            except Exception as exc:  # AssertionError, or a store that cannot be read
                fail(f"{dev.name}: documents and files: {exc!r}")
            troubles = [line for d in dev.daemons for line in d.lines if TROUBLE.search(line)]
            if troubles:
                fail(f"{dev.name} logged internal errors: {troubles[:10]}")
            late = sum(
                1
                for d in dev.daemons
                for line in d.lines
                if "was saved while Tack replaced" in line
            )
            if late:
                self.notes.append(f"{dev.name}: {late} save(s) caught in Tack's replace window")

    def _check_tokens(self, saves: list[Save], final: dict[str, bytes]) -> None:
        fail = self.failures.append
        overflow = [d.name for d in self.devices if d.events and d.events.overflowed]
        if overflow:
            self.notes.append(f"inotify queue overflowed on {overflow}: every save counts racy")
        between = {d.name: d.events.tack_writes_between() for d in self.devices if d.events}
        for save in saves:
            folder = save.card.rsplit("/", 1)[0] if "/" in save.card else ""
            name = save.card.rsplit("/", 1)[-1]
            save.racy = (
                save.tool != "inplace"
                and save.outcome != "declined"
                and (
                    bool(overflow)
                    or between[save.device](folder, name, save.marker_a, save.marker_b)
                )
            )
        by_token = {s.token: s for s in saves}
        found = {
            card: Counter(TOKEN.findall(data.decode("utf-8", "replace")))
            for card, data in final.items()
        }
        strays, moved, resurrected, doubled = [], [], [], []
        for card, counts in found.items():
            for token, n in counts.items():
                save = by_token.get(token)
                if save is None:
                    strays.append(f"{token} in {card}")
                elif save.card != card:
                    moved.append(f"{token} (saved into {save.card}) in {card}")
                elif save.outcome == "declined":
                    resurrected.append(f"{token} in {card} ({save.tool}, declined)")
                if n > 1:
                    doubled.append(token)
        missing = [
            s for s in saves if s.outcome == "landed" and not found.get(s.card, Counter())[s.token]
        ]
        by_card: dict[str, list[Save]] = {}
        for s in saves:
            by_card.setdefault(s.card, []).append(s)
        suspects = {m.token: self._suspects(m, by_card[m.card]) for m in missing}
        # Replaying a card's log costs a count per followed token per update: follow only
        # the tokens that need their story (an excuse to check, or a failure to show).
        shown = [m.token for m in missing if not suspects[m.token]][:12] + doubled[:12]
        follow: dict[str, set[str]] = {}
        for token in [t for t, rs in suspects.items() if rs] + shown:
            follow.setdefault(by_token[token].card, set()).add(token)
        tracer = Tracer(self, follow)
        lost: list[str] = []
        excused, unverified = [], []
        for save in missing:
            verdict = self._excuse(save, suspects[save.token], tracer)
            if verdict is None:
                lost.append(
                    f"{self._describe(save)}; {self._reads(save, by_card[save.card])}; "
                    f"{tracer.story(save)}{self._log_hints(save)}"
                    if len(lost) < 12
                    else self._describe(save)
                )
            elif verdict.startswith("unverified"):
                unverified.append(f"{save.token}: {verdict}")
            else:
                excused.append(f"{save.token}: {verdict}")
        duplicated = [
            f"{self._describe(by_token[t])} ×{found[by_token[t].card][t]}; "
            f"{tracer.story(by_token[t])}"
            for t in doubled[:12]
        ]
        duplicated += [self._describe(by_token[t]) for t in doubled[12:]]
        for what, items in (
            ("tokens lost", lost),
            ("tokens duplicated", duplicated),
            ("tokens nobody saved", strays),
            ("tokens in the wrong card", moved),
            ("tokens of declined saves present", resurrected),
        ):
            if items:
                fail(f"{what} ({len(items)}):\n    " + "\n    ".join(items[:12]))
        uncertain = [s for s in saves if s.outcome == "uncertain"]
        self.notes.append(
            f"{sum(1 for s in saves if s.racy)} racy saves; {len(excused)} tokens deleted by a "
            f"stale save (as a user's editor would), {len(unverified)} more that the store's "
            f"log could no longer show; {len(uncertain)} uncertain saves, "
            f"{sum(1 for s in uncertain if found[s.card][s.token])} of them kept"
        )
        self.notes.extend(f"  deleted by a stale save: {e}" for e in excused[:20])
        self.notes.extend(f"  {u}" for u in unverified[:20])

    def _suspects(self, save: Save, saves: list[Save]) -> list[Save]:
        """The saves that may have deleted ``save``'s token as a user's editor would
        (``saves``: those of its card), for :meth:`_excuse`.

        Only a racy rename-style save ``r`` of the same card can delete it (module docstring):
        one that did not read the token, that ended after the token was saved, and on whose
        device the token had not been on disk before ``r`` began (a stale save deletes only
        what Tack wrote into the file while it was editing; a token another save had already
        read there and ``r`` then did not was gone before ``r``).
        """
        seen_on: dict[str, float] = {}  # device -> when a save first finished reading it there
        for s in saves:
            if save.token in s.before:
                seen_on[s.device] = min(seen_on.get(s.device, s.ended), s.ended)
        return [
            r
            for r in saves
            if r.racy
            and r is not save
            and save.token not in r.before
            and save.started < r.ended
            and seen_on.get(r.device, r.started + 1.0) > r.started
        ]

    def _excuse(self, save: Save, candidates: list[Save], tracer: Tracer) -> str | None:
        """Why ``save``'s token may legitimately be gone, or None if it may not.

        ``candidates`` are its :meth:`_suspects`.  A store's log must show the token's last
        copy going away by an update of a suspect's device around that save (a file ingest
        there, a peer update elsewhere).  If every store folded that part of its log into a
        snapshot, the suspect's device's history table (which outlives compaction, without
        the content) must at least show a file ingest there that deleted text around that
        save: the excuse is then "unverified"; without one the token counts as lost.
        """
        if not candidates:
            return None
        traced = False
        for r in candidates:
            for dev in self.devices:
                changes = tracer.changes(dev.name, save.card, save.token)
                if changes is None:
                    continue
                traced = True
                # On r's device the deletion is r's file ingest; elsewhere it arrives from r's
                # device (the mesh is direct).
                origin = "file" if dev.name == r.device else "peer"
                for change in changes:
                    if (
                        change.after == 0
                        and change.before > 0
                        and change.origin == origin
                        and change.author == r.device
                        and r.wall[0] - 1.0 <= change.time <= r.wall[1] + 15.0
                    ):
                        return f"{r.tool} save #{r.id} on {r.device} at {self._at(r.wall[0])}"
        if traced:
            return None
        for r in candidates:
            rows = tracer.history(r.device, save.card, r.wall[0] - 1.0, r.wall[1] + 15.0)
            if any(
                f" file by {r.device} " in row and re.search("\u2212[1-9]", row) for row in rows
            ):
                return (
                    f"unverified: {r.tool} save #{r.id} on {r.device} at {self._at(r.wall[0])} "
                    f"(the log was compacted; its history shows a deleting ingest then)"
                )
        return None

    def _at(self, wall: float) -> str:
        return f"+{wall - self.t0_wall:.2f}s"

    def _reads(self, save: Save, saves: list[Save]) -> str:
        """Where the workers last read ``save``'s token from disk, and where they then read
        the card without it (per device): brackets when and where the token went away."""
        seen_last: dict[str, Save] = {}
        for r in saves:
            if r.card == save.card and r.started > save.started and save.token in r.before:
                seen_last[r.device] = r
        parts = []
        for dev in DEVICES:
            last = seen_last.get(dev)
            after = last.wall[0] if last else save.wall[1]
            gone = next(
                (
                    r
                    for r in saves
                    if r.device == dev
                    and r.card == save.card
                    and r.wall[0] > after
                    and save.token not in r.before
                    and r.outcome != "declined"
                ),
                None,
            )
            text = f"{dev}: read by #{last.id} {self._at(last.wall[0])}" if last else f"{dev}: -"
            if gone is not None:
                text += f", absent for #{gone.id} {self._at(gone.wall[0])}"
            parts.append(text)
        return "on disk: " + ", ".join(parts)

    _HINTS = re.compile(r"before it stopped|adopted|while edited here|saved while Tack|ignored an")

    def _log_hints(self, save: Save) -> str:
        """Daemon log lines about ``save``'s card from the 20 s after it that tell of crash
        recovery or racing saves (times are whole seconds, so +-1 s)."""
        t0 = time.localtime(self.t0_wall)
        day0 = t0.tm_hour * 3600 + t0.tm_min * 60 + t0.tm_sec + (self.t0_wall % 1)
        hints = []
        for dev in self.devices:
            for number, daemon in enumerate(dev.daemons, start=1):
                for line in daemon.lines:
                    if save.card not in line or not self._HINTS.search(line):
                        continue
                    try:
                        h, m, sec = (int(x) for x in line[:8].split(":"))
                    except ValueError:
                        continue
                    at = (h * 3600 + m * 60 + sec - day0) % 86400
                    if save.wall[0] - self.t0_wall - 1.5 <= at <= save.wall[1] - self.t0_wall + 20:
                        hints.append(f"{dev.name} #{number} ~+{at:.0f}s: {line[9:]}")
        return f"; logs: {' | '.join(hints[:6])}" if hints else ""

    def _describe(self, save: Save) -> str:
        return (
            f"{save.token} (#{save.id} {save.tool} on {save.device} into {save.card} at "
            f"{self._at(save.wall[0])}..{self._at(save.wall[1])}, {save.outcome}"
            f"{', racy' if save.racy else ''}{', device down' if save.while_down else ''})"
        )

    def _outside_files(self) -> dict[str, bytes]:
        """Every file under the root but outside the three spaces, by relative path."""
        spaces = {d.space.resolve() for d in self.devices}
        out: dict[str, bytes] = {}
        for top, subdirs, names in os.walk(self.root):
            subdirs[:] = [s for s in subdirs if (Path(top) / s).resolve() not in spaces]
            for name in names:
                full = Path(top) / name
                with contextlib.suppress(OSError):
                    out[full.relative_to(self.root).as_posix()] = full.read_bytes()
        return out


def _looks_like_card(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name in {c.rsplit("/", 1)[-1] for c in CARDS} or name.startswith((".soak-", "sed"))


# -- what the stores remember ---------------------------------------------------------------------


@dataclass(frozen=True)
class TokenChange:
    """One update in a device's store that changed how many copies of a token a card holds."""

    seq: int
    origin: str  # file, peer, api, ...
    author: str  # the device that sent or made it (A/B/C), as that store records it
    time: float  # wall clock
    summary: str
    before: int
    after: int


class Tracer:
    """Replays cards' document logs from the devices' stores (read-only) to tell, for a token,
    which update added or removed copies of it, where and when.

    Like ``realproc.card_texts`` this peeks behind the CLI, at ``.tack/store.sqlite``: it is
    the only record of *which* save took a token away.  Updates folded into a snapshot are
    gone; a token whose whole story is inside the snapshot has no trace (``None``).
    """

    def __init__(self, soak: Soak, tokens: dict[str, set[str]]) -> None:
        self.soak = soak
        self.tokens = tokens  # card -> the tokens to follow
        self._cache: dict[tuple[str, str], dict[str, list[TokenChange] | None] | None] = {}
        self._ids: dict[str, str] = {}
        self._names = {d.device_id: d.name for d in soak.devices}

    def changes(self, device: str, card: str, token: str) -> list[TokenChange] | None:
        key = (device, card)
        if key not in self._cache:
            self._cache[key] = self._replay(device, card)
        traced = self._cache[key]
        return None if traced is None else traced.get(token)

    def story(self, save: Save) -> str:
        parts = []
        for dev in self.soak.devices:
            changes = self.changes(dev.name, save.card, save.token)
            if not changes:
                # The snapshot swallowed the story: say what the history table still shows.
                cuts = self._cuts(dev.name, save) if changes is None else ""
                restarts = self._restart_ingests(dev.name, save)
                what = "no trace" if changes is None else "no change since its snapshot"
                parts.append(
                    f"{dev.name}: {what}"
                    + (f" (deleting: {cuts})" if cuts else "")
                    + (f" (ingested at a restart: {restarts})" if restarts else "")
                )
                continue
            steps = [
                f"seq {c.seq} {c.origin} by {c.author} {self.soak._at(c.time)} "
                f"{c.before}->{c.after} ({c.summary})"
                for c in changes
            ]
            parts.append(f"{dev.name}: " + ", ".join(steps))
            times = [c.time - self.soak.t0_wall for c in changes]
            kills = [
                f"{k.device} killed +{k.at:.2f}s"
                for k in self.soak.kills
                if any(-1.0 < t - k.at < 6.0 for t in times)
            ]
            if kills:
                parts[-1] += f" (near: {', '.join(kills)})"
        return "store logs: " + " | ".join(parts)

    def history(self, device: str, card: str, since: float, until: float) -> list[str]:
        """The history rows of ``card`` in a device's store between two wall times, as
        ``seq N origin by X +t (summary)``; the history table outlives compaction."""
        import sqlite3

        space = self.soak.device(device).space
        conn = sqlite3.connect(f"file:{space / '.tack' / 'store.sqlite'}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT seq, origin, device, time, summary FROM history WHERE path = ? "
                "AND time BETWEEN ? AND ? ORDER BY seq",
                (card, since, until),
            ).fetchall()
        except sqlite3.Error:
            return []
        finally:
            conn.close()
        return [
            f"seq {seq} {origin} by {self._names.get(str(author), str(author)[:7])} "
            f"{self.soak._at(float(when))} ({summary})"
            for seq, origin, author, when, summary in rows
        ]

    def _cuts(self, device: str, save: Save) -> str:
        """The updates of ``save``'s card in the 20 s after it that deleted text."""
        rows = self.history(device, save.card, save.wall[0], save.wall[1] + 20.0)
        return ", ".join([r for r in rows if re.search(r"\u2212[1-9]", r)][:4])

    def _restart_ingests(self, device: str, save: Save) -> str:
        """The first file ingest of ``save``'s card within 3 s of each restart of ``device``
        in the 20 s after the save: where crash recovery merged what changed meanwhile."""
        out: list[str] = []
        for kill in self.soak.kills:
            back = self.soak.t0_wall + kill.at + kill.down_for
            if kill.device != device or not save.wall[0] <= back <= save.wall[1] + 20.0:
                continue
            rows = [r for r in self.history(device, save.card, back, back + 3.0) if " file " in r]
            if rows and not any(o.startswith(rows[0]) for o in out):
                out.append(f"{rows[0]} after the kill at +{kill.at:.2f}s")
        return ", ".join(out[:3])

    def _doc_id(self, card: str) -> str | None:
        if not self._ids:
            dev = self.soak.devices[0]
            for board in status(dev.space, dev.home)["boards"]:
                for entry in board["cards"]:
                    if entry["path"]:
                        self._ids[entry["path"]] = entry["id"]
        return self._ids.get(card)

    def _replay(self, device: str, card: str) -> dict[str, list[TokenChange] | None] | None:
        """Each followed token's changes; a token's entry is None if the changes that matter
        may have been folded into the snapshot (none seen after it, and none in it)."""
        import sqlite3

        from pycrdt import Doc, Text

        from engine.spacedoc import TEXT_KEY

        doc_id = self._doc_id(card)
        if doc_id is None:
            return None
        space = self.soak.device(device).space
        conn = sqlite3.connect(f"file:{space / '.tack' / 'store.sqlite'}?mode=ro", uri=True)
        try:
            doc: Doc[Any] = Doc()
            text = doc.get(TEXT_KEY, type=Text)
            snap = conn.execute(
                "SELECT data, upto_seq FROM snapshots WHERE doc_id = ?", (doc_id,)
            ).fetchone()
            start = 0
            if snap is not None:
                doc.apply_update(bytes(snap[0]))
                start = int(snap[1])
            history = {
                int(r[0]): (str(r[1]), str(r[2]), float(r[3]), str(r[4]))
                for r in conn.execute(
                    "SELECT seq, origin, device, time, summary FROM history WHERE doc_id = ?",
                    (doc_id,),
                )
            }
            tokens = sorted(self.tokens.get(card, ()))
            current = str(text)
            counts = {t: current.count(t) for t in tokens}
            at_snapshot = dict(counts)
            out: dict[str, list[TokenChange] | None] = {}
            rows = conn.execute(
                "SELECT seq, data FROM updates WHERE doc_id = ? AND seq > ? ORDER BY seq",
                (doc_id, start),
            )
            for seq, data in rows:
                doc.apply_update(bytes(data))
                current = str(text)
                now = {t: current.count(t) for t in tokens}
                for token in tokens:
                    if now[token] != counts[token]:
                        origin, author, when, summary = history.get(int(seq), ("?", "?", 0.0, "?"))
                        out.setdefault(token, []).append(
                            TokenChange(
                                int(seq),
                                origin,
                                self._names.get(author, author[:7]),
                                when,
                                summary,
                                counts[token],
                                now[token],
                            )
                        )
                counts = now
            for token in tokens:
                if token not in out:
                    out[token] = [] if snap is None or at_snapshot[token] else None
            return out
        finally:
            conn.close()


# -- command line ---------------------------------------------------------------------------------


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--minutes", type=float, help="how long to soak (default 30)")
    span.add_argument("--seconds", type=float, help="how long to soak, in seconds")
    parser.add_argument("--kills", type=int, default=30, help="at least this many kills")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="root folder (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the root folder on success")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    if not TACK.exists():
        print(f"no tack command at {TACK}: run this with the project's .venv/bin/python")
        return 2
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes or 30)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    root = args.dir or Path(tempfile.mkdtemp(prefix="tack-soak-"))
    print(
        f"soak: {seconds:.0f} s, at least {args.kills} kills, seed {seed}, root {root}", flush=True
    )
    soak = Soak(
        root,
        seed,
        seconds,
        args.kills,
        workers=args.workers,
        converge_timeout=max(120.0, seconds / 5),
        log=lambda s: print(f"soak: {s}", flush=True),
    )
    result = soak.run()
    print(result.summary())
    (root / "soak-report.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "kills": len(result.kills),
                "saves": len(result.saves),
                "failures": result.failures,
                "notes": result.notes,
            },
            indent=2,
        )
    )
    if result.failures:
        print(f"FAILED; everything is kept in {root}")
        return 1
    if not args.keep and args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
