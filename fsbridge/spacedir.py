"""Where a space keeps its own state: the ``.tack/`` folder and its configuration file.

``.tack/config.json`` holds the space id and settings (manual peers later).  ``.tack/`` is
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

    def write_config(self, config: dict[str, Any]) -> None:
        tmp = self.config_path.with_name(f".config-{secrets.token_hex(4)}.json")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.config_path)


def open_space(path: Path) -> SpaceDir:
    space = SpaceDir(path.resolve())
    space.config()
    return space


def init_space(path: Path, space_id: str | None = None) -> tuple[SpaceDir, bool]:
    """Make ``path`` a space; returns the space and whether it was newly created."""
    path.mkdir(parents=True, exist_ok=True)
    space = SpaceDir(path.resolve())
    if space.config_path.exists():
        space.config()
        return space, False
    space.tack.mkdir(exist_ok=True)
    space.write_config({"space_id": space_id or secrets.token_hex(16), "version": 1, "peers": []})
    return space, True
