"""Bad input on disk: whatever lies in the folder, Tack neither crashes, nor blocks other
cards, nor silently mangles anything.

Cases: invalid UTF-8 and NUL bytes in a ``.md``; a sparse file of 256 MiB (1 GiB among the
``slow`` tests); a 100,000-line text card; 10,000 files in one folder; 100 nested folders;
255-byte names; names with newlines (and other odd characters, and names that are not
UTF-8); NFC and NFD spellings of one name; case-only renames; symlinks (inside, outside, to
a folder outside, loops); FIFOs; a file that keeps growing while it is read; a
``board.canvas`` that is invalid JSON, valid JSON but not a canvas, or 50 MB.

Most tests drive the in-process rig of ``test_bridge`` (real files in ``tmp_path``, an
in-memory store, a bridge on a ``TestScheduler``; events are delivered by hand).  One test
runs the real ``tack up --offline`` on a folder holding many of the nasty cases at once.

Tests marked ``slow`` (10,000 files, the 1 GiB file) take minutes; ``-m "not slow"`` keeps
the rest of the file around a minute and a half.

Known bugs are kept as ``xfail(strict=True)`` tests whose reason is the diagnosis; each one
passes (and so turns into an XPASS failure) once the bug is fixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realproc import (
    OFFLINE,
    Daemon,
    card_texts,
    cards,
    log_lines,
    run_tack,
    status,
    wait_until,
)
from test_bridge import Rig

from engine import Store
from fsbridge.atomic import TEMP_PREFIX, _temp_name
from fsbridge.bridge import FsEvent

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
MiB = 1024 * 1024


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    space = tmp_path / "space"
    space.mkdir()
    r = Rig(space)
    yield r
    r.bridge.dispose()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the space, with a file and a subfolder, that Tack must never touch."""
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "secret.md").write_text("outside secret\n")
    (out / "dir" / "x.md").write_text("in a folder outside\n")
    (out / "other.canvas").write_text(
        json.dumps(
            {
                "nodes": [
                    {
                        "id": "outsider",
                        "type": "text",
                        "text": "a note from outside",
                        "x": 0,
                        "y": 0,
                        "width": 10,
                        "height": 10,
                    }
                ]
            }
        )
    )
    return out


# -- helpers -------------------------------------------------------------------------------------


def scan(rig: Rig, seconds: float = 2.0) -> None:
    """What ``tack up`` does at start: scan, write every canvas, then let the rig settle."""
    rig.bridge.scan()
    rig.bridge.flush_canvas_now()
    rig.settle(seconds)


def paths(rig: Rig) -> set[str]:
    return {c.path for c in rig.replica.cards().values() if c.path}


def nodes(root: Path, board: str = "") -> list[dict[str, Any]]:
    canvas = root / board / "board.canvas" if board else root / "board.canvas"
    found: list[dict[str, Any]] = json.loads(canvas.read_bytes())["nodes"]
    return found


def tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under ``root``, without following links: kind and content (or target)."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isdir(full):
                out[rel] = ("dir", b"")
            else:
                with open(full, "rb") as f:
                    out[rel] = ("file", f.read())
    return out


def overlapping(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of nodes whose rectangles share interior (spatial hash, so 10,000 nodes are cheap)."""
    cell = 500
    grid: dict[tuple[int, int], list[dict[str, Any]]] = {}
    pairs: set[tuple[str, str]] = set()
    for node in found:
        x, y, w, h = node["x"], node["y"], node["width"], node["height"]
        for cx in range(int(x // cell), int((x + w) // cell) + 1):
            for cy in range(int(y // cell), int((y + h) // cell) + 1):
                for other in grid.setdefault((cx, cy), []):
                    ox, oy, ow, oh = other["x"], other["y"], other["width"], other["height"]
                    if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                        first, second = sorted((str(node["id"]), str(other["id"])))
                        pairs.add((first, second))
                grid[(cx, cy)].append(node)
    return sorted(pairs)


def rendered_edit(rig: Rig, rel: str, prefix: str = "E:") -> None:
    """An edit from elsewhere (the API) must reach the card's file."""
    card = rig.card(rel)
    before = rig.replica.text(card)
    rig.api_edit(card, 0, prefix)
    rig.settle()
    assert (rig.root / rel).read_text(encoding="utf-8") == prefix + before
    assert rig.replica.text(card) == prefix + before


@contextlib.contextmanager
def fifo_guard(fifos: list[Path], grace: float = 2.0) -> Iterator[list[str]]:
    """Run the body; if it is still running after ``grace`` seconds, unblock any reader stuck
    on one of ``fifos`` and record that FIFO in the yielded list.

    A writer's non-blocking open of a FIFO succeeds only while someone (Tack) has it open for
    reading, i.e. is stuck in open() or read(); the guard closes its end at once, so the
    stuck reader sees EOF and the test goes on instead of hanging (the bridge and its SQLite
    store stay on the test's thread).  The grace period keeps a quick, non-blocking look at
    a FIFO (open with O_NONBLOCK, fstat, close) from counting.
    """
    opened: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        if stop.wait(grace):
            return
        while not stop.is_set():
            for fifo in fifos:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    continue  # ENXIO: nobody has it open for reading
                os.close(fd)
                opened.append(fifo.name)
            stop.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield opened
    finally:
        stop.set()
        watcher.join()


# -- invalid UTF-8 and NUL bytes ------------------------------------------------------------------

NOT_TEXT = {
    "latin1.md": "café in Latin-1\n".encode("latin-1"),
    "nul.md": b"text with a \x00 NUL byte\n",
    "only-nul.md": b"\x00",
    "overlong.md": b"overlong slash \xc0\xaf\n",
    "surrogate.md": b"an encoded surrogate \xed\xa0\x80\n",
    "truncated.md": b"cut in the middle of \xe2\x82",
    "bom-then-junk.md": b"\xef\xbb\xbfhello \xff\n",
}


def test_invalid_utf8_and_nul_bytes_make_binary_cards_with_the_exact_bytes(rig: Rig) -> None:
    for name, data in NOT_TEXT.items():
        rig.write(name, data, hint=False)
    rig.write("good.md", "good ✓\n", hint=False)
    scan(rig)
    for name, data in NOT_TEXT.items():
        card = rig.replica.card_at(name)
        assert card is not None, name
        assert card.kind == "binary", name
        assert rig.blobs.get(card.blob) == data, name
        assert (rig.root / name).read_bytes() == data, f"{name} was rewritten"
    assert {n["file"] for n in nodes(rig.root)} == {*NOT_TEXT, "good.md"}
    assert not rig.bridge.problems
    rendered_edit(rig, "good.md")


def test_a_text_card_that_gains_a_nul_byte_becomes_binary_and_back_without_loss(
    rig: Rig,
) -> None:
    rig.write("a.md", "line one\nline two\n")
    rig.settle()
    card = rig.card("a.md")
    broken = b"line one\x00\nline two \xff\n"
    rig.write("a.md", broken)
    rig.settle()
    view = rig.replica.cards()[card]
    assert view.kind == "binary" and rig.blobs.get(view.blob) == broken
    assert (rig.root / "a.md").read_bytes() == broken
    rig.write("a.md", "line one\nline two, fixed\n")
    rig.settle()
    assert rig.card("a.md") == card
    assert rig.replica.cards()[card].kind == "text"
    assert rig.replica.text(card) == "line one\nline two, fixed\n"
    assert (rig.root / "a.md").read_bytes() == b"line one\nline two, fixed\n"


# -- a 1 GiB sparse file --------------------------------------------------------------------------

_SPARSE_CHILD = r"""
import hashlib, json, os, resource, sys
from pathlib import Path
sys.path[:0] = [sys.argv[3], sys.argv[4]]
from test_bridge import TIMING, Rig
from engine import DirBlobs
from fsbridge.bridge import FolderBridge

root, blob_dir = Path(sys.argv[1]), Path(sys.argv[2])
rig = Rig(root)
rig.bridge.dispose()
rig.blobs = DirBlobs(blob_dir)
rig.bridge = FolderBridge(root, rig.replica, rig.blobs, rig.scheduler, TIMING)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rig.bridge.scan()
rig.bridge.flush_canvas_now()
rig.settle()
ok = rig.card("ok.md")
rig.api_edit(ok, 0, "E:")
rig.settle()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256()
with open(root / "big.bin", "rb") as f:
    while chunk := f.read(1 << 20):
        digest.update(chunk)
card = rig.replica.card_at("big.bin")
print(json.dumps({
    "rss_delta_mib": (peak - before) / 1024,
    "kind": card.kind if card else None,
    "blob_ok": bool(card and card.blob == digest.hexdigest()),
    "problems": sorted(rig.bridge.problems.values()),
    "ok_file": (root / "ok.md").read_text(),
}))
"""


@pytest.mark.parametrize(
    "size_mib",
    [pytest.param(256, id="256MiB"), pytest.param(1024, id="1GiB", marks=pytest.mark.slow)],
)
def test_a_big_sparse_file_keeps_memory_bounded(tmp_path: Path, size_mib: int) -> None:
    space = tmp_path / "space"
    space.mkdir()
    with open(space / "big.bin", "wb") as f:
        f.truncate(size_mib * MiB)
    (space / "ok.md").write_text("still fine\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _SPARSE_CHILD,
            str(space),
            str(tmp_path / "blobs"),
            str(TESTS),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Other cards keep working, and the big file is a binary card or reported, never dropped.
    assert result["ok_file"] == "E:still fine\n"
    if result["kind"] is None:
        assert any("big.bin" in p for p in result["problems"]), result
    else:
        assert result["kind"] == "binary" and result["blob_ok"], result
    bound = size_mib / 4  # streaming needs a few MiB; reading it whole needs 2 x size
    assert result["rss_delta_mib"] < bound, f"max RSS grew by {result['rss_delta_mib']:.0f} MiB"


# -- a 100,000-line text card ---------------------------------------------------------------------


def test_a_100000_line_text_card_is_text_and_equals_its_file(rig: Rig) -> None:
    lines = [f"line {i}: héllo wörld 😀 some text\n" for i in range(100_000)]
    text = "".join(lines)
    rig.write("long.md", text, hint=False)
    scan(rig)
    card = rig.card("long.md")
    assert rig.replica.cards()[card].kind == "text"
    assert rig.replica.text(card) == text
    lines[50_000] = "CHANGED IN THE MIDDLE ✓\n"
    del lines[99_000]
    edited = "".join(lines)
    rig.write("long.md", edited)
    rig.settle()
    assert rig.replica.text(card) == edited
    edits = [h for h in rig.store.history(card) if h.doc_id == card]
    assert len(edits) == 2, "one save must be one transaction"
    rig.api_edit(card, len(edited), "appended\n")
    rig.settle()
    assert (rig.root / "long.md").read_text(encoding="utf-8") == edited + "appended\n"


# -- 10,000 files in one folder -------------------------------------------------------------------


@pytest.mark.slow
def test_10000_files_in_one_folder_all_become_cards_on_a_grid_without_overlap(
    rig: Rig,
) -> None:
    count = 10_000
    for i in range(count):
        (rig.root / f"card {i:05d}.md").write_text(f"card number {i}\n")
    started = time.monotonic()
    scan(rig, 5.0)
    elapsed = time.monotonic() - started
    cards_by_path = {c.path: c for c in rig.replica.cards().values()}
    assert len(cards_by_path) == count
    assert all(c.kind == "text" for c in cards_by_path.values())
    found = nodes(rig.root)
    assert len(found) == count
    assert len({n["id"] for n in found}) == count
    assert {n["file"] for n in found} == set(cards_by_path)
    assert all(n["x"] % 20 == 0 and n["y"] % 20 == 0 for n in found)
    assert overlapping(found) == []
    rendered_edit(rig, "card 09999.md")
    print(f"10,000 files: scan and settle took {elapsed:.1f} s")


def test_a_thousand_files_arriving_as_events_get_non_overlapping_grid_spots(rig: Rig) -> None:
    for i in range(1_000):
        rig.write(f"Inbox/n{i:04d}.md", f"note {i}\n")
    rig.settle(5.0)
    found = nodes(rig.root, "Inbox")
    assert len(found) == 1_000
    assert overlapping(found) == []
    assert all(n["x"] % 20 == 0 and n["y"] % 20 == 0 for n in found)


# -- 100 nested folders ---------------------------------------------------------------------------


def _nest(root: Path, depth: int) -> list[str]:
    boards, rel = [], ""
    for i in range(depth):
        rel = f"{rel}/level{i:03d}" if rel else f"level{i:03d}"
        boards.append(rel)
    (root / rel).mkdir(parents=True)
    (root / rel / "deep.md").write_text("at the bottom\n")
    return boards


def _check_nest(rig: Rig, boards: list[str]) -> None:
    board_cards = {c.path for c in rig.replica.cards().values() if c.kind == "board"}
    assert board_cards == set(boards)
    parents = ["", *boards[:-1]]
    for parent, child in zip(parents, boards, strict=True):
        assert [n["file"] for n in nodes(rig.root, parent)] == [f"{child}/board.canvas"]
    assert [n["file"] for n in nodes(rig.root, boards[-1])] == [f"{boards[-1]}/deep.md"]
    rendered_edit(rig, f"{boards[-1]}/deep.md")


def test_100_nested_folders_found_by_a_scan_are_100_boards_with_canvases(rig: Rig) -> None:
    boards = _nest(rig.root, 100)
    scan(rig)
    _check_nest(rig, boards)


def test_100_nested_folders_made_at_once_while_running_are_100_boards(rig: Rig) -> None:
    boards = _nest(rig.root, 100)
    rig.bridge.on_event(FsEvent("created", boards[0], is_dir=True))  # mkdir -p: one event
    rig.settle(20.0)
    _check_nest(rig, boards)


# -- 255-byte names -------------------------------------------------------------------------------

LONG_NAMES = {
    "ascii": "a" * 252 + ".md",
    "two-byte": "é" * 126 + ".md",
    "three-byte": "€" * 84 + ".md",  # temp-name truncation cuts inside a character
    "four-byte": "😀" * 63 + ".md",
    "mixed": "ä€😀" * 27 + "xxxxxxxxx.md",
}


@pytest.mark.parametrize("name", list(LONG_NAMES.values()), ids=list(LONG_NAMES))
def test_temp_names_for_255_byte_names_fit_name_max(name: str) -> None:
    assert len(name.encode()) == 255
    temp = _temp_name(name)
    assert temp.startswith(TEMP_PREFIX)
    assert len(os.fsencode(temp)) <= 255


def test_255_byte_names_are_cards_that_sync_both_ways(rig: Rig) -> None:
    for name in LONG_NAMES.values():
        rig.write(name, f"content of {name[:3]}\n", hint=False)
    rig.write(f"Sub/{LONG_NAMES['four-byte']}", "in a subfolder\n", hint=False)
    scan(rig)
    expected = {*LONG_NAMES.values(), f"Sub/{LONG_NAMES['four-byte']}"}
    assert paths(rig) == expected | {"Sub"}
    for rel in expected:
        rendered_edit(rig, rel)  # Tack's own atomic write (temp file + rename) must fit
    new = "ö" * 126 + ".md"
    rig.write(new, "arrived while running\n")
    rig.settle()
    rendered_edit(rig, new)
    leftovers = [n for n in os.listdir(rig.root) if n.startswith(TEMP_PREFIX)]
    assert leftovers == [] and not rig.bridge.problems


def test_a_255_byte_name_created_on_two_devices_apart_keeps_both_versions(
    tmp_path: Path,
) -> None:
    from test_multidevice import World

    world = World(tmp_path, 2)
    world.settle()
    a, b = world.devices
    name = "n" * 252 + ".md"
    world.net.partition("d0", "d1")
    a.write(name, "from a\n")
    b.write(name, "from b\n")
    world.settle()
    world.net.heal("d0", "d1")
    world.settle()
    for device in world.devices:
        contents = {v for k, v in device.files().items() if k != "board.canvas"}
        assert contents == {b"from a\n", b"from b\n"}, device.name
    world.assert_converged()


# -- names with newlines and other odd characters -------------------------------------------------

ODD_NAMES = [
    "a\nb.md",
    "ends with newline\n",
    "\n",
    "carriage\rreturn.md",
    "tab\there.md",
    " leading and trailing spaces .md",
    "-starts-with-dash.md",
    "quote\"and'apostrophe.md",
    "colon:star*question?.md",
    "\u202eevil-rtl.md",
    "zero\u200bwidth.md",
    "emoji 👩‍👩‍👧 family.md",
]


def test_names_with_newlines_and_odd_characters_are_cards_with_exact_names(
    tmp_path: Path,
) -> None:
    space = tmp_path / "space"
    space.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(space, Store.open(store_path))
    for name in ODD_NAMES:
        first.write(name, f"content {name!r}\n", hint=False)
    scan(first)
    assert paths(first) == set(ODD_NAMES)
    assert {n["file"] for n in nodes(space)} == set(ODD_NAMES)
    ids = {name: first.card(name) for name in ODD_NAMES}
    for name in ODD_NAMES:
        rendered_edit(first, name)
    first.write("x\ny.md", "made while running\n")
    first.settle()
    assert first.replica.text(first.card("x\ny.md")) == "made while running\n"
    assert not first.bridge.problems
    first.bridge.dispose()
    first.store.close()
    # A restart finds the same cards, none doubled and none renamed.
    second = Rig(space, Store.open(store_path))
    scan(second)
    assert paths(second) == {*ODD_NAMES, "x\ny.md"}
    assert {name: second.card(name) for name in ODD_NAMES} == ids
    assert sorted(os.listdir(space)) == sorted([*ODD_NAMES, "x\ny.md", "board.canvas"])
    second.bridge.dispose()
    second.store.close()


def test_a_name_with_a_backslash_is_either_a_working_card_or_reported(rig: Rig) -> None:
    rig.write("back\\slash.md", "original\n", hint=False)
    rig.write("good.md", "good\n", hint=False)
    scan(rig)
    card = rig.replica.card_at("back\\slash.md")
    if card is None:
        assert any("back\\slash.md" in p for p in rig.bridge.problems.values())
    else:
        rendered_edit(rig, "back\\slash.md")
    rendered_edit(rig, "good.md")


def test_a_name_that_is_not_utf8_is_skipped_and_reported_without_crashing(rig: Rig) -> None:
    bad = os.fsdecode(b"caf\xe9-latin1.md")
    with open(os.path.join(os.fsencode(rig.root), b"caf\xe9-latin1.md"), "wb") as f:
        f.write(b"named in Latin-1\n")
    rig.write("good.md", "good\n", hint=False)
    scan(rig)
    rig.bridge.on_event(FsEvent("modified", bad))
    rig.settle()
    assert paths(rig) == {"good.md"}
    assert any("latin1" in p for p in rig.bridge.problems.values())
    rendered_edit(rig, "good.md")


# -- NFC and NFD ----------------------------------------------------------------------------------


def test_nfc_and_nfd_spellings_of_one_name_are_two_distinct_cards(rig: Rig) -> None:
    nfc = unicodedata.normalize("NFC", "Café Ångström.md")
    nfd = unicodedata.normalize("NFD", "Café Ångström.md")
    assert nfc != nfd and nfc.encode() != nfd.encode()
    rig.write(nfc, "composed\n", hint=False)
    scan(rig)
    rig.write(nfd, "decomposed\n")  # appears while running
    rig.settle()
    a, b = rig.card(nfc), rig.card(nfd)
    assert a != b
    assert rig.replica.text(a) == "composed\n" and rig.replica.text(b) == "decomposed\n"
    rendered_edit(rig, nfc, "1:")
    rendered_edit(rig, nfd, "2:")
    assert (rig.root / nfc).read_bytes() == b"1:composed\n"
    assert (rig.root / nfd).read_bytes() == b"2:decomposed\n"
    assert sorted(n["file"] for n in nodes(rig.root)) == sorted([nfc, nfd])
    assert sorted(os.listdir(rig.root)) == sorted([nfc, nfd, "board.canvas"])


# -- case-only renames ----------------------------------------------------------------------------


def test_a_case_only_rename_keeps_the_card(rig: Rig) -> None:
    rig.write("notes.md", "x\n")
    rig.settle()
    card = rig.card("notes.md")
    os.rename(rig.root / "notes.md", rig.root / "Notes.md")
    rig.bridge.on_event(FsEvent("moved", "notes.md", "Notes.md"))
    rig.settle()
    assert rig.card("Notes.md") == card
    assert paths(rig) == {"Notes.md"}
    assert [(n["id"], n["file"]) for n in nodes(rig.root)] == [(card, "Notes.md")]
    rendered_edit(rig, "Notes.md")


def test_a_case_only_rename_of_a_folder_keeps_its_cards(rig: Rig) -> None:
    rig.write("plans/q1.md", "q1\n", hint=False)
    scan(rig)
    ids = {rig.card("plans"), rig.card("plans/q1.md")}
    os.rename(rig.root / "plans", rig.root / "Plans")
    rig.bridge.on_event(FsEvent("moved", "plans", "Plans", is_dir=True))
    rig.settle()
    assert {rig.card("Plans"), rig.card("Plans/q1.md")} == ids
    assert paths(rig) == {"Plans", "Plans/q1.md"}


def test_a_case_only_rename_while_stopped_keeps_the_card(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(space, Store.open(store_path))
    first.write("readme.md", "read me\n")
    first.settle()
    card = first.card("readme.md")
    first.bridge.dispose()
    first.store.close()
    os.rename(space / "readme.md", space / "README.md")
    second = Rig(space, Store.open(store_path))
    scan(second)
    assert second.card("README.md") == card
    assert paths(second) == {"README.md"}
    second.bridge.dispose()
    second.store.close()


# -- symlinks -------------------------------------------------------------------------------------


def test_symlinks_are_never_cards_never_followed_and_never_written_through(
    rig: Rig, outside: Path
) -> None:
    rig.write("real.md", "real\n", hint=False)
    (rig.root / "Sub").mkdir()
    links = {
        "inside.md": "real.md",
        "Sub/up.md": "../real.md",
        "outside.md": str(outside / "secret.md"),
        "outdir": str(outside / "dir"),
        "parent": "..",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "self.md": "self.md",
        "dangling.md": "does-not-exist.md",
    }
    for link, target in links.items():
        os.symlink(target, rig.root / link)
    before = tree(outside)
    scan(rig)
    for link in links:  # watcher-shaped events for every link, and for paths through them
        rig.bridge.on_event(FsEvent("created", link))
        rig.bridge.on_event(FsEvent("modified", link))
    for through in ("outdir/x.md", "parent/outside/secret.md", "loop-a/x.md"):
        rig.bridge.on_event(FsEvent("modified", through))
    rig.settle()
    assert paths(rig) == {"real.md", "Sub"}
    assert {n["file"] for n in nodes(rig.root)} == {"real.md", "Sub/board.canvas"}
    rendered_edit(rig, "real.md")
    # Layout churn on every board, then a rescan: still nothing written through a link.
    (rig.root / "new.md").write_text("new\n")
    rig.bridge.on_event(FsEvent("created", "new.md"))
    rig.settle()
    scan(rig)
    assert tree(outside) == before
    for link, target in links.items():
        assert os.readlink(rig.root / link) == target, f"{link} was replaced"
    assert paths(rig) == {"real.md", "new.md", "Sub"}


def test_a_card_file_replaced_by_a_symlink_to_outside_is_never_read_through(
    rig: Rig, outside: Path
) -> None:
    rig.write("a.md", "mine\n")
    rig.settle()
    card = rig.card("a.md")
    before = tree(outside)
    os.unlink(rig.root / "a.md")
    os.symlink(outside / "secret.md", rig.root / "a.md")
    rig.bridge.on_event(FsEvent("deleted", "a.md"))
    rig.bridge.on_event(FsEvent("created", "a.md"))
    rig.settle()
    if rig.replica.cards().get(card) is not None:
        rig.api_edit(card, 0, "E:")
        rig.settle(5)
        assert "outside secret" not in rig.replica.text(card)
    assert tree(outside) == before
    assert os.readlink(rig.root / "a.md") == str(outside / "secret.md")
    assert rig.replica.card_at("a.md") is None, "a symlink is never a card"


def test_a_canvas_node_naming_a_symlink_does_not_read_through_it(rig: Rig, outside: Path) -> None:
    os.symlink(outside / "secret.md", rig.root / "link.md")
    scan(rig)
    canvas = json.loads((rig.root / "board.canvas").read_bytes())
    canvas["nodes"].append(
        {"id": "n-link", "type": "file", "file": "link.md", "x": 0, "y": 0, "width": 9, "height": 9}
    )
    rig.write("board.canvas", json.dumps(canvas))
    rig.settle()
    leaked = [
        c.path
        for c in rig.replica.cards().values()
        if c.kind == "text" and "outside secret" in rig.replica.text(c.id)
    ]
    assert leaked == []
    assert rig.replica.card_at("link.md") is None


def test_a_symlink_to_a_folder_inside_is_never_a_second_board(rig: Rig) -> None:
    rig.write("Sub/x.md", "x\n", hint=False)
    os.symlink("Sub", rig.root / "alias")
    scan(rig)
    sub_canvas = (rig.root / "Sub" / "board.canvas").read_bytes()
    canvas = json.loads((rig.root / "board.canvas").read_bytes())
    canvas["nodes"].append(
        {
            "id": "n-alias",
            "type": "file",
            "file": "alias/x.md",
            "x": 0,
            "y": 900,
            "width": 9,
            "height": 9,
        }
    )
    rig.write("board.canvas", json.dumps(canvas))
    rig.settle()
    assert not [p for p in paths(rig) if p == "alias" or p.startswith("alias/")]
    assert [n["file"] for n in nodes(rig.root, "Sub")] == ["Sub/x.md"]
    assert (rig.root / "Sub" / "board.canvas").read_bytes() == sub_canvas


def test_a_board_canvas_symlink_to_outside_is_not_read(rig: Rig, outside: Path) -> None:
    rig.write("a.md", "a\n", hint=False)
    os.symlink(outside / "other.canvas", rig.root / "board.canvas")
    before = tree(outside)
    scan(rig)
    assert rig.replica.cards().get("outsider") is None
    assert paths(rig) == {"a.md"}
    assert tree(outside) == before
    assert any("board.canvas" in p for p in rig.bridge.problems.values())


# -- FIFOs ----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_fifo_is_skipped_and_never_opened(rig: Rig) -> None:
    os.mkfifo(rig.root / "pipe.md")
    (rig.root / "Sub").mkdir()
    os.mkfifo(rig.root / "Sub" / "pipe")
    rig.write("good.md", "good\n", hint=False)
    fifos = [rig.root / "pipe.md", rig.root / "Sub" / "pipe"]

    with fifo_guard(fifos) as blocked:
        scan(rig)
        for rel in ("pipe.md", "Sub/pipe"):
            rig.bridge.on_event(FsEvent("created", rel))
            rig.bridge.on_event(FsEvent("modified", rel))
        rig.settle()
    assert blocked == [], "Tack opened a FIFO and blocked"
    assert paths(rig) == {"good.md", "Sub"}
    rendered_edit(rig, "good.md")


@pytest.mark.timeout(60)
def test_a_canvas_node_naming_a_fifo_does_not_block(rig: Rig) -> None:
    os.mkfifo(rig.root / "pipe.md")
    rig.write("good.md", "good\n", hint=False)
    scan(rig)
    canvas = json.loads((rig.root / "board.canvas").read_bytes())
    canvas["nodes"].append(
        {
            "id": "n-pipe",
            "type": "file",
            "file": "pipe.md",
            "x": 0,
            "y": 900,
            "width": 9,
            "height": 9,
        }
    )

    with fifo_guard([rig.root / "pipe.md"]) as blocked:
        rig.write("board.canvas", json.dumps(canvas))
        rig.settle()
    assert blocked == [], "Tack opened a FIFO and blocked"
    assert rig.replica.card_at("pipe.md") is None


@pytest.mark.timeout(60)
def test_a_card_file_replaced_by_a_fifo_does_not_block_its_next_render(rig: Rig) -> None:
    rig.write("a.md", "mine\n")
    rig.write("good.md", "good\n")
    rig.settle()
    card = rig.card("a.md")
    os.unlink(rig.root / "a.md")
    os.mkfifo(rig.root / "a.md")

    with fifo_guard([rig.root / "a.md"]) as blocked:
        rig.bridge.on_event(FsEvent("deleted", "a.md"))
        rig.bridge.on_event(FsEvent("created", "a.md"))
        rig.settle()
        if rig.replica.cards().get(card) is not None:
            rig.api_edit(card, 0, "E:")
        rig.settle()
    assert blocked == [], "Tack opened a FIFO and blocked"
    rendered_edit(rig, "good.md")


@pytest.mark.timeout(60)
def test_a_fifo_named_board_canvas_does_not_block_start_up(rig: Rig) -> None:
    os.mkfifo(rig.root / "board.canvas")
    rig.write("good.md", "good\n", hint=False)
    with fifo_guard([rig.root / "board.canvas"]) as blocked:
        scan(rig)
    assert blocked == [], "start-up blocked on the FIFO"
    assert stat_is_fifo(rig.root / "board.canvas")
    assert any("board.canvas" in p for p in rig.bridge.problems.values())


@pytest.mark.timeout(60)
def test_status_does_not_block_on_a_fifo_named_board_canvas(tmp_path: Path) -> None:
    from fsbridge.spacedir import init_space
    from fsbridge.status import status as space_status

    space, _ = init_space(tmp_path / "space")
    os.mkfifo(space.root / "board.canvas")
    with fifo_guard([space.root / "board.canvas"]) as blocked:
        report = space_status(space)
    assert blocked == [], "tack status blocked on the FIFO"
    assert any("board.canvas" in p for p in report["problems"])


def stat_is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# -- a file that keeps growing while it is read ----------------------------------------------------


def test_a_file_that_grows_while_read_ends_with_its_final_content(rig: Rig) -> None:
    rig.write("grow.md", "start\n")
    rig.settle()
    card = rig.card("grow.md")
    lines = [f"line {i}: héllo 😀 wörld\n".encode() for i in range(30_000)]
    stop = threading.Event()

    def append() -> None:
        with open(rig.root / "grow.md", "ab", buffering=0) as f:
            for line in lines:
                if stop.is_set():
                    break
                cut = line.index("😀".encode()) + 2  # split a 4-byte character across writes
                f.write(line[:cut])
                f.write(line[cut:])

    writer = threading.Thread(target=append)
    writer.start()
    rounds = 0
    while writer.is_alive():
        rig.bridge.on_event(FsEvent("modified", "grow.md"))
        rig.scheduler.advance_by(0.05)  # past the debounce: reads while the file grows
        rounds += 1
        if rounds > 400:
            stop.set()
    writer.join()
    rig.bridge.on_event(FsEvent("modified", "grow.md"))
    rig.settle()
    final = (rig.root / "grow.md").read_bytes()
    assert final.startswith(b"start\n" + lines[0])
    assert final == b"start\n" + b"".join(lines[: final.count(b"\n") - 1])
    view = rig.replica.cards()[card]
    assert view.kind == "text"
    assert rig.replica.text(card).encode() == final
    assert rounds > 1, "the file never grew while Tack read it"


# -- board.canvas: invalid, not a canvas, huge ----------------------------------------------------

BAD_CANVASES = {
    "truncated-json": b'{"nodes": [ {"id": "oops"',
    "empty-file": b"",
    "not-utf8": b"\xff\xfe{\x00}\x00",
    "trailing-garbage": b'{"nodes": [], "edges": []} trailing',
    "nan": b'{"nodes": [{"id": "n", "type": "text", "text": "", "x": NaN, "y": 0, '
    b'"width": 1, "height": 1}]}',
    "array": b"[]",
    "string": b'"a canvas?"',
    "null": b"null",
    "nodes-is-object": b'{"nodes": {"id": "n"}}',
    "node-without-id": b'{"nodes": [{"type": "text", "text": "x", "x": 0, "y": 0, '
    b'"width": 1, "height": 1}]}',
    "duplicate-ids": b'{"nodes": ['
    + b'{"id": "d", "type": "group", "x": 0, "y": 0, "width": 1, "height": 1},'
    + b'{"id": "d", "type": "group", "x": 5, "y": 0, "width": 1, "height": 1}]}',
    "edge-without-ends": b'{"nodes": [], "edges": [{"id": "e"}]}',
    "deep-nesting": b'{"nodes": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


@pytest.mark.parametrize("board", ["", "Sub"], ids=["home", "nested"])
@pytest.mark.parametrize("bad", list(BAD_CANVASES.values()), ids=list(BAD_CANVASES))
def test_a_broken_canvas_is_reported_never_overwritten_and_cards_keep_syncing(
    tmp_path: Path, board: str, bad: bytes
) -> None:
    space = tmp_path / "space"
    space.mkdir()
    rig = Rig(space)
    prefix = f"{board}/" if board else ""
    rig.write(f"{prefix}a.md", "alpha\n", hint=False)
    rig.write("other.md", "other\n", hint=False)
    scan(rig)
    canvas_rel = f"{prefix}board.canvas"
    # Broken while running ...
    rig.write(canvas_rel, bad)
    rig.settle()
    assert any(canvas_rel in p for p in rig.bridge.problems.values()), rig.bridge.problems
    # ... cards of that board and of others keep syncing, and the canvas is left alone.
    rendered_edit(rig, f"{prefix}a.md")
    rendered_edit(rig, "other.md")
    rig.write(f"{prefix}b.md", "arrived while broken\n")
    rig.settle()
    assert rig.replica.card_at(f"{prefix}b.md") is not None
    scan(rig)  # a rescan (start-up, watcher overflow) leaves it alone too
    assert (space / canvas_rel).read_bytes() == bad
    # Fixed by the user: the problem clears and the file nodes come back.
    rig.write(canvas_rel, json.dumps({"nodes": [], "edges": []}))
    rig.settle()
    assert not rig.bridge.problems
    expected = {f"{prefix}a.md", f"{prefix}b.md"} | ({"other.md"} if not board else set())
    assert {n["file"] for n in nodes(space, board)} == expected
    rig.bridge.dispose()


def test_a_canvas_broken_while_tack_was_stopped_is_reported_at_start_up(tmp_path: Path) -> None:
    space = tmp_path / "space"
    space.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(space, Store.open(store_path))
    first.write("a.md", "alpha\n")
    first.settle()
    first.bridge.dispose()
    first.store.close()
    bad = b'{"nodes": "not an array"}'
    (space / "board.canvas").write_bytes(bad)
    (space / "b.md").write_text("new while stopped\n")
    second = Rig(space, Store.open(store_path))
    scan(second)
    assert any("board.canvas" in p for p in second.bridge.problems.values())
    assert (space / "board.canvas").read_bytes() == bad
    assert paths(second) == {"a.md", "b.md"}
    rendered_edit(second, "b.md")
    second.bridge.dispose()
    second.store.close()


def _big_canvas(base: dict[str, Any], size: int) -> bytes:
    """A valid canvas of at least ``size`` bytes: the base nodes, a big note, a big unknown
    top-level field (kept as is), and 2,000 group nodes."""
    canvas = dict(base)
    canvas["nodes"] = [
        *base["nodes"],
        *(
            {"id": f"g{i}", "type": "group", "label": f"group {i}", "x": 0, "y": -1000 - i * 500}
            | {"width": 100, "height": 100}
            for i in range(2_000)
        ),
        {
            "id": "big-note",
            "type": "text",
            "text": "".join(f"note line {i} ✓\n" for i in range(100_000)),
            "x": -5000,
            "y": 0,
            "width": 400,
            "height": 400,
        },
    ]
    data = json.dumps(canvas).encode()
    canvas["pluginData"] = "p" * max(0, size - len(data))
    return json.dumps(canvas).encode()


def test_a_50_mb_canvas_is_handled_and_cards_keep_syncing(rig: Rig) -> None:
    rig.write("a.md", "alpha\n", hint=False)
    scan(rig)
    card = rig.card("a.md")
    base = json.loads((rig.root / "board.canvas").read_bytes())
    data = _big_canvas(base, 50 * MiB)
    assert len(data) >= 50 * MiB
    rig.write("board.canvas", data)
    rig.settle(5)
    assert not rig.bridge.problems
    assert len(rig.replica.cards()) == 2_002
    assert rig.replica.text("big-note").startswith("note line 0 ✓\n")
    # A layout edit in the huge file still applies, and cards keep syncing both ways.
    canvas = json.loads((rig.root / "board.canvas").read_bytes())
    for node in canvas["nodes"]:
        if node["id"] == card:
            node["x"] = 4000
    rig.write("board.canvas", json.dumps(canvas))
    rig.settle(5)
    assert rig.replica.cards()[card].geometry()[0] == 4000
    rendered_edit(rig, "a.md")
    rig.write("b.md", "beta\n")
    rig.settle(5)
    again = json.loads((rig.root / "board.canvas").read_bytes())
    assert again["pluginData"] == canvas["pluginData"]
    assert {n.get("file") for n in again["nodes"]} >= {"a.md", "b.md"}


def test_a_canvas_over_the_size_limit_is_reported_and_never_overwritten(rig: Rig) -> None:
    rig.write("a.md", "alpha\n", hint=False)
    scan(rig)
    base = json.loads((rig.root / "board.canvas").read_bytes())
    base["pluginData"] = "p" * (65 * MiB)
    data = json.dumps(base).encode()
    rig.write("board.canvas", data)
    rig.settle()
    assert any("limit" in p for p in rig.bridge.problems.values()), rig.bridge.problems
    rendered_edit(rig, "a.md")
    rig.write("b.md", "beta\n")
    rig.settle()
    assert rig.replica.card_at("b.md") is not None
    assert (rig.root / "board.canvas").read_bytes() == data


# -- the real daemon on a folder full of bad input -------------------------------------------------


@pytest.mark.timeout(300)
def test_tack_up_survives_a_folder_full_of_bad_input(tmp_path: Path) -> None:
    space = (tmp_path / "space").resolve()
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    for d in (space, home, outside / "dir"):
        d.mkdir(parents=True)
    (outside / "secret.md").write_text("outside secret\n")
    (outside / "dir" / "x.md").write_text("outside dir\n")
    run_tack(home, "init", str(space))

    nfc = unicodedata.normalize("NFC", "café.md")
    nfd = unicodedata.normalize("NFD", "café.md")
    long_name = "é" * 126 + ".md"
    deep = "/".join(f"n{i:02d}" for i in range(30))
    text_files: dict[str, bytes] = {
        "good.md": b"good\n",
        "long.md": "".join(f"line {i} ✓\n" for i in range(100_000)).encode(),
        "a\nb.md": b"newline in the name\n",
        nfc: b"composed\n",
        nfd: b"decomposed\n",
        long_name: b"a 255-byte name\n",
        f"{deep}/deep.md": b"deep\n",
        "Broken/inside.md": b"beside a broken canvas\n",
        "NotACanvas/inside.md": b"beside a JSON array\n",
        **{f"Many/m{i:03d}.md": f"many {i}\n".encode() for i in range(300)},
    }
    binary_files = {
        "latin1.md": "café\n".encode("latin-1"),
        "nul.md": b"a\x00b\n",
    }
    for rel, data in {**text_files, **binary_files}.items():
        (space / rel).parent.mkdir(parents=True, exist_ok=True)
        (space / rel).write_bytes(data)
    with open(space / "sparse.bin", "wb") as f:
        f.truncate(64 * MiB)
    broken = b'{"nodes": [ {"id": '
    (space / "Broken" / "board.canvas").write_bytes(broken)
    (space / "NotACanvas" / "board.canvas").write_bytes(b"[]")
    links = {
        "inside.md": "good.md",
        "outside.md": str(outside / "secret.md"),
        "outdir": str(outside / "dir"),
        "loop": "loop",
        "parent": "..",
    }
    for link, target in links.items():
        os.symlink(target, space / link)
    os.mkfifo(space / "pipe.md")
    outside_before = tree(outside)

    daemon = Daemon(space, home, OFFLINE)
    try:
        daemon.start(timeout=120)
        good = set(text_files) | set(binary_files) | {"sparse.bin"}

        def listed() -> dict[str, dict[str, Any]]:
            assert daemon.running, daemon.log()
            found = {p: c for p, c in cards(status(space, home)).items() if c["kind"] != "board"}
            missing = good - set(found)
            assert not missing, f"not yet cards: {sorted(missing)[:5]}"
            return found

        found = wait_until(
            listed, timeout=120, what="every good file as a card", context=daemon.log
        )
        assert set(found) == good, sorted(set(found) ^ good)
        assert {p for p, c in found.items() if c["kind"] == "binary"} == {
            "latin1.md",
            "nul.md",
            "sparse.bin",
        }
        report = status(space, home)
        assert report["running"] is True
        problems = " | ".join(report["problems"])
        assert "Broken/board.canvas" in problems and "NotACanvas/board.canvas" in problems
        texts = card_texts(space)
        for rel, data in text_files.items():
            assert texts[rel].encode() == data, rel

        # A normal card edited afterwards still syncs into status and log.
        with open(space / "good.md", "a", encoding="utf-8") as f:
            f.write("edited after the bad input\n")
        wait_until(
            lambda: card_texts(space)["good.md"] == "good\nedited after the bad input\n",
            what="the edit of good.md in the store",
            context=daemon.log,
        )
        wait_until(
            lambda: any(
                line.endswith("+27 −0 chars") for line in log_lines(space, home, "good.md")
            ),
            what="the edit of good.md in `tack log`",
            context=daemon.log,
        )
        (space / "Broken" / "new.md").write_text("new beside the broken canvas\n")
        wait_until(
            lambda: "Broken/new.md" in cards(status(space, home)),
            what="a new card beside the broken canvas",
            context=daemon.log,
        )
        assert daemon.running, daemon.log()
        assert (space / "Broken" / "board.canvas").read_bytes() == broken
        assert (space / "NotACanvas" / "board.canvas").read_bytes() == b"[]"
        for rel, data in binary_files.items():
            assert (space / rel).read_bytes() == data, rel
        assert tree(outside) == outside_before
        for link, target in links.items():
            assert os.readlink(space / link) == target
        assert stat_is_fifo(space / "pipe.md")
        assert not daemon.troubles(), daemon.log()
    finally:
        code = daemon.stop()
    assert code == 0 and daemon.stopped_cleanly(), daemon.log()
