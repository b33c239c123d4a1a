"""The README's live demo: Tack running on a folder you can see, edited like an editor would.

Run it with ``./dev demo`` (or ``python -m examples.demo [FOLDER] [--once]``).  It makes
``FOLDER`` (default ``./demo-space``) a space, starts ``tack up`` on it as a real process,
then saves a few cards the way editors do (in place, temp file + rename, a new sub-board),
and shows the board and the history after each step.  Without ``--once`` it then keeps Tack
running so you can edit the folder with your own editor; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TACK = [sys.executable, "-m", "fsbridge.cli"]


def say(text: str) -> None:
    print(f"\n\033[1;36m▶ {text}\033[0m", flush=True)


class Device:
    """One ``tack up`` process with its own TACK_HOME, logging to our stdout."""

    def __init__(self, name: str, folder: Path, home: Path) -> None:
        self.name = name
        self.folder = folder
        self.env = {**os.environ, "TACK_HOME": str(home)}
        self.ready = threading.Event()
        self.proc: subprocess.Popen[str] | None = None

    def tack(self, *args: str) -> str:
        done = subprocess.run(
            [*TACK, *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*TACK, "up", str(self.folder)], env=self.env, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(30):
            raise SystemExit(f"{self.name}: Tack did not start")

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            print(f"  [{self.name}] {line.rstrip()}", flush=True)
            if "Tack is watching" in line:
                self.ready.set()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.tack("status", str(self.folder), "--json"))
        return report


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def card_paths(device: Device) -> set[str]:
    return {c["path"] for b in device.status()["boards"] for c in b["cards"]}


def save_via_rename(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp-demo")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", default="demo-space")
    parser.add_argument("--once", action="store_true", help="run the script, then stop")
    args = parser.parse_args()
    folder = Path(args.folder).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    home = Path(tempfile.mkdtemp(prefix="tack-demo-home-"))
    (folder / "Welcome.md").write_text("# Welcome\n\nEvery file here is a card.\n")

    say(f"tack init {folder}")
    device = Device("laptop", folder, home)
    print(device.tack("init", str(folder)), end="")
    device.start()
    try:
        say("An editor saves Welcome.md in place (like nano)")
        line = "Edits merge character by character.\n"
        with open(folder / "Welcome.md", "a", encoding="utf-8") as f:
            f.write(line)
        wait_for(
            "the edit", lambda: f"+{len(line)} " in device.tack("log", str(folder), "Welcome.md")
        )

        say("Another editor saves Ideas.md through a temp file + rename (like vim or VS Code)")
        save_via_rename(folder / "Ideas.md", "- a board is a folder\n- a card is a file\n")
        wait_for("Ideas.md", lambda: "Ideas.md" in card_paths(device))

        say("A folder becomes a nested board")
        (folder / "Roadmap").mkdir()
        (folder / "Roadmap" / "Q1.md").write_text("ship the demo\n")
        wait_for("Roadmap/Q1.md", lambda: "Roadmap/Q1.md" in card_paths(device))

        say("tack status")
        print(device.tack("status", str(folder)), end="")
        say("board.canvas (JSON Canvas — open the folder as an Obsidian vault to see it)")
        print((folder / "board.canvas").read_text(), end="")
        say("tack log")
        print(device.tack("log", str(folder)), end="")
        if not args.once:
            say(f"Tack keeps running on {folder}: edit it with any editor. Ctrl-C stops.")
            assert device.proc is not None
            with contextlib.suppress(KeyboardInterrupt):
                device.proc.wait()
    finally:
        device.stop()
        shutil.rmtree(home, ignore_errors=True)
    say("done")


if __name__ == "__main__":
    main()
