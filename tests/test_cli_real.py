"""The real ``tack`` command line on a real folder, edited by real tools (one device).

Each test runs ``tack up`` as a subprocess on a temporary space (with its own ``TACK_HOME``)
and edits the folder the way people do: vim's backup-and-rename save, nano's in-place save,
``sed -i``, temp-file-and-rename, ``git checkout`` of hundreds of files, ``mkdir``/``mv``, and
edits made while Tack is stopped.  After each scenario:

* ``tack status --json``, the folder and every board's ``board.canvas`` agree: every
  non-ignored file is a card at that path, every folder a board card, nothing else;
* each text card's document equals its file;
* nothing was written twice: a file the user just saved keeps the inode and mtime it had when
  the editor finished, once Tack has settled (:func:`realproc.wait_settled`).

No fixed sleeps: every wait is for a condition (see ``tests/realproc.py``).  The daemons run
``--offline`` (these are folder-bridge scenarios; the network has its own tests), except in
:func:`test_second_up_status_and_log`, which runs plain ``tack up DIR``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from realproc import (
    CANVAS,
    EXIT_RUNNING,
    OFFLINE,
    STOPPED,
    TACK,
    Daemon,
    PtyProgram,
    agrees,
    card_id,
    cards,
    log_lines,
    run_tack,
    stamp,
    status,
    tack_env,
    texts_agree,
    wait_settled,
    wait_until,
)

VIM = shutil.which("vim")
NANO = shutil.which("nano")
GIT = shutil.which("git")
SED = shutil.which("sed")

CHARS = re.compile(r"\+(\d+) −(\d+) chars$")

StartDaemon = Callable[..., Daemon]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space"
    path.mkdir()
    return path.resolve()


@pytest.fixture
def daemons(space: Path, home: Path) -> Iterator[StartDaemon]:
    """Start ``tack up`` on the test's space; every daemon started is stopped at teardown."""
    started: list[Daemon] = []

    def start(wait_ready: bool = True, args: Sequence[str] = OFFLINE) -> Daemon:
        daemon = Daemon(space, home, args)
        started.append(daemon)
        return daemon.start(wait_ready)

    yield start
    for daemon in started:
        daemon.stop()
    for daemon in started:
        assert daemon.stopped_cleanly(), f"tack up did not stop cleanly\n{daemon.log()}"


def init(space: Path, home: Path) -> None:
    run_tack(home, "init", str(space))


def edits_logged(space: Path, home: Path, path: str) -> list[str]:
    """The ``+N −M chars`` history lines of one card."""
    return [line for line in log_lines(space, home, path) if CHARS.search(line)]


def settle_and_check(
    space: Path, home: Path, daemon: Daemon, saved: dict[str, tuple[int, int]]
) -> None:
    """Wait for quiescence, then check agreement and that no saved file was written again."""
    wait_settled(space, home, context=daemon.log)
    wait_until(lambda: agrees(space, home), what="status and folder to agree", context=daemon.log)
    texts_agree(space)
    assert not daemon.troubles(), daemon.log()
    for rel, before in saved.items():
        assert stamp(space / rel) == before, (
            f"Tack rewrote {rel} after the user saved it (inode, mtime_ns before "
            f"{before}, after {stamp(space / rel)})\n{daemon.log()}"
        )
        assert not any(line.endswith(f"wrote {rel}") for line in daemon.lines), daemon.log()


# -- 1. init ----------------------------------------------------------------------------------


def test_init_is_idempotent_and_existing_files_become_cards(
    space: Path, home: Path, daemons: StartDaemon
) -> None:
    (space / "Welcome.md").write_text("hello, board\n")
    (space / "Roadmap").mkdir()
    (space / "Roadmap" / "Q1.md").write_text("ship it\n")
    (space / "sketch.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

    first = run_tack(home, "init", str(space))
    assert "Made" in first.stdout
    config = (space / ".tack" / "config.json").read_bytes()
    second = run_tack(home, "init", str(space))
    assert "already a Tack space" in second.stdout
    assert (space / ".tack" / "config.json").read_bytes() == config
    user_files = ["Welcome.md", "Roadmap/Q1.md", "sketch.png"]
    saved = {rel: stamp(space / rel) for rel in user_files}

    daemon = daemons()
    report = status(space, home)  # "ready" means the start-up scan is done
    assert report["running"] is True
    assert report["space"]["path"] == str(space)
    kinds = {path: card["kind"] for path, card in cards(report).items()}
    assert kinds == {
        "Welcome.md": "text",
        "Roadmap": "board",
        "Roadmap/Q1.md": "text",
        "sketch.png": "binary",
    }
    assert (space / CANVAS).is_file() and (space / "Roadmap" / CANVAS).is_file()
    settle_and_check(space, home, daemon, saved)

    third = run_tack(home, "init", str(space))  # still harmless while Tack runs
    assert "already a Tack space" in third.stdout
    assert (space / ".tack" / "config.json").read_bytes() == config
    assert status(space, home)["space"]["id"] == report["space"]["id"]


# -- 2. vim -------------------------------------------------------------------------------------


@pytest.mark.skipif(VIM is None, reason="vim is not installed")
def test_vim_backup_rename_save_keeps_the_card(
    space: Path, home: Path, daemons: StartDaemon
) -> None:
    assert VIM is not None
    init(space, home)
    notes = space / "notes.md"
    notes.write_text("one\ntwo\nthree\n")
    daemon = daemons()
    original = card_id(space, home, "notes.md")
    assert original is not None
    old_inode = notes.stat().st_ino

    subprocess.run(
        [
            VIM,
            "-N",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "-es",
            "-c",
            "set backupskip=",  # the default skips /tmp/*, where the test space lives
            "-c",
            "set backup writebackup backupcopy=no",
            "-c",
            "2s/two/TWO, edited in vim/",
            "-c",
            "wq",
            "notes.md",
        ],
        cwd=space,
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )
    saved = {"notes.md": stamp(notes)}
    assert saved["notes.md"][0] != old_inode, "vim did not save by rename (same inode)"
    assert (space / "notes.md~").read_text() == "one\ntwo\nthree\n"
    assert notes.read_text() == "one\nTWO, edited in vim\nthree\n"

    wait_until(
        lambda: len(edits_logged(space, home, "notes.md")) >= 2,
        what="vim's save in the history of notes.md",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    assert card_id(space, home, "notes.md") == original
    assert notes.read_text() == "one\nTWO, edited in vim\nthree\n"
    assert "notes.md~" not in cards(status(space, home))


# -- 3. nano and in-place writes ------------------------------------------------------------------


@pytest.mark.skipif(NANO is None, reason="nano is not installed")
def test_nano_in_place_save(space: Path, home: Path, daemons: StartDaemon) -> None:
    assert NANO is not None
    init(space, home)
    notes = space / "notes.md"
    notes.write_text("first line\nsecond line\n")
    daemon = daemons()
    original = card_id(space, home, "notes.md")
    old_inode = notes.stat().st_ino

    nano = PtyProgram.spawn([NANO, "-I", "notes.md"], cwd=space)
    try:
        nano.expect_any(b"second line")  # the file is on screen
        nano.send(b"Typed in nano. ")  # lands at the start of the first line
        nano.send(b"\x0f")  # ^O: write out
        nano.expect_any(b"File Name to Write")
        nano.send(b"\r")
        nano.expect_any(b"Wrote")
        saved = {"notes.md": stamp(notes)}  # as soon as the save is done
        nano.send(b"\x18")  # ^X: exit
        assert nano.wait() == 0
    finally:
        nano.kill()
    assert saved["notes.md"][0] == old_inode, "nano replaced the file instead of writing in place"
    assert notes.read_text() == "Typed in nano. first line\nsecond line\n"

    wait_until(
        lambda: len(edits_logged(space, home, "notes.md")) >= 2,
        what="nano's save in the history of notes.md",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    assert card_id(space, home, "notes.md") == original
    assert notes.read_text() == "Typed in nano. first line\nsecond line\n"


def test_append_and_truncate_in_place(space: Path, home: Path, daemons: StartDaemon) -> None:
    init(space, home)
    notes = space / "notes.md"
    notes.write_text("alpha\n")
    daemon = daemons()
    original = card_id(space, home, "notes.md")

    with open(notes, "a", encoding="utf-8") as f:  # like `echo beta >> notes.md`
        f.write("beta\n")
    saved = {"notes.md": stamp(notes)}
    wait_until(
        lambda: edits_logged(space, home, "notes.md")[-1].endswith("+5 −0 chars"),
        what="the append in the history",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)

    with open(notes, "r+", encoding="utf-8") as f:  # truncate, then write the new content
        f.truncate(0)
        f.write("gamma\ndelta\n")
    saved = {"notes.md": stamp(notes)}
    wait_until(
        lambda: texts_agree(space, ["notes.md"]),
        what="the rewrite in the document",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    assert notes.read_text() == "gamma\ndelta\n"
    assert card_id(space, home, "notes.md") == original


# -- 4. temp file + rename ----------------------------------------------------------------------


@pytest.mark.skipif(SED is None, reason="sed is not installed")
def test_sed_in_place_and_python_replace(space: Path, home: Path, daemons: StartDaemon) -> None:
    assert SED is not None
    init(space, home)
    notes = space / "notes.md"
    notes.write_text("red\ngreen\nblue\n")
    daemon = daemons()
    original = card_id(space, home, "notes.md")

    inode = notes.stat().st_ino
    subprocess.run([SED, "-i", "s/green/GREEN/", "notes.md"], cwd=space, check=True, timeout=30)
    saved = {"notes.md": stamp(notes)}
    assert saved["notes.md"][0] != inode, "sed -i wrote in place"
    wait_until(
        lambda: len(edits_logged(space, home, "notes.md")) >= 2,
        what="sed's edit in the history",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    assert card_id(space, home, "notes.md") == original

    inode = notes.stat().st_ino
    with tempfile.NamedTemporaryFile(
        "w", dir=space, prefix="notes.md.", suffix=".tmp", delete=False
    ) as tmp:
        tmp.write("red\nGREEN\nblue\nyellow\n")
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, notes)
    saved = {"notes.md": stamp(notes)}
    assert saved["notes.md"][0] != inode
    wait_until(
        lambda: len(edits_logged(space, home, "notes.md")) >= 3,
        what="the replaced file in the history",
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    assert card_id(space, home, "notes.md") == original
    assert notes.read_text() == "red\nGREEN\nblue\nyellow\n"
    assert set(cards(status(space, home))) == {"notes.md"}


# -- 5. git checkout of 500 files ---------------------------------------------------------------


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_git_checkout_of_500_files(space: Path, home: Path, daemons: StartDaemon) -> None:
    assert GIT is not None
    count = 500
    env = {
        **tack_env(home),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def git(*args: str) -> None:
        subprocess.run(
            [GIT, *args], cwd=space, env=env, check=True, capture_output=True, timeout=60
        )

    def name(i: int) -> str:
        return f"f{i:03d}.txt"

    git("init", "-q", "-b", "a")
    for i in range(count):
        (space / name(i)).write_text(f"file {i} on branch a\nsame line\n")
    git("add", ".")
    git("commit", "-q", "-m", "a")
    git("checkout", "-q", "-b", "b")
    for i in range(count):
        (space / name(i)).write_text(f"file {i} on branch b, longer\nsame line\nextra {i}\n")
    git("commit", "-q", "-am", "b")

    init(space, home)
    daemon = daemons()
    assert len(cards(status(space, home))) == count

    git("checkout", "-q", "a")
    saved = {name(i): stamp(space / name(i)) for i in range(count)}

    wait_until(
        lambda: texts_agree(space),
        timeout=60,
        what="all 500 cards to hold branch a",
        interval=0.2,
        context=daemon.log,
    )
    settle_and_check(space, home, daemon, saved)
    report = status(space, home)
    by_path = cards(report)
    assert sorted(by_path) == sorted(name(i) for i in range(count))
    assert {card["kind"] for card in by_path.values()} == {"text"}
    for i in range(count):
        assert (space / name(i)).read_text() == f"file {i} on branch a\nsame line\n"


# -- 6. mkdir + mv of a folder ------------------------------------------------------------------


def test_mkdir_then_mv_folder_keeps_ids(space: Path, home: Path, daemons: StartDaemon) -> None:
    init(space, home)
    daemon = daemons()
    subprocess.run(["mkdir", "Proj"], cwd=space, check=True)
    (space / "Proj" / "a.md").write_text("card a\n")
    (space / "Proj" / "b.md").write_text("card b\n")

    def has_cards() -> dict[str, dict[str, object]] | None:
        found = cards(status(space, home))
        return found if {"Proj", "Proj/a.md", "Proj/b.md"} <= set(found) else None

    before = wait_until(has_cards, what="cards for Proj/", context=daemon.log)
    wait_settled(space, home, context=daemon.log)
    ids = {path: card["id"] for path, card in before.items()}

    subprocess.run(["mv", "Proj", "Renamed"], cwd=space, check=True)
    saved = {rel: stamp(space / rel) for rel in ("Renamed/a.md", "Renamed/b.md")}

    def moved() -> bool:
        found = cards(status(space, home))
        return {"Renamed", "Renamed/a.md", "Renamed/b.md"} <= set(found) and "Proj" not in found

    wait_until(moved, what="cards under Renamed/", context=daemon.log)
    settle_and_check(space, home, daemon, saved)
    after = cards(status(space, home))
    assert {path: card["id"] for path, card in after.items()} == {
        "Renamed": ids["Proj"],
        "Renamed/a.md": ids["Proj/a.md"],
        "Renamed/b.md": ids["Proj/b.md"],
    }
    canvas = (space / "Renamed" / CANVAS).read_text()
    assert '"Renamed/a.md"' in canvas and '"Renamed/b.md"' in canvas
    assert '"Renamed/board.canvas"' in (space / CANVAS).read_text()


# -- 8. the command line itself -----------------------------------------------------------------


def test_second_up_status_and_log(space: Path, home: Path, daemons: StartDaemon) -> None:
    init(space, home)
    (space / "a.md").write_text("hello\n")
    assert status(space, home)["running"] is False  # never started: no store yet

    daemon = daemons(args=())  # exactly what a user types: networking and mDNS on
    report = status(space, home)
    assert report["running"] is True
    assert daemon.proc is not None and report["pid"] == daemon.proc.pid

    second = subprocess.run(
        [str(TACK), "up", str(space)],
        env=tack_env(home),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == EXIT_RUNNING, second
    assert "already running" in second.stderr and str(daemon.proc.pid) in second.stderr
    assert daemon.running, "the first tack up must survive the second"

    with open(space / "a.md", "a", encoding="utf-8") as f:
        f.write("world\n")
    saved = {"a.md": stamp(space / "a.md")}
    wait_until(
        lambda: any(line.endswith("+6 −0 chars") for line in log_lines(space, home, "a.md")),
        what="the append in `tack log`",
        context=daemon.log,
    )
    line = log_lines(space, home, "a.md")[-1]
    assert re.fullmatch(r"\S+\s+\S{7}\s+file\s+a\.md\s+\+6 −0 chars", line), line
    settle_and_check(space, home, daemon, saved)

    assert daemon.stop() == 0
    assert any(STOPPED in line for line in daemon.lines), daemon.log()
    stopped = status(space, home)
    assert stopped["running"] is False
    assert "a.md" in cards(stopped)
    assert len(log_lines(space, home, "a.md")) >= 2
    missing = run_tack(home, "log", str(space), "nope.md", check=False)
    assert missing.returncode == 1 and "no card at nope.md" in missing.stderr


# -- 9. edits while stopped ---------------------------------------------------------------------


def test_edits_while_stopped_are_picked_up(space: Path, home: Path, daemons: StartDaemon) -> None:
    init(space, home)
    for name in ("edit.md", "move.md", "gone.md"):
        (space / name).write_text(f"{name} content\n")
    first = daemons()
    ids = {path: card["id"] for path, card in cards(status(space, home)).items()}
    assert set(ids) == {"edit.md", "move.md", "gone.md"}
    wait_settled(space, home, context=first.log)
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C
    assert first.stopped_cleanly(), first.log()

    with open(space / "edit.md", "a", encoding="utf-8") as f:
        f.write("added while stopped\n")
    os.rename(space / "move.md", space / "moved.md")
    os.unlink(space / "gone.md")
    saved = {rel: stamp(space / rel) for rel in ("edit.md", "moved.md")}

    second = daemons()
    # gone.md's card goes once its file stayed missing for the delete grace period (the
    # start-up scan may have caught an editor between moving a file away and rewriting it).
    wait_until(
        lambda: set(cards(status(space, home))) == {"edit.md", "moved.md"},
        what="the card of the file deleted while stopped to go",
        context=second.log,
    )
    after = cards(status(space, home))
    assert after["edit.md"]["id"] == ids["edit.md"]
    assert after["moved.md"]["id"] == ids["move.md"]
    settle_and_check(space, home, second, saved)
    assert (space / "edit.md").read_text() == "edit.md content\nadded while stopped\n"
    assert edits_logged(space, home, "edit.md")[-1].endswith("+20 −0 chars")


def test_folder_renamed_while_stopped_keeps_board_id(
    space: Path, home: Path, daemons: StartDaemon
) -> None:
    """DESIGN §2: a card keeps its identity across renames — a board (folder) too, also when
    it was renamed while Tack was not running (its files, and its board.canvas, moved along)."""
    init(space, home)
    (space / "Proj").mkdir()
    (space / "Proj" / "a.md").write_text("card a\n")
    (space / "Proj" / "b.md").write_text("card b\n")
    first = daemons()
    ids = {path: card["id"] for path, card in cards(status(space, home)).items()}
    wait_settled(space, home, context=first.log)
    assert first.stop() == 0

    subprocess.run(["mv", "Proj", "Renamed"], cwd=space, check=True)
    saved = {rel: stamp(space / rel) for rel in ("Renamed/a.md", "Renamed/b.md")}

    second = daemons()
    settle_and_check(space, home, second, saved)
    after = {path: card["id"] for path, card in cards(status(space, home)).items()}
    assert after == {
        "Renamed": ids["Proj"],
        "Renamed/a.md": ids["Proj/a.md"],
        "Renamed/b.md": ids["Proj/b.md"],
    }, f"ids before the rename: {ids}\n{second.log()}"


def test_sigterm_during_a_long_first_scan_stops_at_once_and_the_next_start_finishes(
    space: Path, home: Path, daemons: StartDaemon
) -> None:
    init(space, home)
    names = [f"note-{i:04d}.md" for i in range(1500)]
    for name in names:
        (space / name).write_text(f"{name}\n")
    first = daemons(wait_ready=False)
    first.wait_for_line("new text card", timeout=60)  # the first index is under way
    assert first.stop(signal.SIGTERM, timeout=5) == 0, first.log()
    assert first.stopped_cleanly(), first.log()
    assert any("stopped during the start-up scan" in line for line in first.lines), first.log()
    assert not first.troubles(), first.log()
    second = daemons(wait_ready=False)
    second.wait_for_line("Tack is watching", timeout=300)
    assert set(cards(status(space, home))) == set(names)


# -- start-up -----------------------------------------------------------------------------------


def test_tack_up_imports_no_rich() -> None:
    """``tack up`` logs with :mod:`logging` alone: rich (about 25 ms of imports, paid by every
    start) is loaded only by the commands that print with it."""
    code = (
        "import sys, fsbridge.cli, fsbridge.daemon, fsbridge.watcher\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'rich'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],  # this checkout's modules come first
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]", out.stdout
