"""Syncthing as a baseline: instances configured by the harness, inside a private network
namespace whose only interface is loopback, so no packet can leave this machine.

:func:`namespace` creates ``tackbench-<random>`` with ``ip netns add`` and brings up only
``lo``; every instance of a run lives in that one namespace and listens on
``tcp://127.0.0.1:<port>`` there (two instances in two separate ``unshare -n`` namespaces
could not reach each other over loopback).  On top of the namespace, the configuration
switches off everything that talks to the outside: global and local discovery, relays,
NAT traversal (UPnP/NAT-PMP), STUN, usage reporting (``urAccepted=-1``), crash reporting,
automatic upgrades (``autoUpgradeIntervalH=0``, ``STNOUPGRADE``), the default folder
(``STNODEFAULTFOLDER``) and the web GUI.  Devices are introduced by ID with explicit
addresses.  ``setLowPriority`` is turned off so that Syncthing runs at the same scheduling
priority as Tack (its shipped default renices itself, which would handicap it on a busy
machine).

The folder's watcher delay (``fsWatcherDelayS``) is a parameter: 10 s is Syncthing's shipped
default and 1 s its smallest.  Processes started here are stopped by pid; the namespace is
deleted on exit.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.tackdev import BenchError, wait_for

FOLDER_ID = "bench"
OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "urAccepted": "-1",
    "urSeen": "3",
    "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0",
    "startBrowser": "false",
    "setLowPriority": "false",
    "announceLANAddresses": "false",
    "stunKeepaliveStartS": "0",
    "stunKeepaliveMinS": "0",
    "reconnectionIntervalS": "1",
}
DROP_OPTIONS = ("globalAnnounceServer", "stunServer")


def available() -> str | None:
    """Why Syncthing baselines cannot run here, or None if they can."""
    if shutil.which("syncthing") is None:
        return "syncthing is not installed (apt-get install -y syncthing)"
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    """A fresh network namespace with only ``lo`` up; deleted afterwards."""
    name = f"tackbench-{secrets.token_hex(3)}"
    done = _ip("netns", "add", name)
    if done.returncode != 0:
        raise BenchError(f"ip netns add failed: {done.stderr.strip()}")
    try:
        up = _ip("-n", name, "link", "set", "lo", "up")
        if up.returncode != 0:
            raise BenchError(f"cannot bring lo up in {name}: {up.stderr.strip()}")
        links = _ip("-n", name, "-o", "link", "show").stdout
        others = [ln for ln in links.splitlines() if not re.search(r"^\d+: lo:", ln)]
        if others:
            raise BenchError(f"namespace {name} has interfaces besides lo: {others}")
        yield name
    finally:
        _ip("netns", "del", name)


class SyncthingNode:
    """One Syncthing instance: its home (config, keys, database) and its shared folder."""

    def __init__(self, name: str, home: Path, folder: Path, port: int) -> None:
        self.name = name
        self.home = home
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[tuple[float, str]] = []
        self.spawned_at = 0.0
        self._reader: threading.Thread | None = None
        home.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["syncthing", "generate", f"--home={home}", "--no-default-folder",
             "--skip-port-probing"],
            capture_output=True, text=True, timeout=60, check=False, env=self._env(),
        )  # fmt: skip
        match = re.search(r"Device ID: (\S+)", out.stdout + out.stderr)
        if out.returncode != 0 or match is None:
            raise BenchError(f"syncthing generate failed: {out.stderr.strip()}")
        self.device_id = match.group(1)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            STNODEFAULTFOLDER="1", STNOUPGRADE="1", STNORESTART="1", HOME=str(self.home)
        )
        return env

    def configure(self, nodes: Sequence[SyncthingNode], delay_s: int) -> None:
        """Write config.xml: these devices at their loopback addresses, one shared folder."""
        path = self.home / "config.xml"
        tree = ET.parse(path)
        root = tree.getroot()
        for dev in root.findall("device"):
            root.remove(dev)
        for folder in root.findall("folder"):
            root.remove(folder)
        defaults = root.find("defaults")
        assert defaults is not None
        dev_template = defaults.find("device")
        folder_template = defaults.find("folder")
        assert dev_template is not None and folder_template is not None
        for index, node in enumerate(nodes):
            dev = copy.deepcopy(dev_template)
            dev.set("id", node.device_id)
            dev.set("name", node.name)
            address = dev.find("address")
            assert address is not None
            address.text = f"tcp://127.0.0.1:{node.port}"
            root.insert(index, dev)
        folder = copy.deepcopy(folder_template)
        folder.set("id", FOLDER_ID)
        folder.set("label", FOLDER_ID)
        folder.set("path", str(self.folder))
        folder.set("fsWatcherEnabled", "true")
        folder.set("fsWatcherDelayS", str(delay_s))
        folder.set("rescanIntervalS", "3600")
        for dev in folder.findall("device"):
            folder.remove(dev)
        for node in nodes:
            ET.SubElement(folder, "device", id=node.device_id, introducedBy="")
        root.insert(len(nodes), folder)
        gui = root.find("gui")
        if gui is not None:
            gui.set("enabled", "false")
        options = root.find("options")
        assert options is not None
        for name in DROP_OPTIONS:
            for el in options.findall(name):
                options.remove(el)
        for el in options.findall("listenAddress"):
            options.remove(el)
        listen = ET.SubElement(options, "listenAddress")
        listen.text = f"tcp://127.0.0.1:{self.port}"
        for key, value in OPTIONS.items():
            found = options.find(key)
            el = found if found is not None else ET.SubElement(options, key)
            el.text = value
        tree.write(path, encoding="unicode")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / ".stfolder").mkdir(exist_ok=True)

    def start(self, netns: str) -> None:
        self.lines = []
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, "syncthing", "serve", f"--home={self.home}",
             "--no-browser", "--no-restart", "--no-upgrade"],
            env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def line_time(self, needle: str) -> float | None:
        for when, line in list(self.lines):
            if needle in line:
                return when
        return None

    def wait_line(self, needle: str, timeout: float) -> float:
        def seen() -> float | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"syncthing {self.name} exited:\n{self.log_tail()}")
            return self.line_time(needle)

        found = wait_for(seen, timeout, f"{needle!r} from syncthing {self.name}", 0.02)
        assert isinstance(found, float)
        return found

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        self.proc = None


INITIAL_SCAN = "Completed initial scan"
CONNECTED = "Established secure connection"


class Cluster:
    """Syncthing nodes sharing one folder, all in one private namespace."""

    def __init__(self, root: Path, netns: str, names: Sequence[str], delay_s: int) -> None:
        self.netns = netns
        self.nodes = [
            SyncthingNode(n, root / f"st-home-{n}", root / f"st-folder-{n}", 22001 + i)
            for i, n in enumerate(names)
        ]
        for node in self.nodes:
            node.configure(self.nodes, delay_s)

    def start(self, nodes: Sequence[SyncthingNode] | None = None) -> None:
        for node in nodes if nodes is not None else self.nodes:
            node.start(self.netns)

    def wait_connected(self, timeout: float = 120) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.wait_line(CONNECTED, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
