"""The folder bridge on real files and a real (in-memory) SQLite store, in virtual time.

Every test drives the bridge with hints or watcher-shaped events and advances a
``reactivex.testing.TestScheduler``: no sleeps, no watcher thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from reactivex.testing import TestScheduler

from engine import MemoryBlobs, Origin, Replica, Store
from engine.replica import SPACE_DOC
from engine.spacedoc import TEXT_KEY, set_node_fields
from engine.text_edits import Splice, apply_splices
from fsbridge.bridge import BridgeTiming, FolderBridge, FsEvent
from fsbridge.canvas import parse_canvas

TIMING = BridgeTiming(debounce=0.02, render=0.005, canvas=0.05, delete_grace=0.3)


class Rig:
    """A space folder, a replica on a store, and a bridge on virtual time."""

    def __init__(self, root: Path, store: Store | None = None) -> None:
        self.root = root
        self.store = store or Store.memory()
        self.replica = Replica(self.store, device="test-device")
        self.scheduler = TestScheduler()
        self.blobs = MemoryBlobs()
        self.bridge = FolderBridge(root, self.replica, self.blobs, self.scheduler, TIMING)

    def settle(self, seconds: float = 2.0) -> None:
        self.scheduler.advance_by(seconds)

    def write(self, rel: str, data: str | bytes, hint: bool = True) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        if hint:
            self.bridge.on_event(FsEvent("modified", rel))

    def card(self, rel: str) -> str:
        card = self.replica.card_at(rel)
        assert card is not None, f"no card at {rel}"
        return card.id

    def api_edit(self, card_id: str, pos: int, insert: str) -> None:
        current = self.replica.text(card_id)

        def mutate(doc: object) -> None:
            apply_splices(doc.get(TEXT_KEY, type=Text), current, [Splice(pos, 0, insert)])  # type: ignore[attr-defined]

        self.replica.transact(card_id, Origin.API, mutate)

    def canvas(self, board: str = "") -> dict[str, object]:
        path = self.root / board / "board.canvas" if board else self.root / "board.canvas"
        return json.loads(path.read_text())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.bridge.dispose()


def test_a_burst_of_events_for_one_path_is_one_ingest(rig: Rig) -> None:
    rig.write("a.md", "one")
    for i in range(5):
        rig.scheduler.advance_by(0.005)
        rig.write("a.md", f"version {i}")
    rig.scheduler.advance_by(0.01)
    assert rig.replica.card_at("a.md") is None, "ingested before the path went quiet"
    rig.settle()
    card = rig.card("a.md")
    assert rig.replica.text(card) == "version 4"
    text_rows = [h for h in rig.store.history(card) if h.doc_id == card]
    assert len(text_rows) == 1


def test_scan_makes_cards_and_a_canvas_with_a_node_per_file(rig: Rig) -> None:
    rig.write("Welcome.md", "hello", hint=False)
    rig.write("pic.png", b"\x89PNG\x00\x01", hint=False)
    rig.bridge.scan()
    rig.settle()
    canvas = rig.canvas()
    files = sorted(n["file"] for n in canvas["nodes"])  # type: ignore[index, union-attr]
    assert files == ["Welcome.md", "pic.png"]
    kinds = {c.path: c.kind for c in rig.replica.cards().values()}
    assert kinds == {"Welcome.md": "text", "pic.png": "binary"}
    spots = {(n["x"], n["y"]) for n in canvas["nodes"]}  # type: ignore[index, union-attr]
    assert len(spots) == 2 and all(x % 20 == 0 and y % 20 == 0 for x, y in spots)


def test_our_own_write_is_not_ingested_again(rig: Rig) -> None:
    rig.write("a.md", "hello world")
    rig.settle()
    card = rig.card("a.md")
    rig.api_edit(card, 5, ",")
    rig.settle()
    assert (rig.root / "a.md").read_text() == "hello, world"
    seq = rig.replica.latest_seq(card)
    writes = rig.bridge.writes
    rig.bridge.on_event(FsEvent("modified", "a.md"))  # the watcher's event for our write
    rig.settle()
    assert rig.replica.latest_seq(card) == seq
    assert rig.bridge.writes == writes


def test_render_merges_an_unseen_disk_edit_instead_of_overwriting_it(rig: Rig) -> None:
    rig.write("a.md", "alpha\nbeta\n")
    rig.settle()
    card = rig.card("a.md")
    rig.write("a.md", "alpha\nbeta\ngamma from disk\n", hint=False)  # watcher has not told us
    rig.api_edit(card, 0, "api: ")
    rig.settle()
    on_disk = (rig.root / "a.md").read_text()
    assert on_disk == "api: alpha\nbeta\ngamma from disk\n"
    assert rig.replica.text(card) == on_disk


def test_disk_edit_while_document_moved_on_is_a_three_way_merge(rig: Rig) -> None:
    rig.write("a.md", "one two three")
    rig.settle()
    card = rig.card("a.md")
    rig.api_edit(card, 0, "API ")  # not yet rendered: the file still has the base
    rig.write("a.md", "one two three DISK")
    rig.settle()
    text = rig.replica.text(card)
    assert text == "API one two three DISK"
    assert (rig.root / "a.md").read_text() == text


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.text(alphabet="ab é😀\r\n", min_size=0, max_size=40),
    disk_at=st.integers(min_value=0, max_value=40),
    api_at=st.integers(min_value=0, max_value=40),
)
def test_concurrent_disk_and_document_edits_keep_both_insertions(
    tmp_path_factory: pytest.TempPathFactory, base: str, disk_at: int, api_at: int
) -> None:
    rig = Rig(tmp_path_factory.mktemp("space"))
    rig.write("c.md", base)
    rig.settle()
    card = rig.card("c.md")
    disk_at, api_at = min(disk_at, len(base)), min(api_at, len(base))
    rig.api_edit(card, api_at, "[API]")
    rig.write("c.md", base[:disk_at] + "[DISK]" + base[disk_at:])
    rig.settle()
    text = rig.replica.text(card)
    assert text.count("[API]") == 1 and text.count("[DISK]") == 1
    assert (rig.root / "c.md").read_bytes() == text.encode()
    assert text.replace("[API]", "").replace("[DISK]", "") == base
    rig.bridge.dispose()


def test_rename_keeps_the_card_and_its_layout(rig: Rig) -> None:
    rig.write("a.md", "x")
    rig.settle()
    card = rig.card("a.md")
    x, y = rig.replica.cards()[card].geometry()[:2]
    os.rename(rig.root / "a.md", rig.root / "b.md")
    rig.bridge.on_event(FsEvent("moved", "a.md", "b.md"))
    rig.settle()
    assert rig.card("b.md") == card
    assert rig.replica.card_at("a.md") is None
    nodes = rig.canvas()["nodes"]
    assert [(n["id"], n["file"], n["x"], n["y"]) for n in nodes] == [(card, "b.md", x, y)]  # type: ignore[index, union-attr]


def test_vim_style_save_is_an_edit_not_a_delete_and_a_new_card(rig: Rig) -> None:
    rig.write("a.md", "first")
    rig.settle()
    card = rig.card("a.md")
    os.rename(rig.root / "a.md", rig.root / "a.md~")
    rig.bridge.on_event(FsEvent("moved", "a.md", "a.md~"))
    rig.scheduler.advance_by(0.001)
    rig.write("a.md", "second")
    os.unlink(rig.root / "a.md~")
    rig.bridge.on_event(FsEvent("deleted", "a.md~"))
    rig.settle()
    assert rig.card("a.md") == card
    assert rig.replica.text(card) == "second"
    assert len(rig.replica.cards()) == 1


def test_temp_then_rename_save_is_an_edit(rig: Rig) -> None:
    rig.write("a.md", "first")
    rig.settle()
    card = rig.card("a.md")
    rig.write(".a.md.tmp123", "second")
    os.replace(rig.root / ".a.md.tmp123", rig.root / "a.md")
    rig.bridge.on_event(FsEvent("moved", ".a.md.tmp123", "a.md"))
    rig.settle()
    assert rig.card("a.md") == card
    assert rig.replica.text(card) == "second"
    assert {c.path for c in rig.replica.cards().values()} == {"a.md"}


def test_a_deleted_file_deletes_its_card_after_the_grace_period(rig: Rig) -> None:
    rig.write("a.md", "x")
    rig.settle()
    os.unlink(rig.root / "a.md")
    rig.bridge.on_event(FsEvent("deleted", "a.md"))
    rig.scheduler.advance_by(0.1)
    assert rig.replica.card_at("a.md") is not None
    rig.settle()
    assert rig.replica.card_at("a.md") is None
    assert rig.canvas()["nodes"] == []


def test_moving_a_node_in_the_canvas_updates_the_layout_and_keeps_unknown_fields(rig: Rig) -> None:
    rig.write("a.md", "x")
    rig.settle()
    card = rig.card("a.md")
    canvas = rig.canvas()
    node = canvas["nodes"][0]  # type: ignore[index]
    node["x"] = 1000
    node["myPlugin"] = {"pinned": True}
    canvas["edges"] = []
    canvas["custom"] = "kept"
    rig.write("board.canvas", json.dumps(canvas))
    rig.settle()
    assert rig.replica.cards()[card].geometry()[0] == 1000
    assert rig.replica.cards()[card].node["myPlugin"] == {"pinned": True}
    rig.api_edit(card, 0, "y")  # another change re-renders; the fields survive
    rig.settle()
    again = rig.canvas()
    assert again["custom"] == "kept"
    assert again["nodes"][0]["myPlugin"] == {"pinned": True}  # type: ignore[index]


def test_a_canvas_that_does_not_parse_is_reported_and_never_overwritten(rig: Rig) -> None:
    rig.write("a.md", "x")
    rig.settle()
    broken = b'{"nodes": [ {"id": "oops"'
    rig.write("board.canvas", broken)
    rig.settle()
    assert any("board.canvas" in p for p in rig.bridge.problems.values())
    rig.write("b.md", "new card wants a node")
    rig.settle()
    assert (rig.root / "board.canvas").read_bytes() == broken
    fixed = json.dumps({"nodes": [], "edges": []})
    rig.write("board.canvas", fixed)
    rig.settle()
    assert not rig.bridge.problems
    files = {n.get("file") for n in rig.canvas()["nodes"]}  # type: ignore[union-attr]
    assert files == {"a.md", "b.md"}  # file cards removed from the canvas come back


def test_text_and_link_nodes_added_in_the_canvas_become_cards(rig: Rig) -> None:
    rig.write(
        "board.canvas",
        json.dumps(
            {
                "nodes": [
                    {
                        "id": "n1",
                        "type": "text",
                        "text": "a note ✓",
                        "x": 0,
                        "y": 0,
                        "width": 200,
                        "height": 100,
                    },
                    {
                        "id": "l1",
                        "type": "link",
                        "url": "https://example.org",
                        "x": 300,
                        "y": 0,
                        "width": 200,
                        "height": 100,
                    },
                ],
                "edges": [{"id": "e1", "fromNode": "n1", "toNode": "l1"}],
            }
        ),
    )
    rig.settle()
    cards = rig.replica.cards()
    assert cards["n1"].kind == "note" and rig.replica.text("n1") == "a note ✓"
    assert cards["l1"].kind == "link"
    canvas = rig.canvas()
    canvas["nodes"][0]["text"] = "a longer note ✓"  # type: ignore[index]
    rig.write("board.canvas", json.dumps(canvas))
    rig.settle()
    assert rig.replica.text("n1") == "a longer note ✓"
    assert [e["id"] for e in rig.canvas()["edges"]] == ["e1"]  # type: ignore[union-attr]


def test_a_subfolder_is_a_nested_board(rig: Rig) -> None:
    (rig.root / "Roadmap").mkdir()
    rig.bridge.on_event(FsEvent("created", "Roadmap", is_dir=True))
    rig.write("Roadmap/Q1.md", "plan")
    rig.settle()
    board = rig.replica.card_at("Roadmap")
    assert board is not None and board.kind == "board"
    home = rig.canvas()
    assert [n["file"] for n in home["nodes"]] == ["Roadmap/board.canvas"]  # type: ignore[union-attr]
    sub = rig.canvas("Roadmap")
    assert [n["file"] for n in sub["nodes"]] == ["Roadmap/Q1.md"]  # type: ignore[union-attr]


def test_moving_a_folder_keeps_every_card(rig: Rig) -> None:
    for name in ("a.md", "b.md"):
        rig.write(f"Old/{name}", name)
    rig.bridge.on_event(FsEvent("created", "Old", is_dir=True))
    rig.settle()
    ids = {rig.card("Old/a.md"), rig.card("Old/b.md"), rig.card("Old")}
    os.rename(rig.root / "Old", rig.root / "New")
    rig.bridge.on_event(FsEvent("moved", "Old", "New", is_dir=True))
    rig.settle()
    assert {rig.card("New/a.md"), rig.card("New/b.md"), rig.card("New")} == ids
    assert {n["file"] for n in rig.canvas("New")["nodes"]} == {"New/a.md", "New/b.md"}  # type: ignore[union-attr]


def test_binary_card_is_stored_by_hash(rig: Rig) -> None:
    data = bytes(range(256)) * 10
    rig.write("img.bin", data)
    rig.settle()
    card = rig.replica.cards()[rig.card("img.bin")]
    assert card.kind == "binary" and rig.blobs.get(card.blob) == data


def test_edits_made_while_stopped_are_ingested_as_edits(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(root, Store.open(store_path))
    first.write("keep.md", "keep me")
    first.write("edit.md", "line one\n")
    first.write("move.md", "moving along")
    first.write("gone.md", "bye")
    first.settle()
    ids = {p: first.card(p) for p in ("keep.md", "edit.md", "move.md")}
    first.bridge.dispose()
    first.store.close()
    # Tack is stopped: edit, rename and delete.
    (root / "edit.md").write_text("line one\nline two\n")
    os.rename(root / "move.md", root / "moved.md")
    os.unlink(root / "gone.md")
    stamps = {p: os.stat(root / p).st_ino for p in ("keep.md", "edit.md", "moved.md")}
    second = Rig(root, Store.open(store_path))
    second.bridge.scan()
    second.settle()
    assert second.card("edit.md") == ids["edit.md"]
    assert second.replica.text(ids["edit.md"]) == "line one\nline two\n"
    assert second.card("moved.md") == ids["move.md"]
    assert second.replica.card_at("gone.md") is None
    assert second.card("keep.md") == ids["keep.md"]
    files = sorted(n["file"] for n in parse_canvas((root / "board.canvas").read_bytes()).nodes)
    assert files == ["edit.md", "keep.md", "moved.md"]
    # Only the canvas changed (written at start-up, and again once the delete of gone.md
    # was confirmed after the grace period); no card file was rewritten.
    assert {p: os.stat(root / p).st_ino for p in stamps} == stamps
    second.store.close()


def test_a_restart_scan_writes_nothing_for_unchanged_files(tmp_path: Path) -> None:
    """At a restart, files that still hold their base cost no transaction; an edited file
    is taken in, and a peer's change that was stored but not written is written."""
    root = tmp_path / "space"
    root.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(root, Store.open(store_path))
    names = [f"b/card-{i:03}.md" for i in range(100)]
    for name in names:
        first.write(name, f"{name}\n")
    first.settle()
    ids = {n: first.card(n) for n in names}
    # A peer's edit of card-007, stored here but not yet written to its file (Tack stopped
    # before the render).
    first.bridge.dispose()
    first.api_edit(ids["b/card-007.md"], 0, "peer: ")
    first.replica.close()
    first.store.close()
    (root / "b/card-042.md").write_text("b/card-042.md\nedited while stopped\n")
    second = Rig(root, Store.open(store_path))
    seqs_before = second.store.latest_seqs()
    writes: list[str] = []
    second.replica.changes.subscribe(lambda change: writes.append(change.doc_id))
    second.bridge.scan()
    assert writes == [ids["b/card-042.md"]]  # one transaction, for the edited file only
    assert second.store.latest_seqs()[ids["b/card-001.md"]] == seqs_before[ids["b/card-001.md"]]
    second.settle()
    assert second.replica.text(ids["b/card-042.md"]) == "b/card-042.md\nedited while stopped\n"
    assert (root / "b/card-007.md").read_text() == "peer: b/card-007.md\n"
    assert second.replica.text(ids["b/card-007.md"]) == "peer: b/card-007.md\n"
    second.store.close()


def test_a_start_up_scan_told_to_leave_the_canvases_to_the_flush_renders_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    store_path = tmp_path / "store.sqlite"
    first = Rig(root, Store.open(store_path))
    for board in ("a", "b"):
        first.write(f"{board}/card.md", board)
    first.settle()
    first.bridge.dispose()
    first.store.close()
    rendered: list[str] = []
    real = FolderBridge.render_canvas

    def counting(self: FolderBridge, board: str) -> None:
        rendered.append(board)
        real(self, board)

    monkeypatch.setattr(FolderBridge, "render_canvas", counting)
    second = Rig(root, Store.open(store_path))
    second.bridge.scan(canvases=False)
    second.bridge.flush_canvas_now()
    second.settle()
    assert sorted(rendered) == ["", "a", "b"]  # once each, not again after the debounce
    assert [n["file"] for n in second.canvas("a")["nodes"]] == ["a/card.md"]  # type: ignore[index]
    rendered.clear()
    second.bridge.scan()  # the default (a watcher overflow): the scan renders them itself
    second.settle()
    assert {"a", "b"} <= set(rendered)
    second.store.close()


def test_ignored_files_never_become_cards(rig: Rig) -> None:
    for name in ("a.md.swp", ".a.md.swp", "a.md~", ".#a.md", "4913", ".git/config"):
        rig.write(name, "junk")
    (rig.root / ".tackignore").write_text("secret/\n")
    rig.write("secret/x.md", "hidden")
    rig.bridge.scan()
    rig.settle()
    assert {c.path for c in rig.replica.cards().values()} == {".tackignore"}


def test_a_closed_file_is_taken_in_at_once_without_the_debounce(rig: Rig) -> None:
    rig.write("a.md", "one\n")
    rig.settle()
    card = rig.card("a.md")
    (rig.root / "a.md").write_bytes(b"one\ntwo\n")
    rig.bridge.on_event(FsEvent("modified", "a.md"))
    rig.bridge.on_event(FsEvent("closed", "a.md"))
    rig.scheduler.advance_by(TIMING.debounce / 10)  # far less than the debounce
    assert rig.replica.text(card) == "one\ntwo\n"
    rig.settle()
    assert rig.replica.text(card) == "one\ntwo\n"  # the debounced look finds nothing new


def test_files_closed_in_one_turn_are_taken_in_together_in_the_next(rig: Rig) -> None:
    """A checkout: hundreds of files rewritten and closed at once."""
    names = [f"b/card-{i:03}.md" for i in range(200)]
    for name in names:
        rig.write(name, f"{name}\nversion one\n")
    rig.settle()
    cards = {name: rig.card(name) for name in names}
    turns: list[float] = []
    clock = rig.scheduler
    rig.replica.changes.subscribe(lambda _: turns.append(clock.to_seconds(clock.clock)))
    for name in names:
        (rig.root / name).write_bytes(f"{name}\nversion two\n".encode())
    for name in names:
        rig.bridge.on_event(FsEvent("modified", name))
        rig.bridge.on_event(FsEvent("closed", name))
        rig.bridge.on_event(FsEvent("closed", name))  # closed twice: taken in once
    rig.scheduler.advance_by(TIMING.debounce / 10)
    assert all(rig.replica.text(cards[n]) == f"{n}\nversion two\n" for n in names)
    assert len(turns) == len(names) and len(set(turns)) == 1
    rig.settle()
    assert len(turns) == len(names)  # the debounced looks find nothing new


def test_a_file_still_held_open_for_writing_waits_for_its_writer(rig: Rig) -> None:
    rig.write("a.md", "one\ntwo\n")
    rig.settle()
    card = rig.card("a.md")
    editor = os.open(rig.root / "a.md", os.O_WRONLY | os.O_TRUNC)  # an in-place save begins
    try:
        rig.bridge.on_event(FsEvent("modified", "a.md"))
        rig.settle(5.0)
        assert rig.replica.text(card) == "one\ntwo\n"  # the empty file was not taken in
        os.write(editor, b"one\ntwo\nthree\n")
    finally:
        os.close(editor)
    rig.bridge.on_event(FsEvent("closed", "a.md"))
    rig.settle()
    assert rig.replica.text(card) == "one\ntwo\nthree\n"


def test_the_canvases_of_many_boards_are_written_together(tmp_path: Path) -> None:
    """Boards whose canvases fall due at once (a join's first space update re-checks them
    all) share one durable transaction for their write intents, and each canvas holds its
    own board's cards."""
    store = Store.open(tmp_path / ".tack" / "store.sqlite")
    rig = Rig(tmp_path, store)
    boards = [f"board{i}" for i in range(6)]
    for board in boards:
        rig.write(f"{board}/card.md", f"a card on {board}\n")
    durable: list[str] = []
    store._conn.set_trace_callback(
        lambda sql: durable.append(sql) if sql == "PRAGMA synchronous=FULL" else None
    )
    rig.scheduler.advance_by(TIMING.debounce * 2)  # the cards are taken in ...
    assert not any((tmp_path / b / "board.canvas").exists() for b in boards)
    rig.settle()  # ... and their canvases written
    store._conn.set_trace_callback(None)
    for board in boards:
        nodes = rig.canvas(board)["nodes"]
        assert [n["file"] for n in nodes] == [f"{board}/card.md"]  # type: ignore[index]
    assert len(durable) <= 2, durable  # the boards' canvases, and the root's
    rig.bridge.dispose()
    store.close()


def test_notes_rendered_with_other_boards_keep_their_own_board_s_base(rig: Rig) -> None:
    """When several boards' canvases are rendered together (from the cards grouped by
    board once), each note's new base is its own board's canvas, with its own text."""
    boards = ["left", "right"]
    for board in boards:
        rig.write(f"{board}/card.md", f"a card on {board}\n")
    rig.settle()
    for board in boards:
        canvas = rig.canvas(board)
        note = {"id": f"note-{board}", "type": "text", "text": f"on {board} ✓"}
        canvas["nodes"].append({**note, "x": 0, "y": 0, "width": 10, "height": 10})  # type: ignore[attr-defined]
        rig.write(f"{board}/board.canvas", json.dumps(canvas))
    rig.settle()
    ids = [rig.card(f"{board}/card.md") for board in boards]

    def move_both(doc: Doc[Any]) -> None:  # a peer's layout change touching both boards
        for card_id in ids:
            set_node_fields(doc, card_id, {"x": 50})

    rig.replica.transact(SPACE_DOC, Origin.API, move_both)
    rig.settle()
    for board in boards:
        base = rig.store.get_base(f"note-{board}")
        assert base is not None and base.path == f"{board}/board.canvas"
        assert base.content == f"on {board} ✓".encode()
        assert [n["x"] for n in rig.canvas(board)["nodes"] if n.get("file")] == [50]  # type: ignore[union-attr,index]
