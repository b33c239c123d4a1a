"""What ``tack status`` and ``tack log`` report, computed from the store alone.

Works whether or not Tack is running: the store is opened read-only (SQLite WAL lets a
reader see every committed change while the daemon writes), and "running" is whether the
space lock is held.  Nothing here writes to the space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine import CARD_KINDS, Replica, Store
from fsbridge.atomic import read_bytes
from fsbridge.canvas import CanvasError, parse_canvas
from fsbridge.scanner import canvas_path
from fsbridge.spacedir import SpaceDir
from fsbridge.spacelock import holder_pid


def _open_replica(space: SpaceDir) -> tuple[Store, Replica] | None:
    if not space.store_path.exists():
        return None
    store = Store.open(space.store_path, readonly=True)
    return store, Replica(store, device="status")


def status(space: SpaceDir) -> dict[str, Any]:
    pid = holder_pid(space.tack)
    problems: list[str] = []
    boards: dict[str, list[dict[str, Any]]] = {"": []}
    opened = _open_replica(space)
    device = ""
    peers: list[dict[str, Any]] = []
    access = "read-write" if space.keys().can_write else "read-only"
    if opened is not None:
        store, replica = opened
        try:
            problems.extend(json.loads(store.get_meta("problems") or "[]"))
            device = store.get_meta("device") or ""
            if pid is not None:
                peers = json.loads(store.get_meta("peers") or "[]")
            cards = replica.cards()
            for card in cards.values():
                if card.kind == "board":
                    boards.setdefault(card.path, [])
            for card in sorted(cards.values(), key=lambda c: (c.board, c.z, c.id)):
                if card.kind not in CARD_KINDS:
                    continue
                x, y, w, h = card.geometry()
                boards.setdefault(card.board, []).append(
                    {
                        "id": card.id,
                        "path": card.path,
                        "kind": card.kind,
                        "x": x,
                        "y": y,
                        "width": w,
                        "height": h,
                    }
                )
        finally:
            store.close()
    for board in boards:
        path = space.root / canvas_path(board)
        try:
            data = read_bytes(path)
            if data is not None:
                parse_canvas(data)
        except OSError as exc:
            problems.append(f"{canvas_path(board)} cannot be read ({exc.strerror or exc})")
        except CanvasError as exc:
            message = f"{canvas_path(board)} does not parse ({exc})"
            if not any(p.startswith(f"{canvas_path(board)} does not parse") for p in problems):
                problems.append(message + "; Tack will not touch it until it does")
    return {
        "space": {"id": space.space_id(), "path": str(space.root)},
        "running": pid is not None,
        "pid": pid,
        "device": device,
        "access": access,
        "shared": access == "read-write",
        "peers": peers,
        "boards": [{"path": b, "cards": boards[b]} for b in sorted(boards)],
        "problems": problems,
    }


@dataclass(frozen=True)
class LogLine:
    when: str
    device: str
    path: str
    summary: str
    origin: str


def history(space: SpaceDir, path: str | None = None, limit: int = 200) -> list[LogLine]:
    opened = _open_replica(space)
    if opened is None:
        return []
    store, replica = opened
    try:
        card_key: str | None = None
        if path is not None:
            card = replica.card_at(path.rstrip("/"))
            if card is None:
                raise LookupError(f"no card at {path}")
            card_key = card.id
        entries = store.history(card_key, limit)
        return [
            LogLine(
                datetime.fromtimestamp(e.time, UTC).astimezone().isoformat(timespec="seconds"),
                e.device,
                e.path,
                e.summary,
                e.origin,
            )
            for e in entries
        ]
    finally:
        store.close()


def default_space(path: Path) -> SpaceDir:
    return SpaceDir(path.resolve())
