"""Crash safety of a real ``tack up``: ``kill -9`` at random moments during a burst of saves.

The issue's requirement: kill Tack at random moments while a user saves (at least 50 kills
in CI); after the restart the store opens, the files are intact, and every save that reached
disk is in the history.

How the test makes that checkable:

* A *writer* thread saves a few cards in a burst, with mixed save styles (in-place rewrite in
  two chunks, so torn content is visible; append; temp file + ``os.replace``, with both an
  ignored and a card-looking temp name) and creates new files along the way.  Every save adds
  one unique token line and removes nothing, so the writer always knows exactly what each file
  must hold, and every token ever saved must end up in the card's document exactly once.
* A *killer* (the test body) starts ``tack up``, kills it with SIGKILL at a random moment
  (mostly after it reported ready, sometimes during start-up), restarts it, ``TACK_CRASH_KILLS``
  times (default 50).  The moments come from ``random.Random(seed)``; the seed is in every
  failure message and can be replayed with ``TACK_CRASH_SEED``.
* After the last restart the test waits (polling with a deadline, never a blind sleep) until
  the store and the folder agree and the folder stays still, stops Tack with SIGTERM, and
  checks the store, the files, the documents, the card identities and the history.

Random kills rarely land in a window a few instructions wide, so the worst windows found by
reading the code also get a deterministic in-process test: the process "dies" (a
``BaseException`` that nothing catches) at exactly that point, and a fresh replica and bridge
on the same SQLite file play the restart.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Text
from reactivex.testing import TestScheduler

import fsbridge.bridge as bridge_module
from engine import MemoryBlobs, Origin, Replica, Store
from engine.spacedoc import TEXT_KEY
from engine.text_edits import Splice, apply_splices
from fsbridge.atomic import TEMP_PREFIX
from fsbridge.bridge import BridgeTiming, FolderBridge
from fsbridge.canvas import parse_canvas

KILLS = int(os.environ.get("TACK_CRASH_KILLS", "50"))
SEED = int(os.environ.get("TACK_CRASH_SEED", "20240607"))
READY = "Tack is watching"
MAX_RUN_AFTER_READY = 0.3  # seconds a daemon may live after "ready" before its kill
STARTUP_KILL_SHARE = 0.2  # share of kills aimed at start-up (before "ready")
SETTLE_DEADLINE = 60.0
STILL_FOR = 1.0  # the folder and store must agree, unchanged, this long to count as settled

INITIAL: dict[str, bytes] = {
    "a.md": b"# Alpha\n\n",
    "b.md": "# Beta — ünïcödé\n".encode(),
    "notes.txt": b"notes with CRLF line endings\r\n",
    "sub/c.md": b"# Gamma in a nested board\n",
}
WORDS = ("plain", "héllo wörld", "😀 emoji", "日本語のテキスト", "tab\there", "a—b")
# Log lines that mean Tack hit an internal error, whatever the outcome on disk.
ALARMS = ("Traceback", "internal error", "does not match its state")


def _tack_bin() -> str:
    exe = Path(sys.executable).with_name("tack")
    if exe.exists():
        return str(exe)
    found = shutil.which("tack")
    assert found, "the tack command is not installed next to this Python"
    return found


TACK = _tack_bin()


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TACK_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([TACK, *args], env=_env(home), capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, f"tack {' '.join(args)} failed: {done.stdout}{done.stderr}"
    return done


# -- one tack up process ----------------------------------------------------------------------


class Daemon:
    """A ``tack up`` child process whose stderr is read line by line on a thread.

    It runs ``--offline``: this test is about the folder and the store of one device, and
    networking would only add mDNS probing to every start and let devices of other tests on
    the same machine connect to it.
    """

    def __init__(self, space: Path, home: Path, number: int) -> None:
        self.number = number
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.proc = subprocess.Popen(
            [TACK, "up", "--offline", str(space)],
            env=_env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if READY in line:
                self.ready.set()
        self.ended.set()

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the daemon logs that it is ready; returns how long it took."""
        deadline = time.monotonic() + timeout
        while not self.ready.is_set():
            if self.ended.is_set() or self.proc.poll() is not None:
                self.ended.wait(5)
                raise AssertionError(
                    f"tack up #{self.number} exited ({self.proc.poll()}) before it was ready:\n"
                    + self.log()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"tack up #{self.number} not ready in {timeout}s:\n" + self.log()
                )
            self.ready.wait(0.01)
        return time.monotonic() - self.started

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.ended.wait(10)

    def stop(self) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager would; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.ended.wait(10)
        return code

    def log(self, last: int = 40) -> str:
        return "\n".join(f"  [{self.number}] {line}" for line in self.lines[-last:])


# -- the writer -------------------------------------------------------------------------------


@dataclass
class Writer:
    """Saves files in a burst; knows what every file must hold and which tokens it got."""

    root: Path
    seed: int
    expected: dict[str, bytes] = field(default_factory=dict)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    styles: Counter[str] = field(default_factory=Counter)
    error: BaseException | None = None
    _next: int = 0
    _new_files: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def seed_files(self) -> None:
        for rel, data in INITIAL.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self.expected[rel] = data
            self.tokens[rel] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the writer failed (seed {self.seed})") from self.error

    def _run(self) -> None:
        rng = random.Random(self.seed ^ 0x5EED)
        try:
            while not self._stop.is_set():
                self.save(rng)
                time.sleep(rng.uniform(0.001, 0.008))
        except BaseException as exc:
            self.error = exc

    def _line(self, rel: str, token: str, rng: random.Random) -> bytes:
        eol = "\r\n" if rel.endswith(".txt") else "\n"
        return f"{token} {rng.choice(WORDS)}{eol}".encode()

    def save(self, rng: random.Random) -> None:
        token = f"tok-{self._next:06d}"
        self._next += 1
        if self._new_files < 10 and rng.random() < 0.02:
            self._new_files += 1
            rel = f"{rng.choice(['', 'sub/'])}new-{self._new_files:02d}.md"
            self.tokens[rel] = []
            old = b""
        else:
            rel = rng.choice(sorted(self.expected))
            old = self.expected[rel]
        new = old + self._line(rel, token, rng)
        path = self.root / rel
        style = rng.choice(["in-place", "append", "replace", "replace-ignored-temp"])
        if not old:
            style = rng.choice(["in-place", "replace"])
        if style == "in-place":
            # Truncate and write in two chunks: Tack may read an empty or half-written file.
            with open(path, "wb") as f:
                f.write(new[: len(new) // 2])
                f.flush()
                f.write(new[len(new) // 2 :])
        elif style == "append":
            with open(path, "ab") as f:
                f.write(new[len(old) :])
        else:
            # Temp file + rename, as many editors save.  One temp name looks like a card to
            # Tack (it may see it at start-up), the other is on the always-ignored list.
            if style == "replace":
                temp = path.with_name(f".{path.name}.{token}.tmp")
            else:
                temp = path.with_name(f".goutputstream-{token}")
            temp.write_bytes(new)
            os.replace(temp, path)
        self.expected[rel] = new
        self.tokens[rel].append(token)
        self.styles[style] += 1


# -- reading the folder and the store ---------------------------------------------------------


def folder_files(root: Path) -> dict[str, bytes]:
    """Every regular file in the space outside ``.tack/``, by POSIX path."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".tack"]
            rel_dir = ""
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                out[rel] = (Path(dirpath) / name).read_bytes()
            except FileNotFoundError:
                continue  # a temp file renamed away while we looked
    return out


@dataclass(frozen=True)
class StoreView:
    cards: list[dict[str, Any]]  # id, path, kind, board
    texts: dict[str, str]  # card id -> document text (text cards)


def read_store(root: Path) -> StoreView:
    """The cards and text documents in the store, read through the engine (read-only)."""
    store = Store.open(root / ".tack" / "store.sqlite", readonly=True)
    try:
        replica = Replica(store, device="check")
        cards = [
            {"id": c.id, "path": c.path, "kind": c.kind, "board": c.board}
            for c in replica.cards().values()
        ]
        texts = {c["id"]: replica.text(c["id"]) for c in cards if c["kind"] == "text"}
        return StoreView(cards, texts)
    finally:
        store.close()


def is_card_file(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1] != "board.canvas"


def token_counts(data: bytes) -> Counter[str]:
    text = data.decode("utf-8", errors="replace")
    return Counter(line.split(" ", 1)[0] for line in text.splitlines() if line.startswith("tok-"))


def token_diff(got: bytes, want: bytes) -> str:
    """How ``got`` differs from ``want`` in terms of the writer's token lines."""
    have, need = token_counts(got), token_counts(want)
    lost = sorted(t for t in need if have[t] < need[t])
    doubled = sorted(t for t in have if have[t] > max(need[t], 1))
    stray = sorted(t for t in have if t not in need)
    return (
        f"lost {lost[:5]}, doubled {doubled[:5]}, stray {stray[:5]}, {len(got)}/{len(want)} bytes"
    )


def agreement(root: Path, expected: dict[str, bytes]) -> list[str]:
    """What still keeps the folder, the store and the writer's record apart (empty: none)."""
    gaps: list[str] = []
    files = folder_files(root)
    card_files = {rel: data for rel, data in files.items() if is_card_file(rel)}
    if card_files != expected:
        extra = sorted(set(card_files) - set(expected))
        missing = sorted(set(expected) - set(card_files))
        differ = [
            f"{r} ({token_diff(card_files[r], expected[r])})"
            for r in sorted(expected)
            if r in card_files and card_files[r] != expected[r]
        ]
        gaps.append(f"folder: extra {extra}, missing {missing}, content differs {differ}")
    view = read_store(root)
    file_cards = [c for c in view.cards if c["kind"] in ("text", "binary")]
    by_path = Counter(c["path"] for c in file_cards)
    dupes = sorted(p for p, n in by_path.items() if n > 1)
    if dupes:
        gaps.append(f"several cards for one path: {dupes}")
    if set(by_path) != set(expected):
        gaps.append(
            f"cards: extra {sorted(set(by_path) - set(expected))}, "
            f"missing {sorted(set(expected) - set(by_path))}"
        )
    for card in file_cards:
        want = expected.get(card["path"])
        if want is None:
            continue
        if card["kind"] != "text":
            gaps.append(f"{card['path']} is a {card['kind']} card")
        elif view.texts[card["id"]].encode() != want:
            got = view.texts[card["id"]].encode()
            gaps.append(
                f"document of {card['path']} differs from the file ({token_diff(got, want)})"
            )
    return gaps


def wait_until(
    root: Path, condition: Callable[[], list[str]], deadline: float, still_for: float, what: str
) -> None:
    """Poll until ``condition`` reports no gaps while the whole folder (layout files too)
    stays byte-for-byte unchanged for ``still_for`` seconds."""
    end = time.monotonic() + deadline
    since: float | None = None
    before: dict[str, bytes] | None = None
    gaps: list[str] = ["never checked"]
    while time.monotonic() < end:
        now = folder_files(root)
        gaps = condition()
        if gaps or now != before or folder_files(root) != now:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= still_for:
            return
        before = now
        time.sleep(0.05)
    raise AssertionError(f"{what} did not settle in {deadline}s: {gaps}")


def integrity(store_path: Path) -> str:
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def temp_files(root: Path) -> list[str]:
    return sorted(
        rel for rel in folder_files(root) if rel.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)
    )


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every ``tack up`` a test starts; any still alive at teardown (a failed test) is killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.kill()


@pytest.mark.slow
def test_kill_9_during_a_burst_of_saves_loses_nothing(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    home = tmp_path / "home"
    space = tmp_path / "space"
    _run(home, "init", str(space))
    writer = Writer(space, SEED)
    writer.seed_files()

    def context() -> str:
        tail = "\n".join(d.log(15) for d in daemons[-3:])
        return (
            f"\nseed {SEED} (replay with TACK_CRASH_SEED={SEED}), {len(daemons)} starts, "
            f"space kept at {space}\nsaves by style: {dict(writer.styles)}\nlast logs:\n{tail}"
        )

    # A clean first run: the initial files become cards; their ids must survive every kill.
    first = Daemon(space, home, 0)
    daemons.append(first)
    startup = first.wait_ready()
    wait_until(
        space, lambda: agreement(space, writer.expected), SETTLE_DEADLINE, 0.2, "first start"
    )
    assert first.stop() == 0, context()
    initial_ids = {c["path"]: c["id"] for c in read_store(space).cards if c["path"] in INITIAL}
    assert set(initial_ids) == set(INITIAL), context()

    rng = random.Random(SEED)
    killed_before_ready = 0
    began = time.monotonic()
    writer.start()
    try:
        for number in range(1, KILLS + 1):
            daemon = Daemon(space, home, number)
            daemons.append(daemon)
            if rng.random() < STARTUP_KILL_SHARE:
                time.sleep(rng.uniform(0.0, 1.5 * startup))
            else:
                daemon.wait_ready()
                time.sleep(rng.uniform(0.0, MAX_RUN_AFTER_READY))
            if not daemon.ready.is_set():
                killed_before_ready += 1
            daemon.kill()
            assert daemon.proc.returncode == -signal.SIGKILL, (
                f"tack up #{number} ended by itself ({daemon.proc.returncode})" + context()
            )
            assert integrity(space / ".tack" / "store.sqlite") == "ok", (
                f"store damaged after kill #{number}" + context()
            )
    finally:
        writer.stop()
    burst = time.monotonic() - began

    # The last start: Tack must catch up with every save and then leave the folder alone.
    last = Daemon(space, home, KILLS + 1)
    daemons.append(last)
    last.wait_ready()
    try:
        wait_until(
            space,
            lambda: agreement(space, writer.expected),
            SETTLE_DEADLINE,
            STILL_FOR,
            "the space",
        )
    except AssertionError as exc:
        raise AssertionError(str(exc) + context()) from None
    assert last.stop() == 0, "tack up did not stop cleanly on SIGTERM" + context()
    print(
        f"\n{KILLS} kills ({killed_before_ready} before ready) in {burst:.1f}s, "
        f"{sum(writer.styles.values())} saves {dict(writer.styles)}, seed {SEED}"
    )

    # The store opens and is sound.
    assert integrity(space / ".tack" / "store.sqlite") == "ok", context()
    report = json.loads(_run(home, "status", str(space), "--json").stdout)
    assert report["running"] is False, context()
    assert report["problems"] == [], context()

    # Every file is exactly what the writer last saved; no temp file is left behind.
    files = folder_files(space)
    for rel, data in writer.expected.items():
        assert files.get(rel) == data, f"{rel} is not what the user saved" + context()
    assert temp_files(space) == [], (
        f"stale temporary files after restart: {temp_files(space)}" + context()
    )
    extra = sorted(r for r in files if is_card_file(r) and r not in writer.expected)
    assert extra == [], f"files the user never made: {extra}" + context()

    # Each file is one card, with its document equal to the file and every token once.
    view = read_store(space)
    status_cards = [c for b in report["boards"] for c in b["cards"] if c["path"]]
    status_paths = Counter(c["path"] for c in status_cards if c["kind"] in ("text", "binary"))
    assert status_paths == Counter(list(writer.expected)), (
        f"status cards {dict(status_paths)}" + context()
    )
    by_path = {c["path"]: c for c in view.cards if c["kind"] in ("text", "binary")}
    for rel, data in writer.expected.items():
        card = by_path[rel]
        assert card["kind"] == "text", f"{rel} became a {card['kind']} card" + context()
        text = view.texts[card["id"]]
        seen = token_counts(text.encode())
        lost = [t for t in writer.tokens[rel] if seen[t] == 0]
        doubled = sorted(t for t, n in seen.items() if n > 1)
        strays = sorted(set(seen) - set(writer.tokens[rel]))
        assert not lost, f"{rel}: saves missing from the history: {lost[:10]}" + context()
        assert not doubled, f"{rel}: saves duplicated in the document: {doubled[:10]}" + context()
        assert not strays, f"{rel}: tokens from other files: {strays[:10]}" + context()
        assert text.encode() == data, f"{rel}: document differs from the file" + context()

    # The initial cards kept their identity through every kill.
    for rel, card_id in initial_ids.items():
        assert by_path[rel]["id"] == card_id, f"{rel} changed identity" + context()

    # The layout has exactly one node per card.
    canvas = parse_canvas((space / "board.canvas").read_bytes())
    nodes = Counter(n.get("file") for n in canvas.nodes if n.get("type") == "file")
    assert all(n == 1 for n in nodes.values()), f"duplicate nodes {nodes}" + context()
    root_cards = {c["path"] for c in view.cards if c["board"] == "" and c["path"]}
    assert set(nodes) == {p if p != "sub" else "sub/board.canvas" for p in root_cards}, context()

    # The history is readable and holds the users' saves of every card.
    for rel in writer.expected:
        lines = _run(home, "log", str(space), rel, "-n", "1000000").stdout.splitlines()
        assert any(" file " in line for line in lines), f"no history for {rel}" + context()

    alarms = [line for d in daemons for line in d.lines if any(a in line for a in ALARMS)]
    assert alarms == [], "Tack logged internal errors:\n" + "\n".join(alarms[:20]) + context()


@pytest.mark.slow
def test_stale_temp_files_of_a_killed_write_are_removed_at_start(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A write killed between creating its temp file and renaming it leaves ``.tack-tmp-*``
    behind; the next start must clear it (it is Tack's own file, never a user's)."""
    home = tmp_path / "home"
    space = tmp_path / "space"
    _run(home, "init", str(space))
    (space / "a.md").write_text("hello\n")
    (space / "sub").mkdir()
    stale = [
        space / f"{TEMP_PREFIX}a.md-0badf00d",
        space / f"{TEMP_PREFIX}board.canvas-1badf00d",
        space / "sub" / f"{TEMP_PREFIX}c.md-2badf00d",
    ]
    for path in stale:
        path.write_bytes(b"half a wri")
    daemon = Daemon(space, home, 0)
    daemons.append(daemon)
    daemon.wait_ready()
    wait_until(
        space,
        lambda: agreement(space, {"a.md": b"hello\n"}) + temp_files(space),
        10.0,
        0.2,
        "start-up cleanup",
    )
    assert daemon.stop() == 0, daemon.log()
    assert not any(path.exists() for path in stale)
    assert (space / "a.md").read_bytes() == b"hello\n"


# -- deterministic kills at the worst moments (in process) --------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing in Tack catches it, so no cleanup code runs after it."""


class Incarnation:
    """One life of a Tack process: a replica on the SQLite file and a bridge in virtual time."""

    def __init__(self, root: Path, db: Path) -> None:
        self.store = Store.open(db)
        self.replica = Replica(self.store, device="crash-test")
        self.scheduler = TestScheduler()
        self.bridge = FolderBridge(
            root, self.replica, MemoryBlobs(), self.scheduler, BridgeTiming()
        )
        self.bridge.scan()
        self.scheduler.advance_by(5.0)

    def api_insert(self, doc_id: str, pos: int, insert: str) -> None:
        current = self.replica.text(doc_id)
        self.replica.transact(
            doc_id,
            Origin.API,
            lambda d: apply_splices(d.get(TEXT_KEY, type=Text), current, [Splice(pos, 0, insert)]),
        )


@pytest.mark.parametrize("target", ["card file", "board.canvas"])
def test_kill_between_writing_a_file_and_recording_its_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    """Tack renders a non-file change (a peer's or the API's) into a file and is killed after
    the rename, before the new base is stored.  After the restart the file holds content that
    the document already has; it must be recognised as such, not merged in a second time."""
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"hello\n")
    note = {"id": "n1", "type": "text", "text": "hello", "x": 0, "y": 0, "width": 9, "height": 9}
    (root / "board.canvas").write_text(json.dumps({"nodes": [note], "edges": []}))
    first = Incarnation(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    doc_id = card.id if target == "card file" else "n1"
    want = "hello world\n" if target == "card file" else "hello world"
    assert first.replica.text(doc_id) == want.replace(" world", "")

    real_write = bridge_module.atomic_write
    victim = "a.md" if target == "card file" else "board.canvas"

    def write_then_die(path: Path, data: bytes, expected: bytes | None, **kw: Any) -> Any:
        outcome = real_write(path, data, expected, **kw)
        if path.name == victim:
            raise Killed
        return outcome

    monkeypatch.setattr(bridge_module, "atomic_write", write_then_die)
    first.api_insert(doc_id, 5, " world")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.setattr(bridge_module, "atomic_write", real_write)
    first.store.close()
    assert b"hello world" in (root / victim).read_bytes()  # the write itself happened

    second = Incarnation(root, db)
    assert second.replica.text(doc_id) == want, (
        f"after a kill between writing {victim} and storing its base, the restart merged the "
        f"written edit a second time: {second.replica.text(doc_id)!r}"
    )
    if target == "card file":
        assert (root / "a.md").read_bytes() == want.encode()
    else:
        nodes = parse_canvas((root / "board.canvas").read_bytes()).nodes
        assert [n.get("text") for n in nodes if n["id"] == "n1"] == [want]
    second.store.close()


def test_kill_between_creating_a_card_and_taking_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file appears (a ``sed -i`` temp file, say) and Tack is killed after putting its card
    in the space, before taking in its content; by the restart the file is gone (sed renamed
    it onto its target).  The card, empty and with no base, looked like a peer's never
    written here, and the restart wrote it back: a stray empty card on every device (the
    30-minute soak, seed 51).  The restart now takes the missing file for deleted."""
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"hello\n")
    first = Incarnation(root, db)

    def die(*_: Any, **__: Any) -> None:
        raise Killed

    monkeypatch.setattr(FolderBridge, "ingest_file", die)
    (root / "sedW4qcI7").write_bytes(b"hello\ntoken\n")
    first.bridge.hint("sedW4qcI7")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.undo()
    first.store.close()
    os.replace(root / "sedW4qcI7", root / "a.md")

    second = Incarnation(root, db)  # scans, then waits out the delete grace period
    second.scheduler.advance_by(BridgeTiming().delete_grace + 1.0)
    assert sorted(p.name for p in root.iterdir()) == ["a.md", "board.canvas"]
    assert second.replica.card_at("sedW4qcI7") is None
    card = second.replica.card_at("a.md")
    assert card is not None and second.replica.text(card.id) == "hello\ntoken\n"
    second.store.close()
