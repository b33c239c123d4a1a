"""Lay out a board from a program: cards, a note, a link, a group, a nested board and an edge.

Run it from the repository root::

    python -m examples.layout_cards [FOLDER]

FOLDER becomes a Tack space (a fresh temporary folder when omitted).  The script runs the real
store and folder bridge (as ``tack up`` does) and changes only the engine's documents, in
transactions with origin ``api``, using the :mod:`engine.spacedoc` schema helpers.  It never
writes a file itself: the bridge renders the card files and ``board.canvas`` (JSON Canvas 1.0)
from the documents.  At the end it prints the resulting ``board.canvas`` and stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from engine import SPACE_DOC, CardView, EdgeView, Origin, Replica, new_id, spacedoc
from engine.spacedoc import TEXT_KEY
from fsbridge.daemon import Running, serve
from fsbridge.spacedir import init_space

STEP_TIMEOUT = 15.0  # seconds to wait for the bridge to write what we asked for

# Where each card ends up: (x, y, width, height), in canvas pixels.
PLAN = (0, 0, 400, 300)
NOTE = (440, 0, 300, 140)
LINK = (440, 180, 300, 120)
LATER = (0, 340, 400, 240)
GROUP = (-40, -80, 820, 700)
SOMEDAY = (0, 0, 400, 200)  # inside the nested board "Later"


def say(text: str) -> None:
    print(text, flush=True)


def geometry(rect: tuple[int, int, int, int]) -> dict[str, int]:
    x, y, width, height = rect
    return {"x": x, "y": y, "width": width, "height": height}


def new_card(replica: Replica, view: CardView, text: str | None = None) -> None:
    """Create a card.  Text and note cards get their text document first, then the card."""
    if text is not None:
        replica.transact(
            view.id,
            Origin.API,
            lambda doc: doc.get(TEXT_KEY, type=Text).insert(0, text),
            summary=f"+{len(text)} chars",
            path=view.path,
        )
    replica.transact(
        SPACE_DOC,
        Origin.API,
        lambda doc: spacedoc.put_card(doc, view),
        summary=f"new {view.kind} card",
        path=view.path,
        card=view.id,
    )
    shown = view.path or view.node.get("label") or view.node.get("url") or (text or "")[:30]
    say(f"   {view.kind:<6} card {view.id}  {shown}")


def read_canvas(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not written yet (or caught mid-way by another tool: never by Tack)
    return data


def nodes_by_id(canvas: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {str(n["id"]): n for n in (canvas or {}).get("nodes", [])}


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (without blocking the loop, where the bridge runs) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def build_board(running: Running) -> None:
    replica, root = running.replica, running.space.root
    canvas_file = root / "board.canvas"

    say("\n1. Create the cards, all stacked at the origin for now:")
    stacked = {"x": 0, "y": 0}
    # kind, path (file and board cards only), board (the folder whose canvas shows it), z
    # (stacking order) and the JSON Canvas node fields; "file"/"text" are derived by the bridge.
    group = CardView(
        id=new_id(), kind="group", path="", board="", z=0.0,
        node={"type": "group", "label": "This week", **geometry(GROUP)},
    )  # fmt: skip
    plan = CardView(
        id=new_id(), kind="text", path="Plan.md", board="", z=1.0,
        node={**geometry(PLAN), **stacked},
    )  # fmt: skip
    note = CardView(
        id=new_id(), kind="note", path="", board="", z=2.0,
        node={**geometry(NOTE), **stacked, "color": "4"},
    )  # fmt: skip
    link = CardView(
        id=new_id(), kind="link", path="", board="", z=3.0,
        node={"type": "link", "url": "https://jsoncanvas.org/spec/1.0/", **geometry(LINK),
              **stacked},
    )  # fmt: skip
    later = CardView(
        id=new_id(), kind="board", path="Later", board="", z=4.0,
        node={**geometry(LATER), **stacked},
    )  # fmt: skip
    someday = CardView(
        id=new_id(), kind="text", path="Later/Someday.md", board="Later",
        node=geometry(SOMEDAY),
    )  # fmt: skip
    new_card(replica, group)
    new_card(replica, plan, "# Plan\n\n1. Ship the board\n2. Café with the team ☕\n")
    new_card(replica, note, "Remember: **everything** here is a plain file.")
    new_card(replica, link)
    new_card(replica, later)  # a nested board: a folder with its own board.canvas
    new_card(replica, someday, "Learn to juggle 🤹\n")
    ids = [group.id, plan.id, note.id, link.id, later.id]
    await until(
        lambda: set(ids) <= set(nodes_by_id(read_canvas(canvas_file))),
        "board.canvas to show the new cards",
    )
    say(f"   -> the bridge wrote {', '.join(sorted(p.name for p in root.iterdir()))}")

    say("\n2. Lay them out: one transaction moves every card (one change, one canvas write)")
    targets = {plan.id: PLAN, note.id: NOTE, link.id: LINK, later.id: LATER}

    def lay_out(doc: Doc[Any]) -> None:
        for card_id, (x, y, _, _) in targets.items():
            spacedoc.set_node_fields(doc, card_id, {"x": x, "y": y})

    replica.transact(SPACE_DOC, Origin.API, lay_out, summary="laid out the board")

    say("\n3. Connect the note to the plan with an edge")
    edge = EdgeView(
        new_id(),
        "",
        {
            "fromNode": note.id,
            "fromSide": "left",
            "toNode": plan.id,
            "toSide": "right",
            "label": "why",
        },
    )
    replica.transact(
        SPACE_DOC, Origin.API, lambda doc: spacedoc.put_edge(doc, edge), summary="new edge"
    )

    def laid_out() -> bool:
        canvas = read_canvas(canvas_file)
        nodes = nodes_by_id(canvas)
        placed = all(
            card_id in nodes and (nodes[card_id]["x"], nodes[card_id]["y"]) == (x, y)
            for card_id, (x, y, _, _) in targets.items()
        )
        edges = {str(e["id"]) for e in (canvas or {}).get("edges", [])}
        return placed and edge.id in edges

    await until(laid_out, "board.canvas to show the layout")
    await until(lambda: (root / "Later" / "Someday.md").exists(), "the nested board's card")

    say(f"\nThe resulting {canvas_file}:\n")
    say(canvas_file.read_text(encoding="utf-8"))
    say(f"Plan.md:\n{(root / 'Plan.md').read_text(encoding='utf-8')}")
    later_canvas = nodes_by_id(read_canvas(root / "Later" / "board.canvas"))
    say(f"Later/board.canvas shows: {[n.get('file') for n in later_canvas.values()]}")


async def main(root: Path) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def on_ready(running: Running) -> None:
        say(f"Tack is running on {running.space.root}")
        task = asyncio.get_running_loop().create_task(build_board(running))
        task.add_done_callback(lambda _: stop.set())  # then serve() shuts down cleanly
        tasks.append(task)

    await serve(root, stop, on_ready=on_ready)
    for task in tasks:
        task.result()  # re-raise a failed step
    say("Stopped.")


def run(argv: list[str]) -> None:
    if not os.environ.get("TACK_HOME"):
        # The device identity lives in $TACK_HOME; keep the example away from ~/.config.
        os.environ["TACK_HOME"] = tempfile.mkdtemp(prefix="tack-home-")
    root = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="tack-layout-"))
    space, created = init_space(root)
    say(f"{'Created' if created else 'Opened'} space folder {space.root}")
    asyncio.run(main(space.root))


if __name__ == "__main__":
    run(sys.argv[1:])
