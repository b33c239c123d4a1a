"""Presence: who is online in a space, and what they touched recently (Yjs awareness).

Each device publishes one awareness state, encoded with y-protocols' awareness encoding via
``pycrdt.Awareness`` (its JSON stays ASCII — DESIGN §6 — because ``json.dumps`` escapes):

    {"device": id, "name": device name, "user": user name, "colour": "#rrggbb",
     "recent": [paths changed here lately, newest first], "digest": sync digest}

``digest`` is :meth:`engine.replica.Replica.sync_digest`; a peer whose announced digest
equals ours holds exactly what we hold, which is what ``tack status`` calls *in sync*.
Presence is never written into the folder.  Everything received is untrusted: a malformed
awareness update raises :class:`ValueError` and changes nothing.
"""

from __future__ import annotations

import getpass
import hashlib
from typing import Any

from pycrdt import Awareness

from engine.replica import Replica

RECENT = 8


def colour_of(device_id: str) -> str:
    """A stable colour per device, so the same device looks the same everywhere."""
    digest = hashlib.sha256(device_id.encode()).digest()
    return "#" + "".join(f"{64 + b % 160:02x}" for b in digest[:3])


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


class Presence:
    """Our awareness state and the ones peers announced."""

    def __init__(self, replica: Replica, device_id: str, name: str, user: str = "") -> None:
        self.replica = replica
        self.device_id = device_id
        self.awareness = Awareness(replica.space)
        self._state: dict[str, Any] = {
            "device": device_id,
            "name": name,
            "user": user or user_name(),
            "colour": colour_of(device_id),
            "recent": [],
            "digest": replica.sync_digest(),
        }
        self.awareness.set_local_state(self._state)
        self._peers: dict[str, dict[str, Any]] = {}  # device id -> last state
        self._clients: dict[str, set[int]] = {}  # device id -> its awareness client ids

    def touched(self, path: str) -> None:
        recent = [p for p in self._state["recent"] if p != path]
        self._state["recent"] = [path, *recent][:RECENT]

    def refresh(self) -> bytes:
        """Recompute our digest; return the awareness update to send to peers."""
        self._state["digest"] = self.replica.sync_digest()
        self.awareness.set_local_state(dict(self._state))
        return self.local_update()

    def local_update(self) -> bytes:
        return self.awareness.encode_awareness_update([self.awareness.client_id])

    def apply(self, peer_id: str, update: bytes) -> None:
        """Take a peer's awareness update; only states claiming that peer's device count."""
        before = {cid: dict(meta) for cid, meta in self.awareness.meta.items()}
        try:
            self.awareness.apply_awareness_update(update, peer_id)
        except Exception as exc:
            raise ValueError(f"malformed awareness update: {exc}") from exc
        # A peer speaks for one device: keep one awareness client per peer (the one it just
        # updated), so a peer inventing client ids cannot grow our memory without bound.
        touched = [
            cid
            for cid, meta in self.awareness.meta.items()
            if cid != self.awareness.client_id and before.get(cid) != meta
        ]
        mine = self._clients.setdefault(peer_id, set())
        mine.update(touched)
        if touched and len(mine) > 1:
            keep = touched[-1]
            drop = [cid for cid in mine if cid != keep]
            self.awareness.remove_awareness_states(drop, "bounded")
            self._clients[peer_id] = {keep}
        for client_id, state in list(self.awareness.states.items()):
            if client_id == self.awareness.client_id or not isinstance(state, dict):
                continue
            if state.get("device") == peer_id:
                self._peers[peer_id] = {
                    "name": str(state.get("name", ""))[:128],
                    "user": str(state.get("user", ""))[:128],
                    "colour": str(state.get("colour", ""))[:16],
                    "recent": [str(p)[:1024] for p in state.get("recent", [])][:RECENT]
                    if isinstance(state.get("recent"), list)
                    else [],
                    "digest": str(state.get("digest", ""))[:64],
                }

    def forget(self, peer_id: str) -> None:
        self._peers.pop(peer_id, None)

    def peer(self, peer_id: str) -> dict[str, Any]:
        info = dict(self._peers.get(peer_id, {}))
        info["in_sync"] = bool(info.get("digest")) and info.get("digest") == self._state["digest"]
        return info

    @property
    def digest(self) -> str:
        return str(self._state["digest"])
