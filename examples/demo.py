"""The README's live demo: two devices on this machine syncing one board, live.

Run it with ``./dev demo`` (or ``python -m examples.demo [FOLDER] [--once]``).  It makes
``FOLDER/laptop`` a space, shares it, joins it as ``FOLDER/desktop`` (each device with its
own ``TACK_HOME``), starts ``tack up`` for both as real processes on loopback (mDNS on
127.0.0.1 only, plus a manual peer address), and then edits both folders the way editors
do: a save on one shows up on the other, and concurrent edits to the same card merge.
Without ``--once`` both devices keep running so you can edit either folder with your own
editor; Ctrl-C stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
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

    def start(self, *options: str) -> None:
        self.proc = subprocess.Popen(
            [*TACK, "up", str(self.folder), *options],
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
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


def save_via_rename(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.swp-demo")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def same_file(a: Path, b: Path) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return a.read_bytes() == b.read_bytes()
        except FileNotFoundError:
            return False

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", default="demo-space")
    parser.add_argument("--once", action="store_true", help="run the script, then stop")
    args = parser.parse_args()
    top = Path(args.folder).resolve()
    if top.exists():
        shutil.rmtree(top)
    laptop_dir, desktop_dir = top / "laptop", top / "desktop"
    laptop_dir.mkdir(parents=True)
    (laptop_dir / "Welcome.md").write_text("# Welcome\n\nEvery file here is a card.\n")
    homes = top / ".tack-homes"
    laptop = Device("laptop", laptop_dir, homes / "laptop")
    desktop = Device("desktop", desktop_dir, homes / "desktop")
    port = free_port()

    say(f"laptop: tack init {laptop_dir}")
    print(laptop.tack("init", str(laptop_dir)), end="")
    link = laptop.tack("share", str(laptop_dir)).strip()
    say(f"laptop: tack share → {link[:32]}…  desktop: tack join LINK {desktop_dir}")
    print(desktop.tack("join", link, str(desktop_dir)), end="")
    common = ["--listen", "127.0.0.1", "--mdns-interface", "127.0.0.1"]
    laptop.start("--port", str(port), "--name", "laptop", *common)
    desktop.start("--peer", f"127.0.0.1:{port}", "--name", "desktop", *common)
    try:
        wait_for("the first sync", same_file(laptop_dir / "Welcome.md", desktop_dir / "Welcome.md"))
        say("desktop now has laptop's card:")
        print((desktop_dir / "Welcome.md").read_text(), end="")

        say("laptop saves Welcome.md in place (like nano)")
        with open(laptop_dir / "Welcome.md", "a", encoding="utf-8") as f:
            f.write("Saved on the laptop.\n")
        wait_for(
            "the edit on desktop", lambda: "laptop." in (desktop_dir / "Welcome.md").read_text()
        )

        say("desktop saves Ideas.md through a temp file + rename (like vim or VS Code)")
        save_via_rename(desktop_dir / "Ideas.md", "- a board is a folder\n- a card is a file\n")
        wait_for("Ideas.md on laptop", same_file(laptop_dir / "Ideas.md", desktop_dir / "Ideas.md"))

        say("both edit Welcome.md at the same moment — the edits merge, nothing is lost")
        text = (laptop_dir / "Welcome.md").read_text()
        (laptop_dir / "Welcome.md").write_text("Laptop's new title\n" + text)
        save_via_rename(desktop_dir / "Welcome.md", text + "Desktop's last line.\n")
        def both() -> bool:
            texts = [(d / "Welcome.md").read_text() for d in (laptop_dir, desktop_dir)]
            return all("Laptop's new" in t and "Desktop's last" in t for t in texts)

        wait_for("the merge on both devices", both)
        print((desktop_dir / "Welcome.md").read_text(), end="")

        say("a picture (binary card) and a folder (nested board) travel too")
        (laptop_dir / "Roadmap").mkdir()
        (laptop_dir / "Roadmap" / "Q1.md").write_text("ship the demo\n")
        (laptop_dir / "sketch.png").write_bytes(bytes(range(256)) * 64)
        wait_for(
            "Roadmap/Q1.md and sketch.png on desktop",
            lambda: (
                same_file(laptop_dir / "sketch.png", desktop_dir / "sketch.png")()
                and same_file(laptop_dir / "Roadmap" / "Q1.md", desktop_dir / "Roadmap" / "Q1.md")()
            ),
        )
        wait_for(
            "identical boards", same_file(laptop_dir / "board.canvas", desktop_dir / "board.canvas")
        )

        say("desktop: tack status (presence: who is online, in sync, what they touched)")
        wait_for(
            "peers in sync",
            lambda: (
                all(p.get("in_sync") for p in desktop.status()["peers"])
                and bool(desktop.status()["peers"])
            ),
        )
        print(desktop.tack("status", str(desktop_dir)), end="")
        say("laptop: tack log Welcome.md")
        print(laptop.tack("log", str(laptop_dir), "Welcome.md"), end="")
        if not args.once:
            say(
                f"Both devices keep running. Edit {laptop_dir} or {desktop_dir} with any "
                "editor and watch the other. Ctrl-C stops."
            )
            assert laptop.proc is not None
            with contextlib.suppress(KeyboardInterrupt):
                laptop.proc.wait()
    finally:
        desktop.stop()
        laptop.stop()
    say("done")


if __name__ == "__main__":
    main()
