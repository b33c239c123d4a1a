"""The README's main command: the two-device demo runs to the end and really syncs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_two_device_demo_syncs_both_ways_and_merges(tmp_path: Path) -> None:
    top = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo", str(top), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    laptop, desktop = top / "laptop", top / "desktop"
    for name in ("Welcome.md", "Ideas.md", "sketch.png", "Roadmap/Q1.md", "board.canvas"):
        assert (laptop / name).read_bytes() == (desktop / name).read_bytes(), name
    merged = (laptop / "Welcome.md").read_text()
    assert merged.startswith("Laptop's new title\n") and merged.endswith("Desktop's last line.\n")
    assert "in sync" in done.stdout
