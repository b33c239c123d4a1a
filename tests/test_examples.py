"""The examples run as real programs: a subprocess each, real watcher, real SQLite, real files.

Each example is started as ``python -m examples.X <folder>`` from the repository root with a
private ``HOME`` and ``TMPDIR`` and no ``TACK_HOME``, so the tests also check that an example
never touches the user's ``~/.config``.  The assertions look at what it printed and at what it
left in the folder (card files, ``board.canvas``, the store's history).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import Store

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)


def run_example(name: str, folder: Path, tmp_path: Path) -> str:
    home = tmp_path / "home"
    tmp = tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TACK_HOME"}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", f"examples.{name}", str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=150,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert not (home / ".config").exists(), "the example touched ~/.config"
    assert list(tmp.glob("tack-home-*")), "TACK_HOME was not pointed at a temporary folder"
    return done.stdout


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def history(folder: Path) -> list[tuple[int, str, str, str]]:
    store = Store.open(folder / ".tack" / "store.sqlite", readonly=True)
    try:
        return [(h.seq, h.origin, h.path, h.summary) for h in store.history(limit=10_000)]
    finally:
        store.close()


CHANGE = re.compile(
    r"^  change  (?P<path>\S+)\s+origin=(?P<origin>\w+)\s+(?P<what>\S+)\s+"
    r"(?P<summary>.*?)  \(seq (?P<seq>\d+)\)$"
)


def test_watch_changes_prints_each_change_with_its_origin(tmp_path: Path) -> None:
    folder = tmp_path / "space"
    out = run_example("watch_changes", folder, tmp_path)

    changes = [m.groupdict() for m in map(CHANGE.match, out.splitlines()) if m]
    assert changes, out
    origins = [(c["path"], c["origin"], c["what"]) for c in changes]
    # The new file: its card, then its text, both ingested from the file.
    assert origins[:2] == [
        ("Welcome.md", "file", "layout/cards"),
        ("Welcome.md", "file", "text"),
    ], out
    assert changes[0]["summary"] == "new text card"
    # The API edit: exactly one change, with origin api; the bridge's write of it is no echo.
    api = [i for i, c in enumerate(changes) if c["origin"] == "api"]
    assert len(api) == 1, out
    assert origins[api[0]] == ("Welcome.md", "api", "text")
    # Before it: the first save, the in-place write and the temp+rename save, all text changes
    # from the file (a save caught half-written by a slow machine may add one more).
    assert len(origins[1 : api[0]]) >= 3
    assert set(origins[1 : api[0]]) == {("Welcome.md", "file", "text")}, out
    # After it: mv, one change of the space document, under the new name.
    assert origins[api[0] + 1 :] == [("Hello.md", "file", "layout/cards")], out
    assert changes[-1]["summary"] == "renamed Welcome.md → Hello.md"

    # Every printed change was durable: it is in the store's history with the same seq/origin.
    rows = {seq: (origin, summary) for seq, origin, _, summary in history(folder)}
    for c in changes:
        assert rows[int(c["seq"])][0] == c["origin"]

    # The card kept its identity through every save and the rename.
    ids = set(re.findall(r"is card ([0-9a-f]{16})", out)) | set(
        re.findall(r"still card ([0-9a-f]{16})", out)
    )
    assert len(ids) == 1, out
    (card_id,) = ids

    assert not (folder / "Welcome.md").exists()
    text = (folder / "Hello.md").read_text(encoding="utf-8")
    assert text == (
        "# Welcome\n\nThis board is a folder. Café ☕\n\n"
        "- first idea, refined\n- second idea 🚀\n- added through the API\n"
    )
    leftovers = sorted(p.name for p in folder.iterdir() if p.name != ".tack")
    assert leftovers == ["Hello.md", "board.canvas"]
    canvas = read_json(folder / "board.canvas")
    assert [(n["id"], n["type"], n["file"]) for n in canvas["nodes"]] == [
        (card_id, "file", "Hello.md")
    ]
    assert f"Stopped. {len(changes)} changes seen" in out


def test_layout_cards_lays_out_the_board_it_prints(tmp_path: Path) -> None:
    folder = tmp_path / "space"
    out = run_example("layout_cards", folder, tmp_path)

    canvas_text = (folder / "board.canvas").read_text(encoding="utf-8")
    assert canvas_text in out, "the printed canvas is not the one on disk"
    canvas = read_json(folder / "board.canvas")

    def geometry(node: dict[str, Any]) -> tuple[int, int, int, int]:
        return (node["x"], node["y"], node["width"], node["height"])

    nodes = canvas["nodes"]
    assert [n["type"] for n in nodes] == ["group", "file", "text", "link", "file"]
    group, plan, note, link, later = nodes
    assert group["label"] == "This week" and geometry(group) == (-40, -80, 820, 700)
    assert plan["file"] == "Plan.md" and geometry(plan) == (0, 0, 400, 300)
    assert note["text"] == "Remember: **everything** here is a plain file."
    assert geometry(note) == (440, 0, 300, 140) and note["color"] == "4"
    assert link["url"] == "https://jsoncanvas.org/spec/1.0/"
    assert geometry(link) == (440, 180, 300, 120)
    assert later["file"] == "Later/board.canvas" and geometry(later) == (0, 340, 400, 240)
    assert canvas["edges"] == [
        {
            "id": canvas["edges"][0]["id"],
            "fromNode": note["id"],
            "fromSide": "left",
            "toNode": plan["id"],
            "toSide": "right",
            "label": "why",
        }
    ]

    assert (folder / "Plan.md").read_text(encoding="utf-8") == (
        "# Plan\n\n1. Ship the board\n2. Café with the team ☕\n"
    )
    assert (folder / "Later" / "Someday.md").read_text(encoding="utf-8") == "Learn to juggle 🤹\n"
    nested = read_json(folder / "Later" / "board.canvas")
    assert [(n["type"], n["file"], geometry(n)) for n in nested["nodes"]] == [
        ("file", "Later/Someday.md", (0, 0, 400, 200))
    ]
    assert sorted(p.name for p in folder.iterdir()) == [".tack", "Later", "Plan.md", "board.canvas"]

    # Everything came from the API: the bridge's own writes were never ingested back as edits.
    rows = history(folder)
    assert rows and {origin for _, origin, _, _ in rows} == {"api"}, rows
    assert sum(summary == "laid out the board" for _, _, _, summary in rows) == 1
