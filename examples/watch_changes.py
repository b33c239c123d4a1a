"""Watch a space change: the engine's change stream while files are edited like editors do.

Run it from the repository root::

    python -m examples.watch_changes [FOLDER]

FOLDER becomes a Tack space (a fresh temporary folder when omitted).  The script runs the real
store, folder bridge and file watcher on an asyncio loop, exactly as ``tack up`` does, and
subscribes to ``replica.changes``: every committed change of every document arrives there,
already durable, tagged with its origin.  It then edits a card file the ways editors do
(create, write in place, save through a temporary file and rename, rename with ``mv``), edits
it once through the engine API, prints every change as it arrives, and stops on its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from engine import SPACE_DOC, Change, Origin, Replica
from engine.spacedoc import TEXT_KEY
from engine.text_edits import Splice, apply_splices
from fsbridge.daemon import Running, serve
from fsbridge.spacedir import init_space

CARD = "Welcome.md"
RENAMED = "Hello.md"
STEP_TIMEOUT = 15.0  # seconds to wait for one step's changes before giving up


def say(text: str) -> None:
    print(text, flush=True)


def describe(replica: Replica, change: Change) -> str:
    """One line for one change: which card (by path), who caused it, what it did."""
    if change.doc_id == SPACE_DOC:
        # The space document holds every card's place and layout; the history row written
        # with the change (same seq) names the path the change was about.
        row = next((h for h in replica.store.history(limit=20) if h.seq == change.seq), None)
        path = row.path if row is not None and row.path else "(space)"
        what = "layout/cards"
    else:
        card = replica.cards().get(change.doc_id)
        path = card.path if card is not None else change.doc_id
        what = "text"
    return (
        f"  change  {path:<12} origin={change.origin.value:<5} {what:<12} "
        f"{change.summary or '-'}  (seq {change.seq})"
    )


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (without blocking the loop, where the bridge runs) until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while not check():
        if loop.time() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


async def quiet(seen: list[Change], for_seconds: float = 0.4) -> None:
    """Wait until no change has arrived for a moment, so each step's changes print together."""
    count = -1
    while count != len(seen):
        count = len(seen)
        await asyncio.sleep(for_seconds)


def text_at(replica: Replica, path: str) -> str | None:
    card = replica.card_at(path)
    return None if card is None else replica.text(card.id)


async def tour(running: Running, seen: list[Change]) -> None:
    replica, root = running.replica, running.space.root
    file = root / CARD

    say(f"\n1. A new file appears: {CARD} (written in place, as `echo > {CARD}` would)")
    text = "# Welcome\n\nThis board is a folder. Café ☕\n"
    file.write_text(text, encoding="utf-8")
    await until(lambda: text_at(replica, CARD) == text, f"{CARD} to become a card")
    await quiet(seen)
    card = replica.card_at(CARD)
    assert card is not None
    say(f"   -> {CARD} is card {card.id}")

    say("\n2. Edit in place (open, truncate, write: nano, echo >>, most scripts)")
    text += "\n- first idea\n"
    with open(file, "w", encoding="utf-8") as f:
        f.write(text)
    await until(lambda: replica.text(card.id) == text, "the in-place edit")
    await quiet(seen)

    say("\n3. Save through a temporary file renamed over the card (gedit, VS Code, JetBrains)")
    text = text.replace("first idea", "first idea, refined") + "- second idea 🚀\n"
    temp = root / ".goutputstream-EXAMPLE"  # gedit's temp name: always ignored by Tack
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, file)
    await until(lambda: replica.text(card.id) == text, "the temp+rename save")
    await quiet(seen)
    same = replica.card_at(CARD)
    say(f"   -> still card {same.id if same else '?'}: the replace is an edit, not a new card")

    say("\n4. A program edits the card through the engine API; the bridge writes the file")
    before = replica.text(card.id)
    addition = "- added through the API\n"

    def append_line(doc: Doc[Any]) -> None:
        apply_splices(doc.get(TEXT_KEY, type=Text), before, [Splice(len(before), 0, addition)])

    replica.transact(card.id, Origin.API, append_line, summary="appended a line", path=CARD)
    text = before + addition
    await until(lambda: file.read_text(encoding="utf-8") == text, f"{CARD} to be rewritten")
    await quiet(seen)
    say(
        f"   -> {CARD} on disk now ends with: {file.read_text(encoding='utf-8').splitlines()[-1]!r}"
    )

    say(f"\n5. Rename the file (mv {CARD} {RENAMED}): the card keeps its id and its layout")
    os.rename(file, root / RENAMED)
    await until(lambda: replica.card_at(RENAMED) is not None, "the rename")
    await quiet(seen)
    moved = replica.card_at(RENAMED)
    say(f"   -> {RENAMED} is card {moved.id if moved else '?'}")


async def main(root: Path) -> None:
    stop = asyncio.Event()
    seen: list[Change] = []
    tasks: list[asyncio.Task[None]] = []

    def on_ready(running: Running) -> None:
        replica = running.replica
        say(f"Watching {running.space.root} (space {running.space.space_id()[:8]})")

        def show(change: Change) -> None:
            # Called on the loop thread, right after the change was committed to SQLite.
            seen.append(change)
            say(describe(replica, change))

        subscription = replica.changes.subscribe(show)
        task = asyncio.get_running_loop().create_task(tour(running, seen))

        def done(_: asyncio.Task[None]) -> None:
            subscription.dispose()
            stop.set()  # serve() stops the watcher and the bridge and closes the store

        task.add_done_callback(done)
        tasks.append(task)

    await serve(root, stop, on_ready=on_ready)
    for task in tasks:
        task.result()  # re-raise a failed step
    say(f"\nStopped. {len(seen)} changes seen; every one is in {root / '.tack'}.")


def run(argv: list[str]) -> None:
    if not os.environ.get("TACK_HOME"):
        # The device identity lives in $TACK_HOME; keep the example away from ~/.config.
        os.environ["TACK_HOME"] = tempfile.mkdtemp(prefix="tack-home-")
    root = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="tack-watch-"))
    space, created = init_space(root)
    say(f"{'Created' if created else 'Opened'} space folder {space.root}")
    asyncio.run(main(space.root))


if __name__ == "__main__":
    run(sys.argv[1:])
