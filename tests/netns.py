"""Helper for tests that need a real (but private) multicast network: two Linux network
namespaces joined by a veth pair.

:func:`veth_pair` creates namespaces ``tackt-<rand>-a`` and ``tackt-<rand>-b``, a veth pair with
one end in each (created directly inside the namespaces, so nothing ever appears in the host's
namespace), addresses ``10.213.<x>.1/24`` and ``10.213.<x>.2/24`` that exist only there, and
brings ``lo`` and the veth ends up with multicast enabled.  Teardown always deletes both
namespaces (which destroys the veth pair) after killing any process still inside them — all of
which the test itself started there, since the namespaces are private to it.

Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ``ip``; when
either is missing, :class:`NetnsUnavailable` says which, and the test should skip.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

_TIMEOUT = 10.0


class NetnsUnavailable(Exception):
    """This machine (or this user) cannot create network namespaces; the message says why."""


@dataclass(frozen=True)
class VethPair:
    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str

    @staticmethod
    def exec_prefix(ns: str) -> list[str]:
        """Put this before a command line to run it inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False
    )


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _kill_inside(ns: str) -> None:
    done = _ip("netns", "pids", ns)
    for word in done.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(word), signal.SIGKILL)


@contextlib.contextmanager
def veth_pair() -> Iterator[VethPair]:
    """Two fresh namespaces joined by a multicast-capable veth pair; always torn down."""
    if shutil.which("ip") is None:
        raise NetnsUnavailable("iproute2's `ip` command is not installed")
    if os.geteuid() != 0:
        raise NetnsUnavailable("creating network namespaces needs root (CAP_SYS_ADMIN)")
    token = secrets.token_hex(3)
    subnet = f"10.213.{secrets.randbelow(256)}"
    pair = VethPair(
        ns_a=f"tackt-{token}-a",
        ns_b=f"tackt-{token}-b",
        dev_a=f"tk{token}a",  # interface names are at most 15 characters
        dev_b=f"tk{token}b",
        addr_a=f"{subnet}.1",
        addr_b=f"{subnet}.2",
    )
    created: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            done = _ip("netns", "add", ns)
            if done.returncode != 0:
                raise NetnsUnavailable(
                    f"`ip netns add` is not permitted here (needs CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}"
                )
            created.append(ns)
        _must(
            "link", "add", "name", pair.dev_a, "netns", pair.ns_a, "type", "veth",
            "peer", "name", pair.dev_b, "netns", pair.ns_b,
        )  # fmt: skip
        for ns, dev, addr in (
            (pair.ns_a, pair.dev_a, pair.addr_a),
            (pair.ns_b, pair.dev_b, pair.addr_b),
        ):
            _must("-n", ns, "link", "set", "lo", "up")
            _must("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _must("-n", ns, "link", "set", dev, "multicast", "on", "up")
        yield pair
    finally:
        for ns in created:
            _kill_inside(ns)
            _ip("netns", "del", ns)
