"""Where a space keeps its own state: the ``.tack/`` folder and its configuration file.

``.tack/config.json`` holds the space id, the space's capability keys (mode 0600: they are
the share secret) and settings such as manual peers.  ``.tack/`` is
never synced and never shown as a card.  :func:`init_space` is idempotent: running it on an
existing space changes nothing.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.sharelink import ShareLinkError, SpaceKeys, from_json, new_space_keys, to_json

TACK_DIR = ".tack"


class NotASpace(RuntimeError):
    """The folder is not a Tack space (no ``.tack/config.json`` in it)."""


@dataclass(frozen=True)
class SpaceDir:
    root: Path

    @property
    def tack(self) -> Path:
        return self.root / TACK_DIR

    @property
    def store_path(self) -> Path:
        return self.tack / "store.sqlite"

    @property
    def blobs_path(self) -> Path:
        return self.tack / "blobs"

    @property
    def config_path(self) -> Path:
        return self.tack / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise NotASpace(
                f"{self.root} is not a Tack space (run `tack init {self.root}`)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise NotASpace(f"{self.config_path} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("space_id"), str):
            raise NotASpace(f"{self.config_path} has no space id")
        return data

    def space_id(self) -> str:
        return str(self.config()["space_id"])

    def keys(self) -> SpaceKeys:
        """The space's capability keys; a space made before sharing existed gets them now."""
        config = self.config()
        raw = config.get("keys")
        if raw is None:
            keys = new_space_keys(str(config["space_id"]))
            config["keys"] = to_json(keys)
            self.write_config(config)
            return keys
        try:
            return from_json(raw)
        except (ShareLinkError, TypeError) as exc:
            raise NotASpace(f"{self.config_path} has unreadable keys: {exc}") from exc

    def peers(self) -> list[str]:
        value = self.config().get("peers", [])
        return [str(p) for p in value] if isinstance(value, list) else []

    def write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_name(f".config-{secrets.token_hex(4)}.json")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.config_path)


def open_space(path: Path) -> SpaceDir:
    space = SpaceDir(path.resolve())
    space.config()
    return space


def init_space(path: Path, keys: SpaceKeys | None = None) -> tuple[SpaceDir, bool]:
    """Make ``path`` a space; returns the space and whether it was newly created.

    ``keys`` (from a share link) makes it a replica of an existing space; otherwise a new
    space with a fresh 256-bit secret is made.
    """
    path.mkdir(parents=True, exist_ok=True)
    space = SpaceDir(path.resolve())
    if space.config_path.exists():
        existing = space.config()
        if keys is not None and existing["space_id"] != keys.space_id:
            raise NotASpace(
                f"{space.root} is already a different space ({existing['space_id'][:8]})"
            )
        return space, False
    space.tack.mkdir(exist_ok=True)
    keys = keys or new_space_keys()
    space.write_config(
        {"space_id": keys.space_id, "version": 1, "peers": [], "keys": to_json(keys)}
    )
    return space, True
