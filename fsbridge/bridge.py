"""The folder bridge: keeps one space folder and one replica in agreement, both ways.

Disk → documents: watcher events become *hints* (a path to look at), debounced per path;
reconciling a path compares the file with its *base* (what file and document last agreed on,
kept in the store) and ingests the difference as one transaction with origin ``file``
(DESIGN §3).  When the document moved on since the base, the disk diff is applied to a fork
of the document at the base and the fork's update is merged, so concurrent edits survive.

Documents → disk: every change whose origin is not ``file`` schedules a render of the card
or board canvas it touched.  A render re-checks the file first: if it differs from the base
the user edited it, so it is ingested (merged) before the merged content is written.  Writes
go through :func:`fsbridge.atomic.atomic_write` only.  Echoes need no special case: after a
write, the written bytes are the base, so the watcher's event for them diffs to nothing.

Renames keep a card's id (and so its layout): a ``moved`` event from a card's path renames
the card; at start-up, a file that appeared with exactly the content of a vanished card's
base is that card, renamed while Tack was not running.  A file that vanishes is deleted only
after it stayed missing for a grace period, so editors that rename the old file away before
writing the new one (vim) never look like a delete.

Invariants: every method runs on the owner thread (the scheduler's); nothing in the user's
folder is deleted except a card file whose card a peer deleted and which still holds exactly
its base content; a canvas that does not parse is reported in :attr:`problems` and never
overwritten.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from reactivex.abc import DisposableBase, SchedulerBase
from reactivex.disposable import CompositeDisposable
from reactivex.subject import Subject

from engine import spacedoc
from engine.blobs import Blobs
from engine.changes import Change, Origin
from engine.replica import SPACE_DOC, Pending, Replica, new_id, sha256_hex
from engine.spacedoc import CONTENT_KINDS, FILE_KINDS, TEXT_KEY, CardView, EdgeView, folder_of
from engine.store import Base, StoreError
from engine.text_edits import Splice, apply_splices
from fsbridge.atomic import (
    TEMP_PREFIX,
    Changed,
    Companion,
    Written,
    atomic_write,
    atomic_write_many,
    fsync_dir,
    read_bytes,
)
from fsbridge.canvas import Canvas, CanvasError, empty_canvas, parse_canvas, render_canvas
from fsbridge.classify import classify, decode_text, encode_text
from fsbridge.fdcloser import DescriptorCloser
from fsbridge.grid import Rect, free_spot, free_spots
from fsbridge.ignore import IgnoreRules
from fsbridge.openwriters import fd_open_for_writing, open_for_writing
from fsbridge.paths import UnsafePath, resolve_inside, validate_rel
from fsbridge.pipeline import batch_per_turn, debounce_per_key, first_then_last_per_key
from fsbridge.scanner import CANVAS_NAME, canvas_path, join, parent_board, walk
from fsbridge.textdiff import diff_splices

log = logging.getLogger("tack.bridge")

CARD_SIZE = {"text": (400, 400), "binary": (400, 400), "board": (400, 240)}
MAX_CARD_BYTES = 64 * 2**20  # larger files are reported, not synced (memory stays bounded)
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
INTENT = "#intent"  # suffix of a base stored just before the write that makes it true
LATE_SAVE_POLLS = 100  # checks (2 x debounce apart) for a racing save to finish
CANVAS_ONLY_KINDS = ("note", "link", "group", "node")
LAYOUT_FIELDS = ("x", "y", "width", "height", "color")
RETRY_FIRST = 1.0  # seconds before the first retry of a failed disk operation
RETRY_MAX = 60.0
# A binary card's base holds no content (its blob is in the blob store); this marker in its
# place says that the version was made on this device (ingested from this disk).
AUTHORED_HERE = b"authored here"
LOG_EACH_WRITE_UP_TO = 8  # a render batch writing more files logs one line (a join: 10,000)
HELD_OPEN_WAIT = 10.0  # seconds a file held open for writing is waited for before ingesting


def canvas_key(board: str) -> str:
    return f"canvas:{board}"


@dataclass(frozen=True)
class FsEvent:
    """A watcher event, relative to the space root.  ``kind``: created, modified, closed (a
    writer closed the file: its save is complete), deleted, moved (``dest`` set) or
    overflow."""

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


@dataclass(frozen=True)
class BridgeTiming:
    """Delays of the bridge, in seconds of scheduler time."""

    debounce: float = 0.02  # quiet time of a path before it is reconciled
    render: float = 0.005  # coalescing of document changes before a card file is written
    canvas: float = 0.05  # coalescing of layout changes before board.canvas is written
    delete_grace: float = 0.3  # how long a card's file must stay missing to count as deleted


def conflict_name(path: str, tag: str) -> str:
    """``dir/name (conflict TAG).ext``, with the name shortened (on a character boundary) so
    the file name still fits in 255 bytes."""
    folder, slash, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f" (conflict {tag})" + (f".{ext}" if ext else "")
    room = 255 - len(suffix.encode("utf-8"))
    while len(stem.encode("utf-8")) > room:
        stem = stem[:-1]
    return f"{folder}{slash}{stem}{suffix}"


def summarize(splices: list[Splice]) -> str:
    inserted = sum(len(s.insert) for s in splices)
    deleted = sum(s.delete for s in splices)
    return f"+{inserted} −{deleted} chars"


class FolderBridge:
    """Mirrors ``root`` into ``replica`` and back, driven by hints and document changes."""

    def __init__(
        self,
        root: Path,
        replica: Replica,
        blobs: Blobs,
        scheduler: SchedulerBase,
        timing: BridgeTiming | None = None,
    ) -> None:
        self.root = root
        self.replica = replica
        self.store = replica.store
        self.blobs = blobs
        self.scheduler = scheduler
        self.timing = timing or BridgeTiming()
        self.rules = IgnoreRules.load(root)
        self.problems: dict[str, str] = {}
        self.on_problems: Callable[[dict[str, str]], None] | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self._hints: Subject[str] = Subject()
        self._closed: Subject[str] = Subject()  # paths whose writer closed them
        self._renders: Subject[str] = Subject()
        self._canvases: Subject[str] = Subject()
        self._known: dict[str, CardView] = dict(replica.cards())
        self._missing: set[str] = set()
        self._retries: dict[str, int] = {}  # key -> failed attempts in a row
        self._gone: dict[str, CardView] = {}  # cards deleted by others, until their file goes
        self._held_open: dict[str, int] = {}  # path -> polls while an editor holds it open
        self._claiming: set[str] = set()  # cards whose render waits on another's (a swap?)
        self._batch: list[_PlannedWrite] | None = None  # writes of the renders in progress
        self._batch_paths: set[Path] = set()
        self._safe_folders: set[str] | None = None  # in a render batch: folders checked safe
        self._canvas_batch: list[_PlannedCanvas] | None = None  # canvas writes of a batch
        self._dead_temps: set[str] = set()  # inodes of temp files a crash left (never landed)
        self._closer = DescriptorCloser()
        self._by_board: tuple[int, dict[str, list[CardView]]] | None = None  # see _cards_on
        self.writes = 0  # files written, for tests and status
        self._subscriptions: list[DisposableBase] = [
            debounce_per_key(self._hints, self.timing.debounce, scheduler).subscribe(
                self._safely(self.reconcile)
            ),
            batch_per_turn(self._closed, scheduler).subscribe(self._reconcile_closed),
            batch_per_turn(
                first_then_last_per_key(self._renders, self.timing.render, scheduler), scheduler
            ).subscribe(self._render_batch),
            batch_per_turn(
                debounce_per_key(self._canvases, self.timing.canvas, scheduler), scheduler
            ).subscribe(self._render_canvases),
            replica.changes.subscribe(self._on_change),
            replica.settled.subscribe(self._on_settled),
        ]

    def dispose(self) -> None:
        CompositeDisposable(*self._subscriptions).dispose()
        self._closer.drain()

    def _safely(self, action: Callable[[str], None]) -> Callable[[str], None]:
        """Run ``action`` so that one bad path is logged and reported, never fatal."""

        def run(key: str) -> None:
            try:
                action(key)
            except UnsafePath as exc:
                log.warning("refused unsafe path %r: %s", key, exc)
                self._problem(f"unsafe:{key}", f"{self._describe(key)}: {exc}")
            except (OSError, StoreError) as exc:
                self._retry_later(key, exc, run)
            except Exception:
                log.exception("internal error while handling %s", key)
            except BaseException as exc:  # pyo3's PanicException (from pycrdt): contain it
                if type(exc).__name__ != "PanicException":
                    raise
                log.exception("internal error (panic) while handling %s", key)
            else:
                if self._retries.pop(key, None) is not None:
                    self._clear_problem(f"io:{key}")

        return run

    def _retry_later(
        self, key: str, exc: OSError | StoreError, again: Callable[[str], None]
    ) -> None:
        """Disk full, read-only file or folder, store locked: report it under the file's
        name, and try again later (the edit waits on disk meanwhile)."""
        attempt = self._retries.get(key, 0) + 1
        self._retries[key] = attempt
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempt - 1))
        what = self._describe(key)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self._problem(f"io:{key}", f"{what}: {reason} (retrying)")
        log.warning("%s: %s (retry %d in %.0f s)", what, reason, attempt, delay)
        self.scheduler.schedule_relative(delay, lambda *_: again(key))

    # -- problems ------------------------------------------------------------------------------

    def _describe(self, key: str) -> str:
        """A problem's subject in the user's terms: the file, not a card id."""
        card = self.replica.cards().get(key)
        if card is not None and card.path:
            return card.path
        if key.startswith("canvas:"):
            return canvas_path(key[len("canvas:") :])
        return key or canvas_path("")

    def _problem(self, key: str, message: str) -> None:
        if self.problems.get(key) != message:
            self.problems[key] = message
            log.warning("%s", message)
            self._report_problems()

    def _report_problems(self) -> None:
        if self.on_problems:
            try:
                self.on_problems(dict(self.problems))
            except StoreError as exc:  # the store itself may be what is failing
                log.warning("could not record problems in the store: %s", exc)

    def _clear_problem(self, key: str) -> None:
        if self.problems.pop(key, None) is not None:
            self._report_problems()

    # -- inputs -------------------------------------------------------------------------------

    def hint(self, rel: str) -> None:
        """Look at ``rel`` once it has been quiet for the debounce time."""
        self._hints.on_next(rel)

    def on_event(self, event: FsEvent) -> None:
        """Turn one watcher event into hints (and eager card renames)."""
        if event.kind == "deleted" and event.path in (".tack", ".tack/store.sqlite"):
            if self.on_fatal is not None and not (self.root / ".tack" / "store.sqlite").exists():
                self.on_fatal(
                    "the space's .tack folder was deleted while Tack ran: its history and "
                    "keys are gone here; the files are untouched. Stopping."
                )
            return
        if event.kind == "overflow":
            log.warning("watcher overflowed: rescanning the whole space")
            self.scan()
            return
        if event.path == ".tackignore" or event.dest == ".tackignore":
            self.rules = IgnoreRules.load(self.root)
        if event.kind == "moved" and event.dest is not None:
            if event.path.rsplit("/", 1)[-1].startswith(TEMP_PREFIX) and not event.is_dir:
                # Tack's own write landing (its temp file renamed over the card file): an
                # echo.  A save racing it is caught by atomic_write (late_bytes), and any
                # later save raises events of its own.
                return
            src_ok = not self.rules.is_ignored(event.path, event.is_dir)
            dst_ok = not self.rules.is_ignored(event.dest, event.is_dir)
            if src_ok and dst_ok:
                self._moved(event.path, event.dest, event.is_dir)
            if src_ok:
                self.hint(event.path)
            if dst_ok:
                self.hint(event.dest)
            return
        if not self.rules.is_ignored(event.path, event.is_dir):
            self.hint(event.path)
            if event.kind == "closed":
                # A writer closed the file: its save is complete, so take it in now rather
                # than after the debounce (the debounced look that follows finds nothing new).
                # Another writer still holding it open defers this (see reconcile).
                # The files closed in one turn (a checkout closes thousands) are taken in
                # together, in one later turn.
                self._closed.on_next(event.path)

    def _reconcile_closed(self, paths: list[str]) -> None:
        reconcile = self._safely(self.reconcile)
        for path in paths:
            reconcile(path)

    # -- reconcile one path --------------------------------------------------------------------

    def reconcile(self, rel: str) -> None:
        if not rel or self.rules.is_ignored(rel):
            return
        board = parent_board(rel)
        if rel.rsplit("/", 1)[-1] == CANVAS_NAME and self._is_board(board):
            self.ingest_canvas(board)
            return
        path = resolve_inside(self.root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        card = self._card_of_file(rel)
        if card is not None and card.path != rel and card.kind in FILE_KINDS:
            # A peer renamed this file's card and the move is not on disk yet: the render
            # moves the file, taking in whatever is in it first.
            self._renders.on_next(card.id)
            return
        if st is None:
            if card is not None and self._not_written_at(card, rel):
                self._renders.on_next(card.id)  # a peer's card not on this disk yet
            elif card is not None:
                self._confirm_later(rel)
            return
        self._missing.discard(rel)
        if stat.S_ISDIR(st.st_mode):
            if card is None or card.kind != "board":
                if card is not None:
                    self._delete_card(card)
                self._ensure_board(rel)
                self._hint_children(rel)
            return
        if not stat.S_ISREG(st.st_mode):
            # Symlinks, FIFOs, sockets are never cards; a card's file that became one is gone.
            if card is not None and card.kind in FILE_KINDS:
                self._confirm_later(rel)
            return
        if self._too_large(rel, st.st_size):
            return
        if self._still_being_written(rel, path):
            return
        data = read_bytes(path)
        if data is None:
            return
        if card is not None and card.kind == "board":
            self._delete_card(card)
            card = None
        if card is None:
            tomb = self._tombstone_at(rel)
            # The card here was deleted (perhaps elsewhere, a moment ago) and the file is saved
            # again: bring *that* card back with the edit, rather than seeding a new card with
            # the whole text (which duplicates it on every device).
            if tomb is not None and self._revive_with_edit(tomb.id, rel, data):
                return
            self._create_file_card(rel, data)
        else:
            self.ingest_file(card, data)
            if card.kind in FILE_KINDS and self._moved_on_since_base(card):
                self._renders.on_next(card.id)  # a peer's change that waited for this save

    def _still_being_written(self, rel: str, path: Path) -> bool:
        """An editor holds ``rel`` open for writing (mid-save, perhaps truncated): look again
        later rather than take in a half-written file, up to :data:`HELD_OPEN_WAIT` seconds
        (a program that keeps a file open for good is then synced as it is)."""
        if not open_for_writing(path):
            self._held_open.pop(rel, None)
            return False
        polls = self._held_open.get(rel, 0)
        if polls * self.timing.debounce * 2 >= HELD_OPEN_WAIT:
            return False
        self._held_open[rel] = polls + 1
        self.scheduler.schedule_relative(self.timing.debounce * 2, lambda *_: self.hint(rel))
        return True

    def _card_of_file(self, rel: str) -> CardView | None:
        """The card whose file, on this device, is ``rel``: the one this device last wrote or
        read there — a peer may have renamed it since, and the move is not on disk yet —
        else the card at that path."""
        cards = self.replica.cards()
        for key in self.store.keys_with_base_at(rel):
            card = cards.get(key)
            if card is not None and card.kind in FILE_KINDS:
                return card
        return self.replica.card_at(rel)

    def _is_board(self, board: str) -> bool:
        if board == "":
            return True
        card = self.replica.card_at(board)
        return (card is not None and card.kind == "board") or (self.root / board).is_dir()

    def _hint_children(self, rel: str) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root / rel):
                self.hint(join(rel, entry.name))

    def _confirm_later(self, rel: str) -> None:
        """``rel``'s file is gone: look again after the grace period (an editor's save may be
        between moving it away and writing it anew) before taking it for deleted."""
        if rel in self._missing:
            return  # already being confirmed
        self._missing.add(rel)
        self.scheduler.schedule_relative(
            self.timing.delete_grace, lambda *_: self._safely(self._confirm_missing)(rel)
        )

    def _confirm_missing(self, rel: str) -> None:
        if rel not in self._missing:
            return
        self._missing.discard(rel)
        try:
            st = os.lstat(self.root / rel)
        except FileNotFoundError:
            st = None
        if st is not None and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            self.hint(rel)
            return
        card = self._card_of_file(rel)
        if card is not None and self._not_written_at(card, rel):
            self._renders.on_next(card.id)
        elif card is not None:
            self._delete_card(card)
        for other in self.replica.cards_at(rel):
            self._renders.on_next(other.id)  # held back while the delete was confirmed

    def _file_of_another_gone(self, card: CardView) -> bool:
        """Another live card's file was written or read here at ``card``'s path, and is gone:
        the user deleted (or is moving) it, and the watcher's word has not been taken yet."""
        cards = self.replica.cards()
        return any(
            key != card.id and key in cards for key in self.store.keys_with_base_at(card.path)
        )

    def _not_written_at(self, card: CardView, rel: str) -> bool:
        """A file card that this device never wrote or read at ``rel`` (a peer's card, not
        rendered here yet, or whose file here is elsewhere): a missing file at ``rel`` is not
        its deletion.  Seen when two cards claimed one path: the one whose write lost the
        race was taken for deleted once the other moved away to its conflict name."""
        if card.kind not in FILE_KINDS:
            return False
        base = self.store.get_base(card.id)
        return base is None or base.path != rel

    # -- cards ---------------------------------------------------------------------------------

    def _board_rects(self, board: str) -> list[Rect]:
        rects = []
        for c in self.replica.cards().values():
            if c.board == board:
                x, y, w, h = c.geometry()
                rects.append(Rect(x, y, w, h))
        return rects

    def _next_z(self, board: str) -> float:
        zs = [c.z for c in self.replica.cards().values() if c.board == board]
        return (max(zs) + 1.0) if zs else 0.0

    def _placed_node(self, board: str, kind: str, node: dict[str, Any] | None) -> dict[str, Any]:
        if node is not None and all(k in node for k in ("x", "y", "width", "height")):
            return {k: v for k, v in node.items() if k not in ("id", "file", "text")}
        width, height = CARD_SIZE.get(kind, (400, 400))
        x, y = free_spot(self._board_rects(board), width, height)
        placed: dict[str, Any] = {"type": "file", "x": x, "y": y, "width": width, "height": height}
        if node:
            placed.update({k: v for k, v in node.items() if k not in ("id", "file", "text")})
        return placed

    def _ensure_board(
        self, rel: str, card_id: str | None = None, node: dict[str, Any] | None = None
    ) -> None:
        if rel == "":
            return
        existing = self.replica.card_at(rel)
        if existing is not None and existing.kind == "board":
            return
        parent = parent_board(rel)
        self._ensure_board(parent)
        view = CardView(
            id=card_id or new_id(),
            kind="board",
            path=rel,
            board=parent,
            z=self._next_z(parent),
            node=self._placed_node(parent, "board", node),
        )
        self.replica.transact(
            SPACE_DOC,
            Origin.FILE,
            lambda d: spacedoc.put_card(d, view),
            summary="new board",
            path=rel,
            card=view.id,
        )
        self._canvases.on_next(rel)

    def _create_file_card(
        self,
        rel: str,
        data: bytes,
        card_id: str | None = None,
        node: dict[str, Any] | None = None,
        z: float | None = None,
    ) -> CardView:
        board = parent_board(rel)
        self._ensure_board(board)
        kind = classify(data)
        view = CardView(
            id=card_id or new_id(),
            kind=kind,
            path=rel,
            board=board,
            z=self._next_z(board) if z is None else z,
            node=self._placed_node(board, kind, node),
        )
        self.replica.transact(
            SPACE_DOC,
            Origin.FILE,
            lambda d: spacedoc.put_card(d, view),
            summary=f"new {kind} card",
            path=rel,
            card=view.id,
            # Stored with the card: its file is here, so far as Tack knows still empty.  Tack
            # killed before taking the content in would otherwise find an empty card with no
            # base at restart, like a peer's never written here, and write it back where the
            # file had meanwhile gone (a ``sed -i`` temp file, renamed onto its target).
            # The content's own base replaces this one (a text card's is kept with its
            # document).
            bases=[Pending(view.id, rel, b"")],
        )
        log.info("new %s card %s", kind, rel)
        self.ingest_file(view, data)
        return self.replica.cards()[view.id]

    def _delete_card(self, card: CardView) -> None:
        doomed = [card]
        if card.kind == "board":
            prefix = card.path + "/"
            doomed += [
                c
                for c in self.replica.cards().values()
                if c.path.startswith(prefix) or c.board == card.path or c.board.startswith(prefix)
            ]

        seen = {c.id: self._seen_in_file(c) for c in doomed}

        def mutate(doc: Doc[Any]) -> None:
            for c in doomed:
                spacedoc.delete_card(doc, c.id, seen[c.id])
            if card.kind != "board":
                return
            for edge in spacedoc.read_edges(doc).values():
                if edge.board == card.path or edge.board.startswith(card.path + "/"):
                    spacedoc.delete_edge(doc, edge.id)

        self.replica.transact(
            SPACE_DOC, Origin.FILE, mutate, summary="deleted", path=card.path, card=card.id
        )
        for c in doomed:
            self.store.delete_base(c.id)
            if c.kind == "board":
                self.store.delete_base(canvas_key(c.path))
        log.info("deleted card %s", card.path)

    def _moved(self, src: str, dst: str, is_dir: bool) -> None:
        """A rename inside the space: the card keeps its id, layout and history."""
        card = self._card_of_file(src)
        if card is None and not is_dir:
            card = self._renamed_while_deleted(src)
        if card is None:
            return
        target = self.replica.card_at(dst)
        collides = False
        if target is not None and target.id != card.id:
            target_base = self.store.get_base(target.id)
            if target_base is not None and target_base.path == dst:
                # ``mv a b`` onto an existing card: b keeps its identity and takes a's content
                # (an edit of b); a is gone.  Tools that save through a temp file look the same.
                self._delete_card(card)
                return
            # The card at ``dst`` is a peer's that was never written here: the user renamed
            # onto a name that was free on their disk.  The rename stands and the path
            # collision rule keeps both cards.
            collides = True
        moved: list[CardView] = [card]
        if card.kind == "board":
            prefix = src + "/"
            moved += [
                c
                for c in self.replica.cards().values()
                if c.path.startswith(prefix) or c.board == src or c.board.startswith(prefix)
            ]

        def renamed(path: str) -> str:
            return dst + path[len(src) :] if path == src or path.startswith(src + "/") else path

        def mutate(doc: Doc[Any]) -> None:
            for c in moved:
                spacedoc.update_card(
                    doc,
                    c.id,
                    path=renamed(c.path) if c.id != card.id else dst,
                    board=renamed(c.board) if c.id != card.id else parent_board(dst),
                )
            for edge in spacedoc.read_edges(doc).values():
                if edge.board == src or edge.board.startswith(src + "/"):
                    spacedoc.put_edge(doc, replace(edge, board=renamed(edge.board)))

        self.replica.transact(
            SPACE_DOC, Origin.FILE, mutate, summary=f"renamed {src} → {dst}", path=dst, card=card.id
        )
        for c in moved:
            base = self.store.get_base(c.id)
            if base is not None:
                self.store.put_base(replace(base, path=renamed(base.path)))
            if c.kind == "board":
                old = self.store.get_base(canvas_key(c.path))
                if old is not None:
                    self.store.delete_base(old.key)
                    new_board = renamed(c.path)
                    self.store.put_base(
                        replace(old, key=canvas_key(new_board), path=canvas_path(new_board))
                    )
        log.info("renamed %s → %s", src, dst)
        if collides:
            self._resolve_path_collisions(self.replica.cards())
        if is_dir:
            self._hint_children(dst)

    # -- ingest --------------------------------------------------------------------------------

    def ingest_file(self, card: CardView, data: bytes) -> None:
        """Take the bytes now in ``card``'s file into the documents."""
        if self._adopt_intent(card.id, data):
            return
        base = self.store.get_base(card.id)
        if (
            base is not None
            and base.path == card.path
            and (
                base.content == data
                if base.doc_id == card.id
                # (a text card's base kept with the space -- made with the card -- is not
                # one a later edit can be merged against: take the file in for one)
                else card.kind != "text" and base.sha256 == sha256_hex(data)
            )
        ):
            return
        ours = base is not None and base.path == card.path
        if not ours and (base is not None or self._has_content(card)):
            if self._desired_bytes(card) == data:
                self._record_base(card, data)
            else:
                # This card holds other content (a peer's) and was never written here:
                # the file is something else, kept as a card of its own.
                self._claim_or_split(card, data)
            return
        if classify(data) == "text":
            if card.kind != "text":
                self.replica.transact(
                    SPACE_DOC,
                    Origin.FILE,
                    lambda d: spacedoc.update_card(d, card.id, kind="text"),
                    summary="now a text card",
                    path=card.path,
                    card=card.id,
                )
            self.ingest_text(
                card.id,
                card.path,
                data,
                base if base is not None and base.doc_id == card.id else None,
            )
        else:
            self._ingest_binary(card, data)

    def ingest_text(
        self,
        doc_id: str,
        path: str,
        data: bytes,
        base: Base | None,
        key: str | None = None,
        record_base: bool = True,
    ) -> None:
        """Merge ``data`` (the file's bytes) into text document ``doc_id`` against ``base``.

        ``record_base=False`` merges a save that is no longer what the file holds (one that
        landed in the old file while Tack replaced it): the file's base stays as it is.
        """
        key = key or doc_id
        text = decode_text(data)
        if not record_base:
            if base is None:
                return
            base_text = decode_text(base.content)
            splices = diff_splices(base_text, text)
            self._merge_through_fork(doc_id, path, key, data, base, base_text, splices, False)
            self._schedule_render_of(doc_id)
            return
        if base is None:
            live = self.replica.text(doc_id)
            splices = diff_splices(live, text)
            self.replica.transact(
                doc_id,
                Origin.FILE,
                lambda d: apply_splices(d.get(TEXT_KEY, type=Text), live, splices),
                summary=summarize(splices),
                path=path,
                bases=[Pending(key, path, data)],
            )
        else:
            base_text = decode_text(base.content)
            splices = diff_splices(base_text, text)
            if (
                base.state is None
                and base.seq == self.replica.latest_seq(doc_id)
                and self.replica.text(doc_id) == base_text
            ):
                self.replica.transact(
                    doc_id,
                    Origin.FILE,
                    lambda d: apply_splices(d.get(TEXT_KEY, type=Text), base_text, splices),
                    summary=summarize(splices),
                    path=path,
                    bases=[Pending(key, path, data)],
                )
            else:
                self._merge_through_fork(doc_id, path, key, data, base, base_text, splices)
        if self.replica.text(doc_id) != text:
            self._schedule_render_of(doc_id)

    def _merge_through_fork(
        self,
        doc_id: str,
        path: str,
        key: str,
        data: bytes,
        base: Base,
        base_text: str,
        splices: list[Splice],
        record_base: bool = True,
    ) -> None:
        """The document moved on since the base: three-way merge by the CRDT (DESIGN §3)."""
        fork = self.replica.fork(doc_id, base)
        ftext = fork.get(TEXT_KEY, type=Text)
        if str(ftext) != base_text:
            # The stored base state does not match its content; never guess: take the disk
            # text as an edit of the live document, which keeps every character on disk.
            log.error("base of %s does not match its state; merging against the live text", path)
            if record_base:
                self.ingest_text(doc_id, path, data, None, key)
            return
        before = fork.get_state()
        with fork.transaction():
            apply_splices(ftext, base_text, splices)
        update = fork.get_update(before)
        self.replica.apply_update(
            doc_id,
            update,
            Origin.FILE,
            summary=summarize(splices),
            path=path,
            bases=[Pending(key, path, data, state=fork.get_update())] if record_base else [],
        )

    def _ingest_binary(self, card: CardView, data: bytes) -> None:
        digest = self.blobs.put(data)
        pending = Pending(card.id, card.path, AUTHORED_HERE, sha256=digest)
        if card.kind == "binary" and card.blob == digest:
            self.store.put_base(
                Base(card.id, card.path, SPACE_DOC, b"", digest, self.replica.latest_seq(SPACE_DOC))
            )
            return
        # The version this one replaced is the one the file showed (its base), not the card's
        # blob: a peer's newer version may have arrived and not been written here yet.  A
        # card with no version yet replaced none (its base is the one made with the card).
        base = self.store.get_base(card.id)
        seen = card.blob
        if base is not None and base.doc_id == SPACE_DOC and card.blob:
            seen = base.sha256
        self.replica.transact(
            SPACE_DOC,
            Origin.FILE,
            lambda d: spacedoc.update_card(
                d,
                card.id,
                kind="binary",
                blob=digest,
                size=len(data),
                blob_prev=card.history_after_replacing(seen),
            ),
            summary=f"binary, {len(data)} bytes",
            path=card.path,
            card=card.id,
            bases=[pending],
        )

    # -- canvas ingest -------------------------------------------------------------------------

    def ingest_canvas(
        self, board: str, data: bytes | None = None, prior: bytes | None = None
    ) -> None:
        """Take a board's canvas file into the space document, field by field."""
        rel = canvas_path(board)
        key = canvas_key(board)
        if data is None:
            data = read_bytes(self._writable(rel))
        if data is None:
            self._canvases.on_next(board)  # deleted: the layout lives on; write it back
            return
        if prior is None and self._adopt_intent(key, data):
            return
        base = self.store.get_base(key)
        if prior is None:
            if base is not None and base.content == data:
                return
            prior = base.content if base is not None else None
        try:
            disk = parse_canvas(data)
        except CanvasError as exc:
            self._problem(
                key, f"{rel} does not parse ({exc}); Tack will not touch it until it does"
            )
            return
        self._clear_problem(key)
        try:
            before = parse_canvas(prior) if prior is not None else empty_canvas()
        except CanvasError:
            before = empty_canvas()
        self._apply_canvas(board, before, disk, data)
        self._canvases.on_next(board)

    def _apply_canvas(self, board: str, before: Canvas, disk: Canvas, data: bytes) -> None:
        cards = self.replica.cards()
        prior_nodes = {str(n["id"]): n for n in before.nodes}
        disk_ids = {str(n["id"]) for n in disk.nodes}
        new_files: list[tuple[str, str, dict[str, Any]]] = []
        notes: list[tuple[str, str]] = []
        adopted: set[str] = set()

        def mutate(doc: Doc[Any]) -> None:
            for index, node in enumerate(disk.nodes):
                nid = str(node["id"])
                card = cards.get(nid)
                fields = {k: v for k, v in node.items() if k != "id"}
                old = prior_nodes.get(nid, {})
                if card is None and spacedoc.read_card(doc, nid) is not None:
                    # A card deleted a moment ago, still shown by a stale canvas: it stays
                    # deleted, but a layout change made to its node is kept on the tombstone
                    # (an edit that brings the card back brings it back where it was put).
                    moved = {
                        k: v
                        for k, v in fields.items()
                        if k not in ("file", "text", "type") and old.get(k, _MISSING) != v
                    }
                    if moved:
                        spacedoc.set_node_fields(doc, nid, moved)
                    continue
                if card is None:
                    self._new_canvas_node(
                        doc, board, nid, fields, float(index), new_files, notes, adopted
                    )
                    continue
                derived = (
                    ("file",)
                    if card.kind in ("text", "binary", "board")
                    else (("text",) if card.kind == "note" else ())
                )
                changes = {
                    k: v
                    for k, v in fields.items()
                    if k not in derived and old.get(k, _MISSING) != v
                }
                removed = tuple(
                    k for k in old if k not in fields and k != "id" and k not in derived
                )
                if changes or removed:
                    spacedoc.set_node_fields(doc, nid, changes, removed)
                if card.kind == "note" and fields.get("text") != old.get("text"):
                    notes.append((nid, str(fields.get("text", ""))))
                if card.board != board and card.kind in CANVAS_ONLY_KINDS:
                    spacedoc.update_card(doc, nid, board=board)
            for nid in prior_nodes:
                card = cards.get(nid)
                if (
                    nid not in disk_ids
                    and card is not None
                    and card.board == board
                    and card.kind in CANVAS_ONLY_KINDS
                ):
                    spacedoc.delete_card(doc, nid, self._seen(card))
            # z order: the order of nodes in the file
            order = [str(n["id"]) for n in disk.nodes if str(n["id"]) in cards]
            current = sorted(
                (c for c in cards.values() if c.board == board and c.id in disk_ids),
                key=lambda c: (c.z, c.id),
            )
            if [c.id for c in current] != order:
                for index, nid in enumerate(order):
                    spacedoc.update_card(doc, nid, z=float(index))
            prior_edges = {str(e["id"]): e for e in before.edges}
            for edge in disk.edges:
                eid = str(edge["id"])
                if prior_edges.get(eid) != edge:
                    spacedoc.put_edge(
                        doc, EdgeView(eid, board, {k: v for k, v in edge.items() if k != "id"})
                    )
            disk_edges = {str(e["id"]) for e in disk.edges}
            for eid in prior_edges:
                if eid not in disk_edges:
                    spacedoc.delete_edge(doc, eid)
            if disk.extra != before.extra:
                spacedoc.set_canvas_extra(doc, board, disk.extra)

        rel = canvas_path(board)
        self.replica.transact(
            SPACE_DOC,
            Origin.FILE,
            mutate,
            summary="layout edited",
            path=rel,
            card=canvas_key(board),
            bases=[Pending(canvas_key(board), rel, data)],
        )
        for nid, text in notes:
            note_base = self.store.get_base(nid)
            self.ingest_text(nid, rel, encode_text(text), note_base)
        for nid, target, fields in new_files:
            self._adopt_file_node(board, nid, target, fields)

    def _new_canvas_node(
        self,
        doc: Doc[Any],
        board: str,
        nid: str,
        fields: dict[str, Any],
        z: float,
        new_files: list[tuple[str, str, dict[str, Any]]],
        notes: list[tuple[str, str]],
        adopted: set[str],
    ) -> None:
        if spacedoc.read_card(doc, nid) is not None:
            return  # a card deleted a moment ago, still shown by a stale canvas: stays deleted
        ntype = fields.get("type")
        if ntype == "file" and isinstance(fields.get("file"), str):
            target = str(fields["file"])
            if target.endswith("/" + CANVAS_NAME):
                target = target[: -len(CANVAS_NAME) - 1]
            existing = self.replica.card_at(target)
            if existing is not None and existing.id not in adopted:
                # Another node already stands for this file: take this node's layout.
                adopted.add(existing.id)
                layout = {k: v for k, v in fields.items() if k not in ("file", "type")}
                spacedoc.set_node_fields(doc, existing.id, layout)
                return
            if (
                existing is None
                and os.path.lexists(self.root / target)
                and not self.rules.is_ignored(target)
            ):
                new_files.append((nid, target, fields))
                return
        if ntype == "text":
            kind = "note"
            node = {k: v for k, v in fields.items() if k != "text"}
            notes.append((nid, str(fields.get("text", ""))))
        elif ntype == "link":
            kind, node = "link", fields
        elif ntype == "group":
            kind, node = "group", fields
        else:
            kind, node = "node", fields
        spacedoc.put_card(doc, CardView(id=nid, kind=kind, path="", board=board, z=z, node=node))

    def _adopt_file_node(self, board: str, nid: str, target: str, fields: dict[str, Any]) -> None:
        path = self._writable(target)
        if path.is_dir():
            self._ensure_board(target, nid, fields)
            self._hint_children(target)
            return
        data = read_bytes(path)
        if data is not None and self.replica.card_at(target) is None:
            self._create_file_card(target, data, nid, fields)

    # -- documents → disk ----------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.doc_id == SPACE_DOC:
            self._on_space_change(change)
            return
        card = self.replica.cards().get(change.doc_id)
        if card is None:
            return
        if card.kind == "note":
            self._canvases.on_next(card.board)
        elif change.origin is not Origin.FILE:
            self._renders.on_next(card.id)

    def _awaited_text(self, card: CardView) -> bool:
        """A text card whose content a peer was asked for and nothing of it is here: its
        render waits for the content (or for the peer's answer that there is none)."""
        return card.kind == "text" and self.replica.awaited(card.id)

    def _on_settled(self, doc_id: str) -> None:
        """A peer answered (or can no longer answer) for a document of which nothing had
        arrived: if still nothing has, its card's render was held back (see
        :meth:`render_card`) and runs now -- an empty card is written empty."""
        card = self.replica.cards().get(doc_id)
        if card is not None and card.kind == "text" and self.replica.latest_seq(doc_id) == 0:
            self._renders.on_next(doc_id)

    def _seen_in_file(self, card: CardView) -> str:
        """What the user who deleted ``card``'s file had seen: what the file showed (its
        base), not what reached the document while the delete waited out its grace period --
        an edit that arrived then was never on this disk, so it must bring the card back."""
        base = self.store.get_base(card.id)
        if base is not None:  # wherever the file was: a peer's rename may not be on disk yet
            if card.kind in CONTENT_KINDS and base.doc_id == card.id:
                state = self.replica.fork(card.id, base).get_state()
                return base64.b64encode(state).decode()
            if card.kind == "binary" and base.doc_id == SPACE_DOC:
                return base.sha256
        return self._seen(card)

    def _seen(self, card: CardView) -> str:
        """What a deletion of ``card`` has seen: its content's state vector (or its blob)."""
        if card.kind in CONTENT_KINDS:
            return base64.b64encode(self.replica.state_vector(card.id)).decode()
        return card.blob or "-"

    def _deleted_too_soon(self, card_id: str) -> bool:
        """A peer deleted this card: do we hold something the deleter had not seen?"""
        tomb = spacedoc.read_cards(self.replica.space, deleted=True).get(card_id)
        if tomb is None:
            return False
        base = self.store.get_base(card_id)
        if tomb.kind in CONTENT_KINDS:
            try:
                seen = base64.b64decode(tomb.deleted, validate=True)
                unseen = self.replica.encode_state(card_id, seen)
            except Exception:
                return False
            # A v1 update starts with the number of clients whose inserted items follow
            # (then the delete set).  An update against a state vector always repeats the
            # whole delete set, so only "items the deleter had not seen" counts: deletes
            # alone, unseen, cannot be lost by a delete of the card.
            if unseen[:1] not in (b"", b"\x00"):
                return True
        elif (
            tomb.kind == "binary"
            and base is not None
            and base.sha256 != tomb.deleted
            and base.sha256 not in tomb.replaced_blobs()
        ):
            # Our version is neither the one the deleter saw nor one that the deleter's
            # version replaced (an older version, still on this disk, had been seen): it
            # was made here while the card was deleted there.
            return True
        if tomb.kind in FILE_KINDS and base is not None and base.path:
            disk = read_bytes(self.root / base.path)
            if disk is not None and not self._matches_base(base, tomb.id, disk):
                return True  # edited on disk here, not yet ingested
        return False

    def _too_large(self, rel: str, size: int) -> bool:
        """Files over :data:`MAX_CARD_BYTES` are left alone and reported, never read whole."""
        if size <= MAX_CARD_BYTES:
            self._clear_problem(f"size:{rel}")
            return False
        self._problem(
            f"size:{rel}",
            f"{rel} is {size / 2**20:.0f} MiB, over the {MAX_CARD_BYTES // 2**20} MiB card "
            "limit; it is left as it is and not synced",
        )
        return True

    def _tombstone_at(self, rel: str) -> CardView | None:
        """A deleted card whose file (here: where this device last wrote it) is ``rel``."""
        tombs = []
        for c in spacedoc.read_cards(self.replica.space, deleted=True).values():
            if c.kind not in FILE_KINDS:
                continue
            base = self.store.get_base(c.id)
            if base is not None and rel in (c.path, base.path):
                tombs.append(c)
        return min(tombs, key=lambda c: c.id) if tombs else None

    def _renamed_while_deleted(self, src: str) -> CardView | None:
        """The card a peer deleted whose file here, ``src`` (where this device last wrote
        it, the delete not yet done on this disk), the user has just renamed: brought back,
        as an edit made here while deleted elsewhere brings a card back.  The rename is the
        user acting on the card; taken as a new card instead, its content would live on
        twice once another device's edit brought the deleted card back as well."""
        tomb = self._tombstone_at(src)
        if tomb is None:
            return None
        base = self.store.get_base(tomb.id)
        if base is None or base.path != src:
            return None
        self._undelete(tomb.id, "renamed")
        return self.replica.cards().get(tomb.id)

    def _undelete(self, card_id: str, how: str = "edited") -> None:
        card = spacedoc.read_cards(self.replica.space, deleted=True).get(card_id)
        if card is None:
            return
        log.info("%s was deleted elsewhere while %s here: keeping it", card.path or card_id, how)
        self.replica.transact(
            SPACE_DOC,
            Origin.API,
            lambda d: spacedoc.undelete(d, card_id),
            summary=f"kept: {how} here while deleted elsewhere",
            path=card.path,
            card=card_id,
        )
        if card.path:
            self.hint(card.path)

    def _resolve_path_collisions(self, cards: dict[str, CardView]) -> None:
        """Two cards claim one path (created apart on two devices): every device applies the
        same rule, so they agree without talking.  Two folders are one folder (the card with
        the smaller id stays); two files both stay, the one with the larger id renamed."""
        by_path: dict[str, list[CardView]] = {}
        for card in cards.values():
            if card.path and card.kind in (*FILE_KINDS, "board"):
                by_path.setdefault(card.path, []).append(card)
        fixes: list[tuple[CardView, str | None]] = []
        for path, claimants in by_path.items():
            if len(claimants) < 2:
                continue
            claimants.sort(key=lambda c: c.id)
            taken = set(by_path)
            for loser in claimants[1:]:
                if loser.kind == "board" or claimants[0].kind == "board":
                    fixes.append((loser, None))
                    continue
                n = 1
                new_path = conflict_name(path, loser.id[:8])
                while new_path in taken:
                    n += 1
                    new_path = conflict_name(path, f"{loser.id[:8]} {n}")
                taken.add(new_path)
                fixes.append((loser, new_path))
        if not fixes:
            return

        def mutate(doc: Doc[Any]) -> None:
            for loser, target in fixes:
                if target is None:
                    spacedoc.delete_card(doc, loser.id, "-")
                else:
                    spacedoc.update_card(doc, loser.id, path=target)

        for loser, target in fixes:
            log.warning(
                "two cards were created at %s apart: %s",
                loser.path,
                f"keeping both, this one as {target}" if target else "merged",
            )
        self.replica.transact(SPACE_DOC, Origin.API, mutate, summary="path conflict resolved")

    def _on_space_change(self, change: Change) -> None:
        now = self.replica.cards()
        boards: set[str] = set()
        # In id order, not the set's (which follows string hashing, so differs from run to
        # run): the renders queued here go out in this order, and the same history must take
        # the same course every time (the model test replays histories).
        for card_id in sorted(change.cards):
            old, new = self._known.get(card_id), now.get(card_id)
            if new is None:
                self._known.pop(card_id, None)
            else:
                self._known[card_id] = new
            if old == new:
                continue
            for c in (old, new):
                if c is not None:
                    boards.add(c.board)
            if change.origin is not Origin.FILE:
                if new is None and old is not None:
                    if change.origin is Origin.PEER and self._deleted_too_soon(card_id):
                        self.scheduler.schedule(
                            lambda *_, cid=card_id: self._safely(self._undelete)(cid)
                        )
                        continue
                    self._gone[card_id] = old
                elif old is None and new is not None and self._awaited_text(new):
                    continue  # not rendered twice: its content's arrival renders it
                self._renders.on_next(card_id)
        if change.origin is Origin.PEER:
            touched_paths = {now[c].path for c in change.cards if c in now and now[c].path}
            if any(len(self.replica.cards_at(p)) > 1 for p in touched_paths):
                self.scheduler.schedule(
                    lambda *_: self._resolve_path_collisions(self.replica.cards())
                )
        if change.origin is not Origin.FILE:
            # Edges and canvas-level fields may have changed too: every board re-checks its
            # canvas (a render that finds nothing new writes nothing).
            boards.update(self._all_boards())
        for board in sorted(boards):
            self._canvases.on_next(board)

    def _all_boards(self) -> set[str]:
        return {""} | {c.path for c in self.replica.cards().values() if c.kind == "board"}

    def _schedule_render_of(self, doc_id: str) -> None:
        card = self.replica.cards().get(doc_id)
        if card is None:
            return
        if card.kind == "note":
            self._canvases.on_next(card.board)
        else:
            self._renders.on_next(doc_id)

    def blob_arrived(self, digest: str) -> None:
        """A blob came from a peer: the cards waiting for it can now be written."""
        for card in self.replica.cards().values():
            if card.kind == "binary" and card.blob == digest:
                self._renders.on_next(card.id)

    def render_card(self, card_id: str) -> None:
        """Write a card's document state into its file, merging any unseen disk edit first."""
        card = self.replica.cards().get(card_id)
        if card is None:
            gone = self._gone.pop(card_id, None)
            if gone is not None:
                self._render_delete(gone)
            return
        if card.kind == "board":
            self._writable(card.path).mkdir(parents=True, exist_ok=True)
            self._canvases.on_next(card.path)
            return
        if card.kind not in FILE_KINDS or not card.path:
            # A file card without a path: a peer's update took one value of the path away
            # and the one that wins has not arrived yet (two devices renamed it at once, a
            # third deleted it).  Nothing to write until it comes.
            return
        if len(self.replica.cards_at(card.path)) > 1:
            # Two cards claim the path and the collision rule has not run here (a crash or
            # stop came between a peer's change and the resolution it scheduled): writing
            # either would only be overwritten by the other, for ever.  Resolve it first.
            self._resolve_path_collisions(self.replica.cards())
            resolved = self.replica.cards().get(card_id)
            if resolved is None or resolved.path != card.path:
                self._renders.on_next(card_id)
                return
        base = self.store.get_base(card.id)
        if base is not None and base.path != card.path:
            if not os.path.lexists(self.root / base.path):
                # Its file here is gone: the user deleted it (or an editor is between moving
                # it away and writing it anew).  The delete names this card by where its
                # file was, so a peer's move must not carry it off, nor move the card's
                # claim to the new path, where a file the user makes would then be taken
                # for the card's own, edited.  The delete is confirmed first; a file back
                # by then is moved.
                self._confirm_later(base.path)
                return
            if not os.path.lexists(self.root / card.path) and (
                card.path in self._missing or self._file_of_another_gone(card)
            ):
                # Another card's file was at the destination and is gone, its delete not
                # confirmed yet (as for a write, below): moving this card's file there would
                # hand the deleted card's name to it, and the deleted card, rendered next,
                # would take this card's content for an edit of its own.
                self.hint(card.path)
                return
            if not self._render_move(card, base):
                return
            base = self.store.get_base(card.id)
            moved = self.replica.cards().get(card_id)  # an edit made here went in first
            if moved is None:
                return
            card = moved
        path = self._writable(card.path)
        disk = read_bytes(path)
        if disk is None and card.path in self._missing:
            # A file deleted here is being confirmed as deleted at this path: writing this
            # card there now would hand the deleted card's name to it (and its content to the
            # deleted card).  The confirmation renders the cards at the path afterwards.
            return
        if disk is None and self._file_of_another_gone(card):
            self.hint(card.path)  # its delete is looked at (and confirmed) first, as above
            return
        if disk is None and base is None and self._awaited_text(card):
            # A new card whose content a peer is about to send (a join): write the file
            # once, with it, rather than empty first.  Its arrival renders the card, and so
            # does the peer's answer that there is none (or the connection's end).
            return
        ours = base is not None and base.path == card.path
        if disk is None and ours:
            # The file Tack wrote here is gone: the user deleted it (or an editor is between
            # moving it away and writing it anew).  A render never brings it back: the
            # delete is confirmed after the grace period, or the new file is taken in.
            self.hint(card.path)
            return
        if disk is not None and not ours and (base is not None or self._has_content(card)):
            # A file this card never wrote sits at its path (a peer's card landing on a
            # local file, or a rename onto one): keep both, never merge them blindly.
            self._claim_or_split(card, disk)
            return
        if disk is not None and base is not None and not self._matches_base(base, card.id, disk):
            # Edited since the base and Tack was not told yet (or an editor is mid-save):
            # let the debounced ingest take it in once the file is quiet; it renders after.
            self.hint(card.path)
            return
        if disk is not None and base is None:
            self.ingest_file(card, disk)
            card = self.replica.cards().get(card_id)
            if card is None:
                return
        if (
            card.kind == "binary"
            and disk is not None
            and base is not None
            and base.doc_id == SPACE_DOC
            and base.sha256 == sha256_hex(disk)
            and card.blob not in (base.sha256, "")
            and base.sha256 not in card.replaced_blobs()
            and base.content == AUTHORED_HERE
        ):
            # Replaced here and elsewhere at once; the other version won everywhere.  Ours is
            # kept beside it, never dropped -- by this device only, the one where that
            # version was made: a device that merely received it from a peer keeps no copy
            # (else every device holding it would keep one).
            self._keep_losing_version(card, disk)
            # Kept once: another render before the winner is written (in the same batch, say)
            # must not keep another copy.  A crash between the two keeps a second copy, never
            # none.
            self.store.put_base(replace(base, content=b""))
        desired = self._desired_bytes(card)
        if desired is None:
            return  # a blob that has not arrived: never write an empty or partial file
        self._write(card, path, disk, desired)

    def _keep_losing_version(self, card: CardView, data: bytes) -> None:
        tag = self.replica.device[:7] or "here"
        rel = conflict_name(card.path, tag)
        n = 1
        while self.replica.card_at(rel) is not None or os.path.lexists(self.root / rel):
            n += 1
            rel = conflict_name(card.path, f"{tag} {n}")
        outcome = atomic_write(self._writable(rel), data, expected=None)
        if isinstance(outcome, Changed):
            return
        self._create_file_card(rel, data)
        log.warning(
            "%s was replaced here and elsewhere at once; kept this version as %s", card.path, rel
        )

    def _record_base(self, card: CardView, data: bytes) -> None:
        if card.kind == "text":
            pending = Pending(card.id, card.path, data)
            self.store.put_base(self._base_now(card.id, pending))
        else:
            pending = Pending(card.id, card.path, b"", sha256=sha256_hex(data))
            self.store.put_base(self._base_now(SPACE_DOC, pending))

    def _writable(self, rel: str) -> Path:
        """The path of a card or canvas file Tack may read for and write on behalf of the
        space: inside it (no ``..``, no symlinked folder leading out), not ignored (``.tack/``
        and ``.git/`` are never a peer's to touch), and not itself a symlink (whose target
        could lie anywhere).

        During a render batch a folder found safe is not looked at again for the batch's
        other files (a join writes a hundred files per folder); the file itself always is.
        The batch is one turn of the loop, and the batch's writes happen in it anyway."""
        folder = rel.rpartition("/")[0]
        known = self._safe_folders is not None and folder in self._safe_folders
        if known:
            validate_rel(rel)
            path = self.root / rel
        else:
            path = resolve_inside(self.root, rel)
        if self.rules.is_ignored(rel):
            raise UnsafePath(f"{rel} is an ignored path; a peer's card may not use it")
        if known:  # only the file itself is looked at (one lstat, on the path built once)
            if os.path.islink(path):
                raise _through_link(rel, rel)
        else:
            step = self.root
            for part in rel.split("/"):
                step = step / part
                if step.is_symlink():
                    raise _through_link(rel, step.relative_to(self.root).as_posix())
        if self._safe_folders is not None:
            self._safe_folders.add(folder)
        return path

    def _has_content(self, card: CardView) -> bool:
        if card.kind == "text":
            return self.replica.latest_seq(card.id) > 0
        return bool(card.blob)

    def _claim_or_split(self, card: CardView, disk: bytes) -> None:
        """A file this card never wrote sits at its path.

        If another card's base says the file is *that* card (about to move away), render
        that card first, then this one again.  Otherwise the file is the user's own: it
        becomes a card of its own and the path-collision rule keeps both.

        The file is that other card's also when it differs from the other's base, if that
        card has moved away from the path: edited here before its move was written (say, a
        peer's rename onto a name taken meanwhile moved it on to a conflict name, and Tack
        stopped before writing that).  A file at a card's base path is that card's file,
        edited -- as everywhere else; the move takes the edit in first.
        """
        owner = self._file_owner(card, disk)
        if owner is None:
            tomb = self._deleted_owner(card.path, disk)
            if tomb is not None:
                # A deleted card's file, its delete not yet written here, and unedited: the
                # delete is finished first (never split off: that card is gone, and would
                # come back twice if an edit elsewhere revived it).
                self._render_delete(tomb)
                self._renders.on_next(card.id)
                return
            self._split_local_file(card, disk)
            return
        other, base = owner
        if other.id in self._claiming:
            # A swap: peers moved each card to where the other's file is here.  Park this
            # file under a free name so the other card can move in; it moves on from there
            # with its next render.
            self._park(other, base)
        elif other.path != card.path:
            self._claiming.add(card.id)
            try:
                self.render_card(other.id)
            finally:
                self._claiming.discard(card.id)
        self.scheduler.schedule_relative(
            self.timing.render * 10, lambda *_: self._renders.on_next(card.id)
        )

    def _file_owner(self, card: CardView, disk: bytes) -> tuple[CardView, Base] | None:
        """The other live card whose file ``disk`` at ``card``'s path is, by its base: one
        whose base holds exactly ``disk``, else one that has moved away from the path."""
        cards = self.replica.cards()
        edited: tuple[CardView, Base] | None = None
        for key in self.store.keys_with_base_at(card.path):
            other = cards.get(key)
            if other is None or other.id == card.id:
                continue
            base = self.store.get_base(key)
            if base is None or base.path != card.path:
                continue
            if self._matches_base(base, other.id, disk):
                return other, base
            if edited is None and other.path != card.path:
                edited = (other, base)
        return edited

    def _deleted_owner(self, rel: str, disk: bytes) -> CardView | None:
        """A deleted card whose base is at ``rel`` and holds exactly ``disk``: its file here,
        whose delete has not been written yet."""
        live = self.replica.cards()
        for key in self.store.keys_with_base_at(rel):
            found = self._unwritten_delete(key, live)
            if found is not None:
                tomb, base = found
                if base.path == rel and self._matches_base(base, key, disk):
                    return tomb
        return None

    def _unwritten_delete(
        self, key: str, live: dict[str, CardView]
    ) -> tuple[CardView, Base] | None:
        """The deleted file card ``key`` and its base, if it still has one: a peer's delete
        this device has not finished (a local delete drops the base)."""
        if key in live or key.endswith(INTENT) or key.startswith("canvas:"):
            return None
        tomb = spacedoc.read_card(self.replica.space, key)
        if tomb is None or not tomb.deleted or tomb.kind not in FILE_KINDS:
            return None
        base = self.store.get_base(tomb.id)
        return (tomb, base) if base is not None else None

    def _park(self, card: CardView, base: Base) -> None:
        """Move ``card``'s file (at its base path) to a free name beside it and record it
        there (a crash in between leaves a rename the start-up scan recognises)."""
        n = 1
        rel = conflict_name(base.path, "moving")
        while self.replica.card_at(rel) is not None or os.path.lexists(self.root / rel):
            n += 1
            rel = conflict_name(base.path, f"moving {n}")
        src, dst = self._writable(base.path), self._writable(rel)
        os.link(src, dst)
        os.unlink(src)
        fsync_dir(dst.parent)
        self.store.put_base(replace(base, path=rel))
        self._renders.on_next(card.id)

    def _split_local_file(self, card: CardView, disk: bytes) -> None:
        local = self._create_file_card(card.path, disk, new_id())
        self._resolve_path_collisions(self.replica.cards())
        log.info("kept the local %s beside the peer's card of the same name", local.path)
        self._renders.on_next(card.id)

    def _matches_base(self, base: Base, card_id: str, disk: bytes) -> bool:
        if base.doc_id == card_id:
            return base.content == disk
        return base.sha256 == sha256_hex(disk)

    def _desired_bytes(self, card: CardView) -> bytes | None:
        if card.kind == "text":
            return encode_text(self.replica.text(card.id))
        if not SHA256_HEX.match(card.blob):
            return None  # no blob, or a peer's malformed one: nothing to write
        return self.blobs.get(card.blob)

    def _render_batch(self, card_ids: list[str]) -> None:
        """Render several cards, their file writes sharing the fsyncs (see
        :func:`fsbridge.atomic.atomic_write_many`): a join or a checkout arriving from a peer
        costs a few fsyncs per batch, not three per card."""
        self._batch, self._batch_paths, self._safe_folders = [], set(), set()
        try:
            for card_id in card_ids:
                self._safely(self.render_card)(card_id)
        finally:
            batch, self._batch, self._safe_folders = self._batch, None, None
            self._batch_paths = set()
        self._write_planned(batch)

    def _write(self, card: CardView, path: Path, disk: bytes | None, desired: bytes) -> None:
        pending = (
            Pending(card.id, card.path, desired)
            if card.kind == "text"
            else Pending(card.id, card.path, b"", sha256=sha256_hex(desired))
        )
        doc_id = card.id if card.kind == "text" else SPACE_DOC
        old_base = self.store.get_base(card.id)
        new_base = self._base_now(doc_id, pending)
        if disk == desired:
            if (
                card.kind == "binary"
                and old_base is not None
                and old_base.sha256 == new_base.sha256
            ):
                new_base = replace(new_base, content=old_base.content)  # still authored here
            self.store.put_base(new_base)
            return
        if disk is not None and open_for_writing(path):
            # An editor is mid-save: replacing the file now would send the rest of its save
            # into an unlinked file.  Take the save in once it is closed; that renders again.
            self.hint(card.path)
            return
        # Hold the old file open: a save that lands in it while we replace it (an editor
        # writing in place) must be read once the editor is done, not half-way.
        old_fd = None
        if disk is not None:
            with contextlib.suppress(OSError):
                old_fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        plan = _PlannedWrite(card, path, disk, desired, new_base, old_base, old_fd)
        if self._batch is None:
            self._write_planned([plan])
            return
        if path in self._batch_paths:
            batch, self._batch = self._batch, []  # one file twice: the first write goes first
            self._batch_paths = set()
            self._write_planned(batch)
        self._batch.append(plan)
        self._batch_paths.add(path)

    def _write_planned(self, plans: list[_PlannedWrite]) -> None:
        if not plans:
            return
        outcomes: list[Written | Changed | OSError]
        try:
            if len(plans) == 1:
                plan = plans[0]
                outcomes = [
                    self._write_with_intent(plan.path, plan.desired, plan.disk, [plan.new_base])
                ]
            else:
                outcomes = self._write_many_with_intent(
                    [(plan.path, plan.desired, plan.disk, [plan.new_base]) for plan in plans]
                )
        except (OSError, StoreError) as exc:
            if len(plans) == 1:
                plans[0].close()
                raise  # the caller's _safely reports and retries
            outcomes = [exc if isinstance(exc, OSError) else OSError(str(exc))] * len(plans)
            if isinstance(exc, StoreError):
                for plan in plans:
                    plan.close()
                    self._retry_later(plan.card.id, exc, self._safely(self.render_card))
                return
        except BaseException:
            for plan in plans:
                plan.close()
            raise
        # A batch of many files (a join, a checkout) logs one line, not one per file.
        written: list[str] | None = [] if len(plans) > LOG_EACH_WRITE_UP_TO else None
        for plan, outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, OSError):
                plan.close()
                self._retry_later(plan.card.id, outcome, self._safely(self.render_card))
            else:
                self._safely(self._after_write(plan, outcome, written))(plan.card.id)
        if written:
            log.info("wrote %s", files_in_folders(written))

    def _write_many_with_intent(
        self, writes: list[tuple[Path, bytes, bytes | None, list[Base]]]
    ) -> list[Written | Changed | OSError]:
        """:meth:`_write_with_intent` for many files (path, bytes, expected, bases): one
        transaction for all the intents, made durable with the temp files (one syncfs for
        both, see :class:`fsbridge.atomic.Companion`) before any file is replaced, one batch
        of file writes, one transaction for the new bases."""
        old_inodes = [self._inode(path) for path, _, _, _ in writes]

        def store_intents(temp_inodes: list[int | None]) -> Companion | None:
            intents = [replace(b, key=b.key + INTENT) for _, _, _, bases in writes for b in bases]
            inodes = {
                b.key + INTENT: f"{old} {temp or 0}"
                for (_, _, _, bases), old, temp in zip(writes, old_inodes, temp_inodes, strict=True)
                for b in bases
            }
            if self.store.path is None:
                self.store.put_bases_durably(intents, inodes)
                return None
            # Made durable with the temp files, before any file is replaced: by their one
            # syncfs when the store is on their file system (as .tack/ is), else by a
            # barrier of its own.
            self.store.put_bases_and_meta(intents, inodes)
            return Companion(self.store.path, self.store.barrier)

        outcomes = atomic_write_many(
            [(path, data, expected) for path, data, expected, _ in writes], store_intents
        )
        self._settle_intents(
            [
                (bases, isinstance(outcome, Written))
                for (_, _, _, bases), outcome in zip(writes, outcomes, strict=True)
            ]
        )
        return outcomes

    def _settle_intents(self, writes: list[tuple[list[Base], bool]]) -> None:
        """After a write attempt: the intents of each file written become its bases; those
        of a file not written are dropped."""
        put: dict[str, Base] = {}  # by key: each key once
        drops: set[str] = set()
        for bases, written in writes:
            for base in bases:
                if written:
                    put[base.key] = base
                else:
                    drops.add(base.key + INTENT)
        self.store.replace_bases_from(
            [(base, base.key + INTENT) for base in put.values()],
            sorted(drops - {key + INTENT for key in put}),
        )

    def _after_write(
        self, plan: _PlannedWrite, outcome: Written | Changed, written: list[str] | None = None
    ) -> Callable[[str], None]:
        return lambda _: self._finish_write(plan, outcome, written)

    def _finish_write(
        self, plan: _PlannedWrite, outcome: Written | Changed, written: list[str] | None = None
    ) -> None:
        """Close what the write held and take in a save that raced it; log the write (or,
        when ``written`` is a list, add the path to it for one line about the batch)."""
        card, old_fd, old_base = plan.card, plan.old_fd, plan.old_base
        if isinstance(outcome, Changed) or outcome.late_bytes is None or card.kind != "text":
            if old_fd is not None:
                self._closer.close(old_fd)
            if isinstance(outcome, Changed):
                self.hint(card.path)  # edited under us: ingest that first, then render again
                return
        self.writes += 1
        if written is None:
            log.info("wrote %s", card.path)
        else:
            written.append(card.path)
            log.debug("wrote %s", card.path)
        if outcome.late_bytes is not None and card.kind == "text" and old_fd is not None:
            log.warning("%s was saved while Tack replaced it; merging that save", card.path)
            st = os.fstat(old_fd)
            held = os.pread(old_fd, st.st_size, 0) if st.st_size else b""
            if outcome.late_bytes and held != outcome.late_bytes and not outcome.in_place:
                # A whole file renamed in during our replace (an editor's temp + rename): it
                # is complete, merge it now.  (An in-place save may still be being written
                # into the displaced file: it is followed until its writer is done.)
                os.close(old_fd)
                self.ingest_text(
                    card.id, card.path, outcome.late_bytes, old_base, record_base=False
                )
            else:
                self._watch_late_save(card.id, old_fd, old_base, None, 0)

    def _watch_late_save(
        self,
        card_id: str,
        fd: int,
        old_base: Base | None,
        last: tuple[int, int] | None,
        polls: int,
    ) -> None:
        """Merge a save that landed in the file Tack just replaced, once its writer is done.

        The old file is still open: poll it until its size and mtime hold still; an empty
        file (an editor that truncated but has not written yet) is waited for, and if it
        stays empty it is ignored rather than taken as "delete everything".
        """

        def poll(*_: object) -> None:
            try:
                st = os.fstat(fd)
            except OSError:
                os.close(fd)
                return
            now = (st.st_size, st.st_mtime_ns)
            writing = fd_open_for_writing(fd)  # an editor still has it open: not done yet
            waited = polls * self.timing.debounce * 2
            if ((now != last or st.st_size == 0) and polls < LATE_SAVE_POLLS) or (
                writing and waited < HELD_OPEN_WAIT
            ):
                self._watch_late_save(card_id, fd, old_base, now, polls + 1)
                return
            try:
                data = os.pread(fd, st.st_size, 0) if st.st_size else b""
            finally:
                os.close(fd)
            card = self.replica.cards().get(card_id)
            if not data or card is None or classify(data) != "text":
                log.info("ignored an empty save that raced Tack's write of %s", card_id)
                return
            self._safely(
                lambda _: self.ingest_text(card.id, card.path, data, old_base, record_base=False)
            )(card_id)

        self.scheduler.schedule_relative(self.timing.debounce * 2, poll)

    def _write_with_intent(
        self, path: Path, data: bytes, expected: bytes | None, bases: list[Base]
    ) -> Written | Changed:
        """Write a file and its new bases so that a crash at any instant loses nothing.

        The bases are first stored as *intents* (``<key>#intent``), durably, once the new
        content sits in its temp file and before that file is renamed over the old one; the
        intent records both inodes (the file being replaced, and the temp file).  If Tack
        dies after the rename but before the bases are stored, the next look at the file
        finds that it holds exactly the intended bytes, or is still Tack's inode, and adopts
        the intent (:meth:`_adopt_intent`) instead of merging content the document already
        has a second time.
        """
        old_inode = self._inode(path)

        def store_intents(temp_inode: int) -> None:
            self.store.put_bases_durably(
                [replace(base, key=base.key + INTENT) for base in bases],
                {base.key + INTENT: f"{old_inode} {temp_inode}" for base in bases},
            )

        # On an exception the intents stay: a file that does not hold them never adopts them.
        outcome = atomic_write(path, data, expected=expected, on_temp=store_intents)
        self._settle_intents([(bases, isinstance(outcome, Written))])
        return outcome

    @staticmethod
    def _inode(path: Path) -> int:
        try:
            return os.lstat(path).st_ino
        except FileNotFoundError:
            return 0

    def _adopt_intent(self, key: str, data: bytes) -> bool:
        """After a crash mid-write: the file holds what we meant to write, so it is the base."""
        intent = self.store.get_base(key + INTENT)
        if intent is None:
            return False
        # Each outcome is one transaction: a kill between dropping the intent and storing
        # it as the base would lose both, and Tack's own write would be ingested again.
        if intent.sha256 != sha256_hex(data):
            if self._written_before_the_crash(key, intent, data):
                # Tack's write happened, then the file was edited: the intent is the base
                # the edit was made on.
                self.store.replace_bases([replace(intent, key=key)], [intent.key])
                log.info("%s was written by Tack before it stopped, then edited", intent.path)
            else:
                self.store.replace_bases([], [intent.key])
            return False
        notes = [n for n in self.store.intents_for(intent.path) if n.key != intent.key]
        self.store.replace_bases(
            [replace(intent, key=key)] + [replace(n, key=n.key[: -len(INTENT)]) for n in notes],
            [intent.key] + [n.key for n in notes],
        )
        log.info("%s holds what Tack was writing when it stopped; adopted", intent.path)
        return True

    def _written_before_the_crash(self, key: str, intent: Base, data: bytes) -> bool:
        """Whether Tack's interrupted write of ``intent`` reached the file, which has been
        edited since (so its content alone tells nothing).  The file is still Tack's temp
        inode: yes (a named temp inode is in use from Tack's write on, so no other file can
        have its number meanwhile.  A new file's temp inode is unnamed and freed if Tack died
        before linking it, so a file created at the path while Tack was down could have its
        number; most new files have no old base, though, and for them the answer below is
        yes all the same).  Otherwise — the old file edited in place, or an editor's
        temp file renamed over it before or after Tack's write — the old base or the
        intent, whichever the file is fewer edits away from, is what the user edited.  (The old
        file's inode number proves nothing: ext4 hands a freed number to the next new
        file, often the editor's temp file.)"""
        recorded = (self.store.get_meta(intent.key) or "").split()
        inode = str(self._inode(self.root / intent.path))
        if len(recorded) >= 2 and recorded[1] in self._dead_temps:
            return False  # its temp file was still there at the restart: never renamed in
        if len(recorded) >= 2 and inode == recorded[1]:
            return True
        base = self.store.get_base(key)
        if base is None or base.doc_id != intent.doc_id or intent.doc_id != key:
            return base is None
        return _edit_distance(intent.content, data) < _edit_distance(base.content, data)

    def _base_now(self, doc_id: str, pending: Pending) -> Base:
        return Base(
            pending.key,
            pending.path,
            doc_id,
            pending.content,
            pending.sha256 or sha256_hex(pending.content),
            self.replica.latest_seq(doc_id),
        )

    def _render_move(self, card: CardView, base: Base) -> bool:
        """A peer renamed the card: move the file, after taking in any edit made to it here.

        Never moves onto an existing file (link + unlink, not rename); if something is in
        the way, the file stays where it is and :meth:`render_card` keeps both.  ``False``
        if the file is gone (its delete is confirmed first, as in :meth:`render_card`).
        """
        src = self._writable(base.path)
        dst = self._writable(card.path)
        disk = read_bytes(src)
        if disk is None:
            self._confirm_later(base.path)
            return False
        if not self._matches_base(base, card.id, disk):
            self.ingest_file(replace(card, path=base.path), disk)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except FileExistsError:
            return True
        os.unlink(src)
        fsync_dir(dst.parent)
        if src.parent != dst.parent:
            fsync_dir(src.parent)
        moved = self.store.get_base(card.id)
        if moved is not None:
            self.store.put_base(replace(moved, path=card.path))
        return True

    def _render_delete(self, card: CardView) -> None:
        """A peer deleted the card: remove its file only if it holds exactly the base."""
        if card.kind not in FILE_KINDS:  # its path may be "" (see render_card): base says
            return
        base = self.store.get_base(card.id)
        if base is None:
            return
        # The file is where this device last wrote it (base.path): a peer may have renamed
        # the card and then deleted it before the rename was rendered here.
        path = self._writable(base.path)
        disk = read_bytes(path)
        if disk is None:
            self.store.delete_base(card.id)
            return
        if self._matches_base(base, card.id, disk):
            path.unlink()
            self.store.delete_base(card.id)
        else:
            self.hint(base.path)  # edited here: it comes back as a card with the edit

    def build_canvas(self, board: str) -> Canvas:
        cards = sorted(self._cards_on(board), key=lambda c: (c.z, c.id))
        nodes: list[dict[str, Any]] = []
        for card in cards:
            if card.kind in FILE_KINDS and not card.path:
                continue  # its path is on its way (see render_card)
            node: dict[str, Any] = {"id": card.id, **card.node}
            if card.kind in ("text", "binary"):
                node["type"] = node.get("type", "file")
                node["file"] = card.path
            elif card.kind == "board":
                node["type"] = "file"
                node["file"] = canvas_path(card.path)
            elif card.kind == "note":
                node["type"] = "text"
                node["text"] = self.replica.text(card.id)
            for name in ("x", "y", "width", "height"):
                node.setdefault(name, 0)
            node.setdefault("type", "text")
            nodes.append(node)
        edges = [
            {"id": e.id, **e.fields}
            for e in sorted(spacedoc.read_edges(self.replica.space).values(), key=lambda e: e.id)
            if e.board == board
        ]
        return Canvas(
            nodes=nodes, edges=edges, extra=spacedoc.read_canvas_extra(self.replica.space, board)
        )

    def render_canvas(self, board: str) -> None:
        """Write a board's canvas, after merging any edit of it that Tack has not seen."""
        if board and not (self.root / board).is_dir():
            return
        key = canvas_key(board)
        rel = canvas_path(board)
        path = self._writable(rel)
        disk = read_bytes(path)
        base = self.store.get_base(key)
        if disk is not None and (base is None or base.content != disk):
            self.ingest_canvas(board, disk)
            if key in self.problems:
                return
        desired = self.build_canvas(board)
        data = render_canvas(desired)
        if disk is not None:
            if disk == data:
                if base is None or base.content != disk or base.path != rel:
                    self._put_canvas_base(board, disk)
                return
            try:
                parse_canvas(disk)
            except CanvasError:
                return
            # Same layout in another formatting (a hand edit): rewritten in Tack's canonical
            # form, so every device's board.canvas is byte for byte the same.
        bases = [self._canvas_base(board, data), *self._note_bases(board, rel)]
        plan = _PlannedCanvas(board, rel, path, data, disk, bases)
        if self._canvas_batch is not None:
            self._canvas_batch.append(plan)  # written with the rest of the batch
            return
        self._finish_canvas(plan, self._write_with_intent(path, data, disk, bases))

    def _finish_canvas(self, plan: _PlannedCanvas, outcome: Written | Changed) -> None:
        if isinstance(outcome, Changed):
            self.hint(plan.rel)
            return
        self.writes += 1
        if outcome.late_bytes is not None:
            log.warning("%s was saved while Tack replaced it; merging that save", plan.rel)
            self.ingest_canvas(plan.board, outcome.late_bytes, prior=plan.disk)

    def _render_canvases(self, boards: list[str]) -> None:
        """Render several boards' canvases, their writes sharing the fsyncs (a join's first
        space update re-checks every board at once), the cards grouped by board once."""
        self._canvas_batch = []
        grouped = len(boards) > 1 and self._by_board is None
        if grouped:
            self._by_board = (self.replica.latest_seq(SPACE_DOC), self._cards_by_board())
        try:
            for board in boards:
                self._safely(self.render_canvas)(board)
        finally:
            plans, self._canvas_batch = self._canvas_batch, None
            if grouped:
                self._by_board = None
        if not plans:
            return
        outcomes: list[Written | Changed | OSError]
        try:
            if len(plans) == 1:
                p = plans[0]
                outcomes = [self._write_with_intent(p.path, p.data, p.disk, p.bases)]
            else:
                outcomes = self._write_many_with_intent(
                    [(p.path, p.data, p.disk, p.bases) for p in plans]
                )
        except (OSError, StoreError) as exc:  # rendered again later, from the state then
            for plan in plans:
                self._retry_later(plan.board, exc, self._safely(self.render_canvas))
            return
        except Exception:
            log.exception("internal error while writing %d canvases", len(plans))
            return
        for plan, outcome in zip(plans, outcomes, strict=True):
            if isinstance(outcome, OSError):
                self._retry_later(plan.board, outcome, self._safely(self.render_canvas))
            else:
                self._safely(self._after_canvas(plan, outcome))(plan.board)

    def _after_canvas(
        self, plan: _PlannedCanvas, outcome: Written | Changed
    ) -> Callable[[str], None]:
        return lambda _: self._finish_canvas(plan, outcome)

    def _canvas_base(self, board: str, data: bytes) -> Base:
        return Base(
            canvas_key(board),
            canvas_path(board),
            SPACE_DOC,
            data,
            sha256_hex(data),
            self.replica.latest_seq(SPACE_DOC),
        )

    def _note_bases(self, board: str, rel: str) -> list[Base]:
        """Each note's text as written into the canvas is that note's new base."""
        out = []
        for card in self._cards_on(board):
            if card.kind == "note":
                text = encode_text(self.replica.text(card.id))
                out.append(
                    Base(
                        card.id,
                        rel,
                        card.id,
                        text,
                        sha256_hex(text),
                        self.replica.latest_seq(card.id),
                    )
                )
        return out

    def _put_canvas_base(self, board: str, data: bytes) -> None:
        self.store.put_base(
            Base(
                canvas_key(board),
                canvas_path(board),
                SPACE_DOC,
                data,
                sha256_hex(data),
                self.replica.latest_seq(SPACE_DOC),
            )
        )

    # -- full scan -----------------------------------------------------------------------------

    def scan(self, keep_going: Callable[[], bool] = lambda: True, *, canvases: bool = True) -> None:
        """Reconcile the whole folder with the store (start-up and watcher overflow).

        Edits made while Tack was not running are ingested as edits; a file that vanished
        while another appeared with exactly its base content is a rename; files that vanished
        are deleted cards; cards never written here (from peers) are rendered.

        ``keep_going`` is asked before each file: when it says no (Tack is stopping) the scan
        ends there.  Every step is its own transaction, so the next scan simply goes on.
        ``canvases=False`` leaves the boards' canvases to the caller, who renders them all
        right after (start-up: :meth:`flush_canvas_now`), instead of rendering each again
        once the canvas debounce has passed.
        """
        self.rules = IgnoreRules.load(self.root)
        self._remove_stale_temp_files()
        tree = walk(self.root, self.rules)
        too_large = {rel for rel, size in tree.files.items() if self._too_large(rel, size)}
        for rel, why in tree.skipped.items():
            log.debug("skipping %s: %s", rel, why)
        for rel, why in tree.invalid.items():
            self._problem(f"name:{rel}", f"{rel} cannot be a card ({why}); left as it is")
        self._find_moved_boards(tree.boards, tree.canvases)
        for board in sorted(tree.canvases, key=lambda b: (b.count("/"), b)):
            if board == "" or board in tree.boards:
                self._safely(self.ingest_canvas)(board)
        for board in sorted(tree.boards, key=lambda b: (b.count("/"), b)):
            if board:
                self._safely(self._ensure_board)(board)
        # Two cards claiming one path: a peer's change whose resolution (scheduled when it
        # arrived) a stop or crash cut short.  Resolved first, so that the file at the path is
        # judged against the card that keeps it, and the other's as a move to its new name.
        self._safely(lambda _: self._resolve_path_collisions(self.replica.cards()))("")
        cards = self.replica.cards()
        # Peers' changes that were stored but not yet written when Tack stopped or crashed:
        # a rename whose file still sits at the old path is rendered (moved), not taken for
        # a delete plus a new file; a delete whose file is still there is finished.
        unrendered_moves: dict[str, CardView] = {}  # old path -> card a peer renamed
        vanished: dict[str, CardView] = {}
        base_paths = {key: row[0] for key, row in self.store.base_digests().items()}
        for card in cards.values():
            gone_file = card.kind in FILE_KINDS and card.path not in tree.files
            if card.kind in FILE_KINDS:
                # (Also when a file sits at the new path: one the user made there, which the
                # card never had -- the render keeps both.)
                old = base_paths.get(card.id)
                if (
                    old is not None
                    and old != card.path
                    and old in tree.files
                    and self.replica.card_at(old) is None
                ):
                    unrendered_moves[old] = card
                    continue
            if gone_file or (card.kind == "board" and card.path not in tree.boards):
                vanished[card.id] = card
        unrendered_deletes = self._unrendered_deletes()
        appeared = [  # sorted, and looked up as a set below
            rel
            for rel in sorted(tree.files)
            if self.replica.card_at(rel) is None
            and rel not in too_large
            and rel not in unrendered_moves
            and rel not in unrendered_deletes
        ]
        for card in unrendered_moves.values():
            self._renders.on_next(card.id)
        for rel, (tomb, base) in sorted(unrendered_deletes.items()):
            self._safely(self._finish_delete_or_keep(tomb, base))(rel)
        by_digest: dict[str, CardView] = {}
        for card in vanished.values():
            last = self.store.get_base(card.id)
            if last is not None and card.kind in FILE_KINDS:
                by_digest.setdefault(last.sha256, card)
        # Files at a path that only a peer's card claims, a card never written here: not that
        # card's file but the user's, made while Tack was stopped -- perhaps a rename onto a
        # name that was free on their disk.  A rename is recognised as for ``appeared``; any
        # other such file is split off by its card's ingest below (``_claim_or_split``).
        # (Looked for only when a card's file vanished: a rename needs one.)
        unowned = []
        if by_digest:
            for rel in sorted(tree.files):
                holder = self.replica.card_at(rel)
                if (
                    holder is not None
                    and holder.kind in FILE_KINDS
                    and base_paths.get(holder.id) != rel
                    and rel not in too_large
                    and rel not in unrendered_moves
                    and rel not in unrendered_deletes
                ):
                    unowned.append(rel)
        created: list[str] = []
        appeared_here = set(appeared)
        for rel in appeared + unowned:
            if not keep_going():
                return
            data = read_bytes(self.root / rel)
            if data is None:
                continue
            twin = by_digest.pop(sha256_hex(data), None) if by_digest else None
            if twin is not None:
                vanished.pop(twin.id, None)
                self._safely(self._renamed_while_stopped(twin.path))(rel)
                moved = self.replica.cards().get(twin.id)
                if moved is not None and self._moved_on_since_base(moved):
                    self._renders.on_next(moved.id)  # a peer's change the old file never got
            elif rel in appeared_here:
                created.append(rel)
        self._create_many(created, keep_going)
        if not keep_going():
            return
        for card in sorted(vanished.values(), key=lambda c: c.path.count("/")):
            if self.replica.cards().get(card.id) is None:
                continue
            if card.kind == "board":
                if self.store.get_base(canvas_key(card.path)) is None:
                    # A peer's folder never made here (its canvas was never written here):
                    # make it, rather than take its absence for a delete.
                    self._renders.on_next(card.id)
                else:
                    self._delete_card(card)
            elif self.store.get_base(card.id) is not None:
                # Deleted while Tack was stopped -- or caught inside an editor's save that
                # moved the file away and is about to write it anew (vim): look again after
                # the grace period, as the watcher path does, before deleting the card.
                self._confirm_later(card.path)
            else:
                self._renders.on_next(card.id)  # from a peer, never written here yet
        # Two passes over the files of known cards.  The first only reads: a file that still
        # holds its base (nearly all of them at a restart) needs nothing but, perhaps, a
        # render of a peer's change; it is compared with the bases and seqs as read in one
        # query each (nothing writes during this pass, so they are current).  The second
        # takes in the files that differ, one transaction each, as they always were.
        digests = self.store.base_digests()
        latest = self.store.latest_seqs()
        edited: list[tuple[str, CardView]] = []
        for rel in sorted(tree.files):
            if not keep_going():
                return
            known = self.replica.card_at(rel)
            if known is None or rel in appeared_here or rel in too_large:
                continue
            if self._unchanged_since_base(known, rel, digests):
                if self._moved_on_since(known, digests, latest):
                    self._renders.on_next(known.id)  # a peer's change not yet written here
            else:
                edited.append((rel, known))
        for rel, known in edited:
            if not keep_going():
                return
            self._safely(self._edited_while_stopped(known))(rel)
        if canvases:
            for board in tree.boards:
                self._canvases.on_next(board)
        self._known = dict(self.replica.cards())

    def _find_moved_boards(self, boards: set[str], canvases: set[str]) -> None:
        """Folders renamed while Tack was stopped: a new folder whose ``board.canvas`` is
        byte for byte the last canvas Tack wrote for a vanished board *is* that board."""
        by_canvas: dict[str, CardView] = {}
        for card in self.replica.cards().values():
            if card.kind == "board" and card.path not in boards:
                base = self.store.get_base(canvas_key(card.path))
                if base is not None:
                    by_canvas.setdefault(base.sha256, card)
        for board in sorted(boards, key=lambda b: (b.count("/"), b)):
            if not by_canvas or not board or board not in canvases:
                continue
            if self.replica.card_at(board) is not None:
                continue
            data = read_bytes(self.root / canvas_path(board))
            twin = by_canvas.pop(sha256_hex(data), None) if data is not None else None
            if twin is not None and self.replica.cards().get(twin.id) is not None:
                self._safely(self._renamed_while_stopped(twin.path))(board)

    def _remove_stale_temp_files(self) -> None:
        """Temp files of writes that a crash interrupted: ours, never the user's, so remove.

        Only runs from :meth:`scan`, while this process holds the space lock, so no other
        Tack is mid-write; a torn temp file never replaced anything (rename is atomic).
        """
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in (".tack", ".git")]
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(OSError):
                        temp = os.path.join(dirpath, name)
                        inode = os.lstat(temp).st_ino
                        os.unlink(temp)
                        # A write whose temp file is still here never landed; once the file
                        # is gone its inode number is free for the next new file (an
                        # editor's save), which must not pass for Tack's write.
                        self._dead_temps.add(str(inode))
                        log.info("removed a temp file left by a crash: %s", name)

    def _renamed_while_stopped(self, src: str) -> Callable[[str], None]:
        """A file or folder found at ``dst`` is the one that was at ``src`` (the card keeps
        its id); a folder's cards move with it."""
        return lambda dst: self._moved(src, dst, False)

    def _create_many(self, rels: list[str], keep_going: Callable[[], bool]) -> None:
        """Cards for many new files at once, placed in one pass per board (a folder of
        10,000 files must not cost 10,000 placements against 10,000 cards)."""
        by_board: dict[str, list[str]] = {}
        for rel in rels:
            by_board.setdefault(parent_board(rel), []).append(rel)
        for board, members in sorted(by_board.items()):
            if board:
                self._safely(self._ensure_board)(board)
            width, height = CARD_SIZE["text"]
            spots = free_spots(self._board_rects(board), len(members), width, height)
            z = self._next_z(board)
            for (x, y), rel in zip(spots, members, strict=True):
                if not keep_going():
                    return
                node = {"type": "file", "x": x, "y": y, "width": width, "height": height}
                self._safely(self._created_while_stopped(node, z))(rel)
                z += 1.0

    def _created_while_stopped(self, node: dict[str, Any], z: float) -> Callable[[str], None]:
        def create(rel: str) -> None:
            if open_for_writing(self.root / rel):
                self.hint(rel)  # still being written: the live path waits for its writer
                return
            data = read_bytes(self.root / rel)
            if data is not None and self.replica.card_at(rel) is None:
                self._create_file_card(rel, data, node=node, z=z)

        return create

    def _edited_while_stopped(self, card: CardView) -> Callable[[str], None]:
        def ingest(rel: str) -> None:
            if open_for_writing(self.root / rel):
                self.hint(rel)  # a save under way: the live path waits for its writer
                return
            data = read_bytes(self.root / rel)
            if data is None:
                return
            self.ingest_file(card, data)
            if self._moved_on_since_base(card):
                self._renders.on_next(card.id)  # a peer's change not yet written here

        return ingest

    def _unchanged_since_base(
        self, card: CardView, rel: str, digests: dict[str, tuple[str, str, str, int, bool]]
    ) -> bool:
        """Whether ``card``'s file at ``rel`` holds exactly its base, with no write intent
        pending: what :meth:`ingest_file` would find nothing to do for.  ``False`` when in
        doubt (the file cannot be read, no base): the full path then looks."""
        base = digests.get(card.id)
        if base is None or card.id + INTENT in digests or base[0] != card.path:
            return False
        data = read_bytes(self.root / rel)
        return data is not None and base[2] == sha256_hex(data)

    def _moved_on_since(
        self,
        card: CardView,
        digests: dict[str, tuple[str, str, str, int, bool]],
        latest: dict[str, int],
    ) -> bool:
        """:meth:`_moved_on_since_base` from bases and seqs read beforehand."""
        base = digests.get(card.id)
        if base is None or base[0] != card.path:
            return True
        if card.kind == "text":
            return base[1] != card.id or base[4] or latest.get(card.id, 0) > base[3]
        return card.kind == "binary" and card.blob != base[2]

    def _moved_on_since_base(self, card: CardView) -> bool:
        """Whether ``card`` changed since its file was last written or read here (cheap: one
        indexed query, no document load, so a 10,000-card start-up stays fast)."""
        base = self.store.get_base(card.id)
        if base is None or base.path != card.path:
            return True
        if card.kind == "text":
            if base.doc_id != card.id or base.state is not None:
                # (A base with a state was taken in by a merge: the document at its seq
                # holds what else the merge brought, which the file may not show yet.)
                return True
            return self.store.latest_seq(card.id) > base.seq
        return card.kind == "binary" and card.blob != base.sha256

    def _unrendered_deletes(self) -> dict[str, tuple[CardView, Base]]:
        """Cards a peer deleted whose file this device has not removed yet, by file path.

        A local delete drops the card's base (:meth:`_delete_card`), so a tombstone that
        still has a base is a peer's delete this device has not finished."""
        out: dict[str, tuple[CardView, Base]] = {}
        # Only a key with a base can qualify: look at those that are no live card (few)
        # rather than read every tombstone of the space.
        live = self.replica.cards()
        for key in sorted(self.store.base_keys()):
            found = self._unwritten_delete(key, live)
            if found is not None and self.replica.card_at(found[1].path) is None:
                out.setdefault(found[1].path, found)
        return out

    def _finish_delete_or_keep(self, tomb: CardView, base: Base) -> Callable[[str], None]:
        def finish(rel: str) -> None:
            data = read_bytes(self.root / rel)
            if data is None:
                self.store.delete_base(tomb.id)
            elif self._matches_base(base, tomb.id, data) and self._deleted_too_soon(tomb.id):
                # Edited here (and taken in) before the peer's delete arrived; the undelete
                # that arrival scheduled never ran (Tack stopped first): run it now.
                self._undelete(tomb.id)
            elif self._matches_base(base, tomb.id, data):
                self._render_delete(replace(tomb, path=rel))
            else:
                # Edited here while a peer deleted it: the edit wins, the card comes back.
                self._revive_with_edit(tomb.id, rel, data)

        return finish

    def _revive_with_edit(self, card_id: str, rel: str, data: bytes) -> bool:
        """Bring a deleted card back because its file ``rel`` (where this device last wrote
        it) was edited; whether it came back.  If the card has moved on to another path
        meanwhile, the render moves the file there, taking the edit in first."""
        self._undelete(card_id)
        revived = self.replica.cards().get(card_id)
        if revived is None:
            return False
        if revived.path == rel:
            self.ingest_file(revived, data)
        else:
            self._renders.on_next(card_id)
        return True

    def _cards_on(self, board: str) -> list[CardView]:
        """The live cards on ``board``.  While :meth:`_render_canvases` renders several
        boards, from the cards grouped by board once (10,000 cards on 100 boards: one pass,
        not a hundred), as long as the space document has not changed since."""
        group = self._by_board
        if group is not None and group[0] == self.replica.latest_seq(SPACE_DOC):
            return group[1].get(board, [])
        return [c for c in self.replica.cards().values() if c.board == board]

    def flush_canvas_now(self) -> None:
        """Render every board's canvas immediately (used at start-up and in tests)."""
        self._render_canvases(sorted(self._all_boards()))

    def _cards_by_board(self) -> dict[str, list[CardView]]:
        groups: dict[str, list[CardView]] = {}
        for card in self.replica.cards().values():
            groups.setdefault(card.board, []).append(card)
        return groups


def _through_link(rel: str, link: str) -> UnsafePath:
    return UnsafePath(
        f"{rel} goes through the symbolic link {link}; Tack neither follows nor replaces links"
    )


@dataclass(frozen=True)
class _PlannedCanvas:
    """A board.canvas write decided by a canvas render, done with the rest of its batch."""

    board: str
    rel: str
    path: Path
    data: bytes
    disk: bytes | None
    bases: list[Base]


@dataclass
class _PlannedWrite:
    """A card file write decided by a render, done now or with the rest of its batch."""

    card: CardView
    path: Path
    disk: bytes | None
    desired: bytes
    new_base: Base
    old_base: Base | None
    old_fd: int | None  # the file being replaced, held open to catch a save racing ours

    def close(self) -> None:
        if self.old_fd is not None:
            os.close(self.old_fd)
            self.old_fd = None


class _Missing:
    pass


_MISSING = _Missing()


def _edit_distance(old: bytes, new: bytes) -> int:
    """How many characters a diff of ``old`` into ``new`` deletes and inserts: enough to
    tell which of two versions an edit started from (a shared prefix and suffix alone tie
    when the other version's change lies between the user's first and last edit)."""
    before = old.decode("utf-8", errors="replace")
    after = new.decode("utf-8", errors="replace")
    return sum(s.delete + len(s.insert) for s in diff_splices(before, after))


def files_in_folders(paths: list[str], folders_named: int = 3) -> str:
    """``"125 files in board001/, board002/"``: a batch of writes in one line."""
    folders = sorted({folder_of(p) for p in paths})
    names = [f"{f}/" if f else "the top folder" for f in folders[:folders_named]]
    more = len(folders) - folders_named
    where = ", ".join(names) + (f" and {more} more folder{'s' * (more > 1)}" if more > 0 else "")
    return f"{len(paths)} file{'s' * (len(paths) > 1)} in {where}"


def dump_problems(problems: dict[str, str]) -> str:
    return json.dumps(sorted(problems.values()), ensure_ascii=False)
