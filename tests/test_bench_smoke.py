"""The benchmark harness runs: ``python -m bench.run --quick --only P1,P6`` exits 0 and writes
results.json with the expected shape (machine, versions, one entry per scenario with rows,
summaries, ratios and goal verdicts) and a results.md table.

This checks the harness, not Tack's speed: goals may be met or missed on a busy machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m bench.run --quick ARGS`` from the checkout, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False, env=env,
    )  # fmt: skip


def test_quick_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = quick_bench("--only", "P1,P6", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    for key in ("started", "quick", "machine", "versions", "sizes", "scenarios", "seconds"):
        assert key in data, key
    assert data["quick"] is True
    assert {"nproc", "cpu_model", "ram_gib"} <= set(data["machine"])
    assert {"python", "pycrdt", "syncthing"} <= set(data["versions"])
    assert set(data["scenarios"]) == {"P1", "P6"}
    for sid, sc in data["scenarios"].items():
        assert sc["error"] is None, (sid, sc["error"], sc["notes"])
        assert {"id", "title", "params", "rows", "goals", "notes"} <= set(sc)
        assert sc["rows"] and sc["goals"]
        for row in sc["rows"]:
            assert {"tool", "metric", "unit", "summary", "values", "ratios"} <= set(row)
            summary = row["summary"]
            assert summary is not None and summary["n"] == len(row["values"]) > 0
            assert {"median", "p90", "p99", "min", "max"} <= set(summary)
            assert summary["min"] <= summary["median"] <= summary["max"]
        for goal in sc["goals"]:
            assert {"text", "met", "value"} <= set(goal)
            assert goal["met"] in (True, False, None)
    p1 = {r["tool"]: r for r in data["scenarios"]["P1"]["rows"]}
    assert p1["tack"]["unit"] == "ms" and p1["tack"]["summary"]["n"] >= 5
    p6 = data["scenarios"]["P6"]["rows"]
    tack_mem = next(
        r for r in p6 if r["tool"] == "tack" and r["metric"].startswith("transact, memory")
    )
    assert tack_mem["ratios"]["pycrdt"] is not None
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| P1 | tack |" in table and "| P6 | pycrdt |" in table


def test_a_run_on_a_fresh_ext4_names_it_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """``--fresh-ext4`` (how BENCHMARKS.md's runs are made) runs on a new ext4 on a loop
    device, says so in the results, and unmounts and deletes it afterwards."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        pytest.skip("needs root and mkfs.ext4 to make and mount a file system")
    out = tmp_path / "results"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = quick_bench(
        "--only", "P6", "--fresh-ext4", "256M", "--out", str(out),
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    if proc.returncode == 2 and "cannot make a fresh file system" in proc.stderr:
        pytest.skip(f"no loop device to mount here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert data["filesystem"].startswith("ext4 on /dev/loop"), data["filesystem"]
    assert data["filesystem"].endswith("made for this run")
    assert str(scratch) in data["filesystem"]  # mounted where TMPDIR pointed
    with open("/proc/mounts", encoding="utf-8") as mounts:
        assert str(scratch) not in mounts.read()
    assert list(scratch.iterdir()) == []  # no image, no mount point left


def test_a_run_names_the_file_system_it_ran_on(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = quick_bench("--only", "P6", "--work", str(tmp_path / "work"), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    with open("/proc/mounts", encoding="utf-8") as mounts:
        kinds = {line.split()[2] for line in mounts}
    assert data["filesystem"].split(" on ")[0] in kinds, data["filesystem"]
    assert "made for this run" not in data["filesystem"]
    assert f"Scratch file system: {data['filesystem']}." in (out / "results.md").read_text(
        encoding="utf-8"
    )


def test_the_inode_rows_free_no_inodes(tmp_path: Path) -> None:
    """P2's ``open(O_TMPFILE)`` rows keep every file they make: closing unnamed files frees
    their inodes, which slows the next creations on an ext4 without a journal (the next rep,
    and the joins measured after it)."""
    from bench.floor import syscall_beside_busy_thread

    try:
        alone, beside = syscall_beside_busy_thread(tmp_path, calls=25)
    except OSError as exc:  # O_TMPFILE is a Linux file system feature (ext4, tmpfs, ...)
        pytest.skip(f"needs O_TMPFILE in {tmp_path}: {exc}")
    assert alone > 0 and beside > 0
    kept = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(kept) == 50  # 25 alone + 25 beside the busy thread, each linked into place
    assert {p.parent.parent for p in kept} == {tmp_path}
