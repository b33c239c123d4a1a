"""Profiles for goals that are missed: py-spy attached to a running ``tack up``, cProfile for
in-process engine work.  Both are reduced to "top entries" tables (inclusive and self share
of samples or time) that go into results.json and BENCHMARKS.md.

py-spy needs ptrace rights (root here); when it is missing or refused, the profile is
skipped with a note rather than failing the run.
"""

from __future__ import annotations

import collections
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


class Spy:
    """``py-spy record`` on one pid, from :meth:`start` until :meth:`stop`."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.note = ""

    def start(self) -> Spy:
        tool = py_spy()
        if tool is None:
            self.note = "py-spy is not installed (pip install py-spy)"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [tool, "record", "-p", str(self.pid), "-r", str(self.rate), "--format", "raw",
             "-o", str(self.out), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.3)
        return self

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            self.note = f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-300:]}"
            return None
        return collapsed_top(self.out)


def collapsed_top(path: Path, top: int = 20) -> dict[str, Any]:
    """Top frames of a py-spy ``--format raw`` (collapsed stacks) file."""
    self_n: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            frames = [fr for fr in stack.split(";") if not fr.startswith("thread (")]
            if not frames:
                continue
            total += n
            self_n[frames[-1]] += n
            for frame in set(frames):
                incl[frame] += n
    boring = ("<module>", "click/", "asyncio/", "runpy.py", "threading.py:10")
    return {
        "tool": "py-spy",
        "samples": total,
        "file": str(path),
        "inclusive": [
            {"share": round(c / total, 4), "frame": f}
            for f, c in incl.most_common(top * 3)
            if not any(b in f for b in boring)
        ][:top],
        "self": [{"share": round(c / total, 4), "frame": f} for f, c in self_n.most_common(top)],
    }


def cprofile(fn: Callable[[], Any], out: Path, top: int = 20) -> dict[str, Any]:
    """Run ``fn`` under cProfile; top functions by cumulative and by own time."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(str(out))
    stats = pstats.Stats(prof)
    total = max(sum(v[2] for v in stats.stats.values()), 1e-9)  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{func} ({_short(file)}:{line})"
        rows.append((where, nc, tt, ct))
    by_cum = sorted(rows, key=lambda r: -r[3])
    by_own = sorted(rows, key=lambda r: -r[2])
    return {
        "tool": "cProfile",
        "total_s": round(total, 3),
        "file": str(out),
        "inclusive": [
            {"share": round(r[3] / total, 4), "calls": r[1], "seconds": round(r[3], 3),
             "frame": r[0]}
            for r in by_cum
            if not r[0].startswith(("<built-in method builtins.exec", "<lambda>"))
        ][:top],
        "self": [
            {"share": round(r[2] / total, 4), "calls": r[1], "seconds": round(r[2], 3),
             "frame": r[0]}
            for r in by_own[:top]
        ],
    }  # fmt: skip


def _short(file: str) -> str:
    for marker in ("site-packages" + os.sep, "/work/main/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file
