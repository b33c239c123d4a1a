"""What machine and which versions a run used, for results.json and BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any


def _first(path: str, key: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def describe() -> dict[str, Any]:
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "ram_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb.isdigit() else None,
        "kernel": platform.release(),
        "os": _os_release(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def versions() -> dict[str, str | None]:
    def pkg(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "tack": pkg("tack"),
        "pycrdt": pkg("pycrdt"),
        "watchdog": pkg("watchdog"),
        "syncthing": _version(["syncthing", "--version"]),
        "rsync": _version(["rsync", "--version"]),
        "git": _version(["git", "--version"]),
        "py-spy": _version(["py-spy", "--version"]) or _venv_tool("py-spy"),
        "tack_tree": _tree(),
    }


def _tree() -> str:
    from bench.scenarios import tree_version

    return tree_version()


def _venv_tool(name: str) -> str | None:
    tool = os.path.join(os.path.dirname(sys.executable), name)
    return _version([tool, "--version"]) if os.path.exists(tool) else None
