"""Finding peers on the local network with mDNS/DNS-SD (DESIGN §4); the only module that imports
``zeroconf``.

What it owns: one DNS-SD service instance per running device (one per ``tack up`` process) of
type :data:`SERVICE_TYPE`, and a continuous browse for the same type.  The instance name and
host name are a random token per process (``tack-<8 hex>``) and the TXT record is exactly
``{"id": <device id>, "v": "1"}``: no space names or ids ever appear on the network in the
clear.  Peers are reported as :class:`PeerAddress` through ``on_found`` (again whenever a
peer's address or port changes) and as a device id through ``on_lost`` when the peer's service
goes away: at once on its goodbye packets, or, if it died without one, once its records have
expired (:data:`DEFAULT_TTL`) and it does not answer a fresh query.  Callbacks run on the
asyncio loop that called :meth:`Discovery.start`.  What is found here is only a hint: a device
id read from a TXT record is a claim, proven later by the TLS handshake.

Everything read from the network is untrusted: a malformed TXT record, a device id that does
not parse, an unusable address or port — the service is ignored with a logged reason, never a
crash; and the number of services tracked at once is bounded by :data:`MAX_TRACKED`.

Interfaces rule: a :class:`Discovery` multicasts only on the IPv4 interface addresses it is
given, explicitly.  There is no default: tests bind to loopback ``127.0.0.1`` or to addresses
inside network namespaces they create, and a real ``tack up`` passes the addresses it chose
(e.g. from :func:`lan_ipv4_addresses`).  ``zeroconf``'s ``InterfaceChoice.All``/``Default`` are
never used, and only IPv4 is spoken.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from engine.identity import parse_device_id

__all__ = [
    "CHECK_INTERVAL",
    "DEFAULT_TTL",
    "MAX_TRACKED",
    "SERVICE_TYPE",
    "Discovery",
    "PeerAddress",
    "lan_ipv4_addresses",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_tack._tcp.local."
TXT_VERSION = b"1"
DEFAULT_TTL = 120
"""Seconds our SRV, TXT and A records live in other devices' caches: a device that dies without
saying goodbye is reported lost by its peers about this long (plus :data:`CHECK_INTERVAL` and
:data:`RESOLVE_TIMEOUT_MS`) after they last heard from it."""
MAX_TRACKED = 256
"""Most services tracked (resolving or found) at once; more are ignored, with a log line."""
RESOLVE_TIMEOUT_MS = 3000
CHECK_INTERVAL = 5.0
"""Seconds between checks for peers that vanished without a goodbye (see ``Discovery._check``)."""
_MAX_ID_LEN = 128


@dataclass(frozen=True)
class PeerAddress:
    """Where a peer says it can be reached: its claimed device id, an IPv4 address and a port."""

    device_id: str
    host: str
    port: int


def lan_ipv4_addresses() -> list[str]:
    """The IPv4 addresses of this machine's non-loopback interfaces — an explicit, opt-in list
    for a real ``tack up`` to pass as ``interfaces``.  Reading the list sends nothing."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 entries are tuples
            addr = ipaddress.IPv4Address(ip.ip)
            if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
                continue
            if ip.ip not in found:
                found.append(ip.ip)
    return found


def _check_interfaces(interfaces: Sequence[str]) -> list[str]:
    if isinstance(interfaces, str):
        raise TypeError("interfaces is a sequence of IPv4 addresses, not one string")
    result: list[str] = []
    for text in interfaces:
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError as e:
            raise ValueError(f"interface {text!r} is not an IPv4 address") from e
        if (
            addr.is_unspecified
            or addr.is_multicast
            or addr == ipaddress.IPv4Address("255.255.255.255")
        ):
            raise ValueError(f"interface {text!r} is not the address of one interface")
        if str(addr) not in result:
            result.append(str(addr))
    if not result:
        raise ValueError("Discovery needs at least one explicit interface address")
    return result


class Discovery:
    """Advertise this device and report the other Tack devices seen on ``interfaces``.

    ``interfaces`` are IPv4 addresses of local interfaces (``["127.0.0.1"]`` in tests); they
    are both where we multicast and the addresses we advertise.  ``on_found`` and ``on_lost``
    run on the event loop that called :meth:`start`; an exception they raise is logged and
    swallowed.  One instance advertises one service; :meth:`start` and :meth:`stop` each run at
    most once.
    """

    def __init__(
        self,
        device_id: str,
        port: int,
        interfaces: Sequence[str],
        on_found: Callable[[PeerAddress], None],
        on_lost: Callable[[str], None],
        *,
        ttl: int = DEFAULT_TTL,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self.device_id = parse_device_id(device_id)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is not a TCP port")
        if ttl < 1:
            raise ValueError(f"ttl {ttl} must be at least one second")
        if not check_interval > 0:
            raise ValueError(f"check_interval {check_interval} must be positive")
        self.port = port
        self.interfaces = _check_interfaces(interfaces)
        self._on_found = on_found
        self._on_lost = on_lost
        self._ttl = ttl
        self._check_interval = check_interval
        self._allow_loopback = any(ipaddress.IPv4Address(a).is_loopback for a in self.interfaces)
        token = secrets.token_hex(4)
        self.instance_name = f"tack-{token}.{SERVICE_TYPE}"
        self._server = f"tack-{token}.local."
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._checker: asyncio.Task[None] | None = None
        # Services are keyed by their name in lower case (DNS names are case-insensitive).
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._by_name: dict[str, PeerAddress] = {}  # found peers
        self._names: dict[str, str] = {}  # found peers' names as announced
        self._expired: dict[str, str] = {}  # lost by expiry, may come back; see _check
        self._reported: dict[str, PeerAddress] = {}  # device id -> last on_found
        self._complained: set[str] = set()
        self._started = False
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register our service (probe, then announce) and start browsing; returns once our
        announcement has gone out (about 1.5 s).  Raises :class:`OSError` if an interface
        address is not one of this machine's."""
        if self._started:
            raise RuntimeError("Discovery.start() called twice")
        self._started = True
        aiozc = AsyncZeroconf(interfaces=list(self.interfaces), ip_version=IPVersion.V4Only)
        self._aiozc = aiozc
        try:
            self._browser = AsyncServiceBrowser(
                aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change]
            )
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                self.instance_name,
                port=self.port,
                properties={"id": self.device_id, "v": TXT_VERSION.decode()},
                server=self._server,
                host_ttl=self._ttl,
                other_ttl=self._ttl,
                parsed_addresses=list(self.interfaces),
            )
            announced = await aiozc.async_register_service(info, allow_name_change=True)
            self._info = info
            self.instance_name = info.name
            await announced
            self._checker = asyncio.get_running_loop().create_task(
                self._check_forever(aiozc.zeroconf)
            )
        except BaseException:
            await self.stop()
            raise
        log.debug("discovery: advertising %s on %s", self.instance_name, self.interfaces)

    async def stop(self) -> None:
        """Say goodbye (so peers report us lost at once), stop browsing and close the sockets.
        Safe to call more than once, and before :meth:`start`."""
        if self._stopped:
            return
        self._stopped = True
        tasks = list(self._resolving.values())
        if self._checker is not None:
            tasks.append(self._checker)
            self._checker = None
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        aiozc, self._aiozc = self._aiozc, None
        browser, self._browser = self._browser, None
        info, self._info = self._info, None
        if aiozc is None:
            return
        try:
            if browser is not None:
                await browser.async_cancel()
            if info is not None:
                goodbye = await aiozc.async_unregister_service(info)
                await goodbye
        finally:
            await aiozc.async_close()
        self._by_name.clear()
        self._names.clear()
        self._expired.clear()
        self._reported.clear()

    # -- browsing -------------------------------------------------------------------------------

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called by zeroconf on the event loop; must not raise into zeroconf.
        try:
            self._handle_state_change(zeroconf, name, state_change)
        except Exception:
            log.exception("discovery: error handling %s for %r", state_change, name)

    def _handle_state_change(
        self, zeroconf: Zeroconf, name: str, state_change: ServiceStateChange
    ) -> None:
        if self._stopped:
            return
        key = name.lower()
        if key == self.instance_name.lower():
            return
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(key, None)
            if task is not None:
                task.cancel()
            self._expired.pop(key, None)
            self._forget(key)
            return
        # Added or Updated: (re-)resolve; the newest resolution for a name wins.
        tracked = len(self._resolving) + len(self._by_name) + len(self._expired)
        is_new = key not in self._resolving and key not in self._by_name
        if is_new and key not in self._expired and tracked >= MAX_TRACKED:
            self._complain(key, f"ignoring {name!r}: already tracking {MAX_TRACKED} services")
            return
        self._start_resolve(zeroconf, name, key, confirm=False)

    def _start_resolve(self, zeroconf: Zeroconf, name: str, key: str, *, confirm: bool) -> None:
        old = self._resolving.pop(key, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name, key, confirm))
        self._resolving[key] = task
        task.add_done_callback(lambda t: self._resolve_done(key, t))

    def _resolve_done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(key) is task:
            del self._resolving[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("discovery: resolving %r failed", key, exc_info=task.exception())

    async def _resolve(self, zeroconf: Zeroconf, name: str, key: str, confirm: bool) -> None:
        """Resolve ``name`` (from the cache if fresh, else by asking) and report the result.

        ``confirm``: the peer's records have expired from the cache; if it does not answer
        now, it is gone without a goodbye (crashed, unplugged) and is reported lost.
        """
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("discovery: %r did not resolve within %d ms", name, RESOLVE_TIMEOUT_MS)
            if confirm and key in self._by_name and not self._stopped:
                log.info("discovery: %r stopped answering; reporting it lost", name)
                self._forget(key)
                self._expired[key] = name
            return
        if self._stopped:
            return
        self._expired.pop(key, None)
        peer = self._peer_from_info(name, info)
        if peer is None:
            self._forget(key)  # it may have been valid before and changed into garbage
            return
        if peer.device_id == self.device_id:
            return  # ourselves, through another instance name
        self._by_name[key] = peer
        self._names[key] = name
        self._report_found(peer)

    async def _check_forever(self, zeroconf: Zeroconf) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            try:
                self._check(zeroconf)
            except Exception:
                log.exception("discovery: liveness check failed")

    def _check(self, zeroconf: Zeroconf) -> None:
        """Catch peers that vanish without a goodbye, and their return.

        The browser reports a service removed only when its PTR record expires, and
        ``zeroconf`` holds PTR records for at least 1125 s whatever TTL was announced.  So
        every ``check_interval`` seconds: a found peer whose SRV/TXT/A records (TTL
        :data:`DEFAULT_TTL`) have expired from the cache is asked again, and lost if it does
        not answer; a peer lost that way whose records are back in the cache (it answered
        late, or came back) is resolved again.
        """
        for key, name in list(self._names.items()):
            if key in self._resolving:
                continue
            if not AsyncServiceInfo(SERVICE_TYPE, name).load_from_cache(zeroconf):
                self._start_resolve(zeroconf, name, key, confirm=True)
        for key, name in list(self._expired.items()):
            if key in self._resolving:
                continue
            if AsyncServiceInfo(SERVICE_TYPE, name).load_from_cache(zeroconf):
                self._start_resolve(zeroconf, name, key, confirm=False)

    def _peer_from_info(self, name: str, info: AsyncServiceInfo) -> PeerAddress | None:
        props = info.properties
        raw_id = props.get(b"id")
        if not isinstance(raw_id, bytes) or not 0 < len(raw_id) <= _MAX_ID_LEN:
            self._complain(name, f"ignoring {name!r}: TXT record has no usable id")
            return None
        if props.get(b"v") != TXT_VERSION:
            self._complain(name, f"ignoring {name!r}: TXT version {props.get(b'v')!r} is not 1")
            return None
        try:
            device_id = parse_device_id(raw_id.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            self._complain(name, f"ignoring {name!r}: TXT id {raw_id[:64]!r} is not a device id")
            return None
        port = info.port
        if not isinstance(port, int) or not 0 < port < 65536:
            self._complain(name, f"ignoring {name!r}: port {port!r} is unusable")
            return None
        host = self._pick_address(info.parsed_addresses(IPVersion.V4Only))
        if host is None:
            self._complain(name, f"ignoring {name!r}: no usable IPv4 address")
            return None
        return PeerAddress(device_id, host, port)

    def _pick_address(self, candidates: Sequence[str]) -> str | None:
        """The most recently announced address we could plausibly connect to."""
        for text in candidates:
            try:
                addr = ipaddress.IPv4Address(text)
            except ValueError:
                continue
            if addr.is_unspecified or addr.is_multicast or addr.is_reserved:
                continue
            if addr.is_loopback and not self._allow_loopback:
                continue  # a remote host cannot be reached on our loopback
            return str(addr)
        return None

    def _forget(self, key: str) -> None:
        self._names.pop(key, None)
        peer = self._by_name.pop(key, None)
        if peer is None:
            return
        # The device may still be present under another instance name (a restarted process
        # whose new service arrived before the old one's goodbye): then it is not lost.
        for other in self._by_name.values():
            if other.device_id == peer.device_id:
                self._report_found(other)
                return
        if self._reported.pop(peer.device_id, None) is not None:
            try:
                self._on_lost(peer.device_id)
            except Exception:
                log.exception("discovery: on_lost callback raised")

    def _report_found(self, peer: PeerAddress) -> None:
        if self._reported.get(peer.device_id) == peer:
            return
        self._reported[peer.device_id] = peer
        try:
            self._on_found(peer)
        except Exception:
            log.exception("discovery: on_found callback raised")

    def _complain(self, key: str, message: str) -> None:
        """Log a problem with a service once (per service name, with a bounded memory)."""
        if key in self._complained:
            return
        if len(self._complained) >= MAX_TRACKED:
            self._complained.clear()
        self._complained.add(key)
        log.warning("discovery: %s", message)
