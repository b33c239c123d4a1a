"""Several devices in one process: real folders, real bridges, real sessions, fake wires.

Each device has its own temp folder, store and bridge; all share one virtual clock
(``TestScheduler``) and an in-memory network (:mod:`engine.memnet`) that can be partitioned
and healed.  No sockets, no sleeps.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex.testing import TestScheduler

from engine import MemoryBlobs, Replica, Store
from engine.memnet import MemoryDevice, MemoryNetwork
from engine.sharelink import SpaceKeys, new_space_keys, read_only
from fsbridge.bridge import LOG_EACH_WRITE_UP_TO, BridgeTiming, FolderBridge, FsEvent

TIMING = BridgeTiming(debounce=0.02, render=0.005, canvas=0.05, delete_grace=0.3)


class Device:
    def __init__(self, name: str, root: Path, keys: SpaceKeys, scheduler: TestScheduler) -> None:
        self.name = name
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.replica = Replica(Store.memory(), device=name)
        self.blobs = MemoryBlobs()
        self.bridge = FolderBridge(root, self.replica, self.blobs, scheduler, TIMING)
        self.node = MemoryDevice(name, self.replica, self.blobs, keys, self.bridge.blob_arrived)

    def write(self, rel: str, data: str | bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        self.bridge.on_event(FsEvent("modified", rel))

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text(encoding="utf-8")

    def files(self) -> dict[str, bytes]:
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != ".tack"]
            for name in filenames:
                path = Path(dirpath) / name
                out[path.relative_to(self.root).as_posix()] = path.read_bytes()
        return out


class World:
    def __init__(self, tmp: Path, count: int, keys: SpaceKeys | None = None) -> None:
        self.scheduler = TestScheduler()
        self.keys = keys or new_space_keys()
        self.net = MemoryNetwork()
        self.devices = [
            Device(f"d{i}", tmp / f"d{i}", self.keys, self.scheduler) for i in range(count)
        ]
        for i, a in enumerate(self.devices):
            for b in self.devices[i + 1 :]:
                self.net.connect(a.node, b.node)

    def settle(self, rounds: int = 60) -> None:
        quiet = 0
        for _ in range(rounds):
            self.scheduler.advance_by(0.5)
            moved = self.net.flush()
            quiet = quiet + 1 if moved == 0 else 0
            if quiet >= 3:
                return
        raise AssertionError("devices did not go quiet")

    def assert_converged(self) -> dict[str, bytes]:
        first = self.devices[0].files()
        for other in self.devices[1:]:
            assert other.files() == first, f"{other.name} differs from {self.devices[0].name}"
        return first


@pytest.fixture
def pair(tmp_path: Path) -> World:
    return World(tmp_path, 2)


def test_a_new_card_and_its_edits_reach_the_other_device(pair: World) -> None:
    a, b = pair.devices
    a.write("Welcome.md", "hello ✓\n")
    pair.settle()
    assert b.read("Welcome.md") == "hello ✓\n"
    b.write("Welcome.md", "hello ✓\nfrom b\n")
    pair.settle()
    assert a.read("Welcome.md") == "hello ✓\nfrom b\n"
    pair.assert_converged()


def test_concurrent_edits_to_one_card_merge(pair: World) -> None:
    a, b = pair.devices
    a.write("c.md", "one\ntwo\nthree\n")
    pair.settle()
    pair.net.partition("d0", "d1")
    a.write("c.md", "ONE\ntwo\nthree\n")
    b.write("c.md", "one\ntwo\nthree\nfour\n")
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    assert a.read("c.md") == "ONE\ntwo\nthree\nfour\n"
    pair.assert_converged()


def test_binary_cards_travel_by_hash(pair: World) -> None:
    a, b = pair.devices
    data = random.Random(1).randbytes(1_300_000)
    a.write("big.bin", data)
    pair.settle()
    assert (b.root / "big.bin").read_bytes() == data


def test_renames_and_folders_sync_and_keep_ids(pair: World) -> None:
    a, b = pair.devices
    a.write("Plans/q1.md", "ship")
    pair.settle()
    card = a.replica.card_at("Plans/q1.md")
    assert card is not None
    os.rename(a.root / "Plans/q1.md", a.root / "Plans/q2.md")
    a.bridge.on_event(FsEvent("moved", "Plans/q1.md", "Plans/q2.md"))
    pair.settle()
    assert not (b.root / "Plans/q1.md").exists()
    assert b.read("Plans/q2.md") == "ship"
    moved = b.replica.card_at("Plans/q2.md")
    assert moved is not None and moved.id == card.id
    pair.assert_converged()


def test_a_read_only_peer_receives_but_its_updates_are_refused(tmp_path: Path) -> None:
    world = World(tmp_path, 2)
    writer, reader = world.devices
    reader.node.keys = read_only(world.keys)
    world.net.partition("d0", "d1")
    world.net.heal("d0", "d1")  # new sessions with the read-only keys
    writer.write("doc.md", "from the writer")
    world.settle()
    assert reader.read("doc.md") == "from the writer"
    reader.write("doc.md", "the reader scribbles")
    world.settle()
    assert writer.read("doc.md") == "from the writer"
    assert reader.read("doc.md") == "the reader scribbles"  # stays local


def test_a_peer_with_the_wrong_secret_learns_nothing(tmp_path: Path) -> None:
    world = World(tmp_path, 2)
    honest, stranger = world.devices
    stranger.node.keys = new_space_keys(world.keys.space_id)  # same id, wrong secret
    world.net.partition("d0", "d1")
    world.net.heal("d0", "d1")
    honest.write("secret.md", "do not leak")
    world.settle()
    assert not (stranger.root / "secret.md").exists()
    assert any("does not share this space" in r for r in world.net.closed_reasons())


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    count=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    steps=st.integers(min_value=5, max_value=25),
)
def test_random_edits_while_partitioned_converge_with_every_insertion(
    tmp_path_factory: pytest.TempPathFactory, count: int, seed: int, steps: int
) -> None:
    rng = random.Random(seed)
    world = World(tmp_path_factory.mktemp("world"), count)
    cards = ["a.md", "b.md"]
    world.devices[0].write("a.md", "alpha\n")
    world.devices[0].write("b.md", "beta ✓\n")
    world.settle()
    tokens: list[str] = []
    names = [d.name for d in world.devices]
    for step in range(steps):
        action = rng.random()
        if action < 0.2:
            x, y = rng.sample(names, 2)
            world.net.partition(x, y)
        elif action < 0.3:
            x, y = rng.sample(names, 2)
            world.net.heal(x, y)
        else:
            device = rng.choice(world.devices)
            card = rng.choice(cards)
            text = device.read(card)
            # Insert between tokens, never inside one, so each stays findable whole.
            depth, allowed = 0, [0]
            for i, ch in enumerate(text):
                depth += {"<": 1, ">": -1}.get(ch, 0)
                if depth == 0:
                    allowed.append(i + 1)
            pos = rng.choice(allowed)
            token = f"<{device.name}:{step}é>"
            tokens.append(token)
            device.write(card, text[:pos] + token + text[pos:])
        world.scheduler.advance_by(rng.choice([0.0, 0.01, 0.5]))
        world.net.flush()
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            world.net.heal(x, y)
    world.settle()
    files = world.assert_converged()
    text = files["a.md"].decode() + files["b.md"].decode()
    for token in tokens:
        assert text.count(token) == 1, f"{token} lost or duplicated (seed {seed})"


def test_the_same_path_created_on_two_devices_apart_keeps_both(pair: World) -> None:
    a, b = pair.devices
    pair.net.partition("d0", "d1")
    a.write("notes.md", "from a\n")
    b.write("notes.md", "from b\n")
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    files = pair.assert_converged()
    texts = sorted(v.decode() for k, v in files.items() if k.startswith("notes"))
    assert texts == ["from a\n", "from b\n"]
    assert "notes.md" in files and any("(conflict " in k for k in files)


def test_a_card_edited_on_one_device_and_deleted_on_the_other_comes_back(pair: World) -> None:
    a, b = pair.devices
    a.write("plan.md", "draft\n")
    pair.settle()
    card = a.replica.card_at("plan.md")
    assert card is not None
    pair.net.partition("d0", "d1")
    os.unlink(a.root / "plan.md")
    a.bridge.on_event(FsEvent("deleted", "plan.md"))
    b.write("plan.md", "draft\nimportant edit\n")
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    assert a.read("plan.md") == "draft\nimportant edit\n"
    back = a.replica.card_at("plan.md")
    assert back is not None and back.id == card.id
    pair.assert_converged()


def test_a_delete_nobody_contests_deletes_everywhere(pair: World) -> None:
    a, b = pair.devices
    a.write("old.md", "bye\n")
    pair.settle()
    os.unlink(b.root / "old.md")
    b.bridge.on_event(FsEvent("deleted", "old.md"))
    pair.settle()
    assert not (a.root / "old.md").exists()
    assert a.replica.card_at("old.md") is None


def test_two_renames_of_one_card_end_with_one_name_everywhere(pair: World) -> None:
    a, b = pair.devices
    a.write("x.md", "content\n")
    pair.settle()
    pair.net.partition("d0", "d1")
    os.rename(a.root / "x.md", a.root / "from-a.md")
    a.bridge.on_event(FsEvent("moved", "x.md", "from-a.md"))
    os.rename(b.root / "x.md", b.root / "from-b.md")
    b.bridge.on_event(FsEvent("moved", "x.md", "from-b.md"))
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    files = pair.assert_converged()
    names = [k for k in files if k.endswith(".md")]
    assert len(names) == 1 and names[0] in ("from-a.md", "from-b.md")
    assert files[names[0]] == b"content\n"


def test_a_binary_replaced_on_two_devices_at_once_keeps_the_loser_beside_it(pair: World) -> None:
    a, b = pair.devices
    a.write("pic.bin", b"\x00original")
    pair.settle()
    pair.net.partition("d0", "d1")
    a.write("pic.bin", b"\x00version a")
    b.write("pic.bin", b"\x00version b")
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    files = pair.assert_converged()
    bins = {k: v for k, v in files.items() if k.startswith("pic")}
    assert sorted(bins.values()) == [b"\x00version a", b"\x00version b"]
    assert "pic.bin" in bins and any("(conflict " in k for k in bins)


def test_a_peers_card_never_overwrites_a_local_file_tack_has_not_seen(pair: World) -> None:
    a, b = pair.devices
    pair.net.partition("d0", "d1")
    a.write("notes.md", "the peer's notes\n")
    pair.settle()
    (b.root / "notes.md").write_text("my own notes, not yet seen by Tack\n")  # no event
    pair.net.heal("d0", "d1")
    pair.settle()
    files = pair.assert_converged()
    texts = sorted(v.decode() for k, v in files.items() if k.startswith("notes"))
    assert texts == ["my own notes, not yet seen by Tack\n", "the peer's notes\n"]


def test_a_joined_folder_with_its_own_files_keeps_them_beside_the_spaces(tmp_path: Path) -> None:
    world = World(tmp_path, 2)
    a, b = world.devices
    world.net.partition("d0", "d1")
    a.write("plan.md", "space plan\n")
    b.write("plan.md", "local plan\n")
    b.write("extra.md", "only here\n")
    world.settle()
    world.net.heal("d0", "d1")
    world.settle()
    files = world.assert_converged()
    assert files["extra.md"] == b"only here\n"
    plans = sorted(v for k, v in files.items() if k.startswith("plan"))
    assert plans == [b"local plan\n", b"space plan\n"]


def _deliver_one_read_at_a_time(world: World) -> None:
    """Deliver one read at a time, running what falls due between two reads (renders and
    their writes) as a daemon's event loop would, then settle."""
    while world.net.deliver_one():
        world.scheduler.advance_by(0.05)
    world.settle()


def _card_writes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("wrote "))


def _made_apart(tmp_path: Path, cards: dict[str, str]) -> World:
    """Two devices, partitioned, the first holding ``cards``: heal them for a join."""
    world = World(tmp_path, 2)
    world.net.partition("d0", "d1")
    for rel, text in cards.items():
        world.devices[0].write(rel, text)
    world.settle()
    return world


def test_a_joining_device_writes_each_card_once_with_its_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not empty first (when the space document names the card) and again once its
    content arrives: an empty card is written once too, when the peer answers it has none."""
    cards = {f"notes/card{i}.md": f"card {i} ✓\n" for i in range(6)}
    cards["empty.md"] = ""
    world = _made_apart(tmp_path, cards)
    b = world.devices[1]
    caplog.set_level(logging.INFO, logger="tack.bridge")
    caplog.clear()
    world.net.heal("d0", "d1")
    _deliver_one_read_at_a_time(world)
    assert {rel: b.read(rel) for rel in cards} == cards
    assert _card_writes(caplog) == sorted(f"wrote {rel}" for rel in cards)
    world.assert_converged()


def test_a_join_of_many_cards_logs_a_line_per_batch_not_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 cards joining must not print 10,000 lines: a render batch of more than
    LOG_EACH_WRITE_UP_TO files logs one line; each file is still logged at DEBUG."""
    cards = {f"notes/card{i:02d}.md": f"card {i}\n" for i in range(3 * LOG_EACH_WRITE_UP_TO)}
    world = _made_apart(tmp_path, cards)
    b = world.devices[1]
    caplog.set_level(logging.DEBUG, logger="tack.bridge")
    caplog.clear()
    world.net.heal("d0", "d1")
    world.settle()
    assert {rel: b.read(rel) for rel in cards} == cards
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    summaries = [m for m in info if re.fullmatch(r"wrote \d+ files in notes/", m)]
    assert summaries, info
    assert not [m for m in info if m.startswith("wrote notes/")]
    assert sum(int(m.split()[1]) for m in summaries) == len(cards)
    assert _card_writes(caplog) == sorted([f"wrote {rel}" for rel in cards] + summaries)


def test_a_card_made_on_a_connected_device_is_written_once_on_the_other(
    pair: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Live, the space update naming the card comes first and the card's content after it
    (the other side asks for it then): the render in between writes nothing."""
    a, b = pair.devices
    a.write("first.md", "warm up\n")
    pair.settle()
    caplog.set_level(logging.INFO, logger="tack.bridge")
    caplog.clear()
    a.write("new.md", "brand new ✓\n")
    pair.scheduler.advance_by(0.05)  # a takes the file in
    _deliver_one_read_at_a_time(pair)
    assert b.read("new.md") == "brand new ✓\n"
    assert [m for m in _card_writes(caplog) if "new.md" in m] == ["wrote new.md"]


def test_a_card_held_back_for_its_content_is_written_when_the_connection_ends(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, 2)
    a, b = world.devices
    world.net.partition("d0", "d1")
    a.write("plan.md", "the plan\n")
    world.settle()
    world.net.heal("d0", "d1")
    doc_id = ""
    while world.net.deliver_one():  # until b has asked for the card's content
        world.scheduler.advance_by(0.05)
        card = b.replica.card_at("plan.md")
        if card is not None and b.replica.awaited(card.id):
            doc_id = card.id
            break
    assert doc_id, "b never waited for the card's content"
    world.scheduler.advance_by(1.0)
    assert not (b.root / "plan.md").exists()  # held back while the answer is on its way
    world.net.partition("d0", "d1")  # ... which never comes
    world.scheduler.advance_by(1.0)
    assert not b.replica.awaited(doc_id)
    assert b.read("plan.md") == ""  # the card is on disk, as the document has it here
    world.net.heal("d0", "d1")
    world.settle()
    assert b.read("plan.md") == "the plan\n"
    world.assert_converged()


def test_a_blob_travels_through_a_device_in_the_middle(tmp_path: Path) -> None:
    world = World(tmp_path, 3)
    a, _, c = world.devices
    world.net.partition("d0", "d2")  # a chain: d0 — d1 — d2
    data = random.Random(7).randbytes(2_000_000)
    a.write("movie.bin", data)
    world.settle()
    assert (c.root / "movie.bin").read_bytes() == data


def test_a_reconnect_sends_only_what_the_peer_lacks(pair: World) -> None:
    a, b = pair.devices
    big = "".join(f"line {i} of a long card ✓\n" for i in range(4000))  # ~100 KB
    a.write("long.md", big)
    pair.settle()
    assert b.read("long.md") == big
    pair.net.partition("d0", "d1")
    a.write("long.md", big + "one more line\n")
    pair.settle()
    pair.net.heal("d0", "d1")
    pair.settle()
    assert b.read("long.md") == big + "one more line\n"
    sent = pair.net.session("d0", "d1")
    assert sent is not None
    # Hello, proof, state vectors and the one new line: a few hundred bytes, not 100 KB.
    assert sent.stats.bytes_out < 2_000, sent.stats
