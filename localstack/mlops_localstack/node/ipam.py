"""Per-pod addresses.

Two modes:

``loopback``
    Linux routes all of 127.0.0.0/8 to ``lo``, so every pod gets an address of its own that
    processes can bind without any privileges. But the API server refuses loopback addresses in
    EndpointSlices/Endpoints ("may not be in the loopback range"), so Services list no
    endpoints for such pods.
``alias``
    Each pod gets an address from a non-loopback range (default 198.18.0.0/16, the RFC 2544
    benchmarking range) added as a ``/32`` on ``lo`` (label ``lo:mlops``) and removed when the
    pod goes. Traffic still never leaves the machine, and EndpointSlices work. Needs
    CAP_NET_ADMIN and the ``ip`` tool.

Addresses are handed out sequentially (so a freed address is not reused right away), skip
``.0``/``.255`` host octets and never hand out 127.0.0.1 (the node's own address).
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

ALIAS_LABEL = "lo:mlops"
CAP_NET_ADMIN = 12


class AddressesExhausted(RuntimeError):
    """Every address of the range is in use."""


class IPAllocator:
    """Thread-safe sequential allocator over an IPv4 network inside 127.0.0.0/8."""

    def __init__(self, cidr: str = "127.10.0.0/16", *, require_loopback: bool = True) -> None:
        net = ipaddress.ip_network(cidr)
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"{cidr} is not an IPv4 network")
        if require_loopback and not net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):
            raise ValueError(f"{cidr} is not inside 127.0.0.0/8")
        self.network = net
        self._first = int(net.network_address) + 1
        self._last = int(net.broadcast_address) - 1
        if self._last < self._first:
            raise ValueError(f"{cidr} has no usable addresses")
        self._next = self._first
        self._used: dict[str, str] = {}  # ip -> owner
        self._lock = threading.Lock()

    def seek(self, fraction: float) -> None:
        """Continue handing out addresses from ``fraction`` (0..1) of the range."""
        span = self._last - self._first
        with self._lock:
            self._next = self._first + int(span * min(max(fraction, 0.0), 1.0))

    @staticmethod
    def _usable(value: int) -> bool:
        last_octet = value & 0xFF
        return last_octet not in (0, 255) and value != int(ipaddress.ip_address("127.0.0.1"))

    def allocate(self, owner: str, exclude: Iterable[str] = ()) -> str:
        """Return a free address for ``owner`` (the same one again if it already has one).

        ``exclude``: addresses taken by someone else (another node on the same machine).
        """
        excluded = set(exclude)
        with self._lock:
            for ip, who in self._used.items():
                if who == owner:
                    return ip
            size = self._last - self._first + 1
            for _ in range(size):
                candidate = self._next
                self._next = self._next + 1 if self._next < self._last else self._first
                ip = str(ipaddress.ip_address(candidate))
                if self._usable(candidate) and ip not in self._used and ip not in excluded:
                    self._used[ip] = owner
                    return ip
        raise AddressesExhausted(f"no free address left in {self.network}")

    def reserve(self, ip: str, owner: str) -> bool:
        """Claim a specific address (a pod that already has one after a node restart)."""
        try:
            value = int(ipaddress.ip_address(ip))
        except ValueError:
            return False
        if ipaddress.ip_address(ip) not in self.network or not self._usable(value):
            return False
        with self._lock:
            if self._used.get(ip, owner) != owner:
                return False
            self._used[ip] = owner
            return True

    def release(self, owner: str) -> None:
        """Free whatever ``owner`` holds."""
        with self._lock:
            for ip in [ip for ip, who in self._used.items() if who == owner]:
                del self._used[ip]

    def in_use(self) -> dict[str, str]:
        with self._lock:
            return dict(self._used)


def can_manage_aliases() -> bool:
    """True when this process may add addresses to ``lo`` (CAP_NET_ADMIN and ``ip``)."""
    if shutil.which("ip") is None:
        return False
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


class LoopbackAliases:
    """``/32`` addresses on ``lo`` (label ``lo:mlops``), added and removed one by one."""

    def __init__(self, label: str = ALIAS_LABEL) -> None:
        self.label = label
        self._added: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _ip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                              check=False)

    def present(self) -> set[str]:
        """IPv4 addresses currently on ``lo`` (any owner)."""
        out = self._ip("-o", "-4", "addr", "show", "dev", "lo").stdout
        found: set[str] = set()
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                found.add(parts[parts.index("inet") + 1].split("/")[0])
        return found

    def add(self, ip: str) -> None:
        done = self._ip("addr", "add", f"{ip}/32", "dev", "lo", "label", self.label)
        if done.returncode != 0:
            raise OSError(f"ip addr add {ip}/32 dev lo failed: {done.stderr.strip()}")
        with self._lock:
            self._added.add(ip)

    def remove(self, ip: str) -> None:
        with self._lock:
            if ip not in self._added:
                return
            self._added.discard(ip)
        done = self._ip("addr", "del", f"{ip}/32", "dev", "lo")
        if done.returncode != 0:
            log.warning("ip addr del %s/32 dev lo failed: %s", ip, done.stderr.strip())

    def remove_all(self) -> None:
        """Remove every address this instance added."""
        with self._lock:
            added = list(self._added)
        for ip in added:
            self.remove(ip)

    def flush_label(self) -> int:
        """Remove every address with our label (leftovers of crashed nodes); returns how many."""
        out = self._ip("-o", "-4", "addr", "show", "dev", "lo").stdout
        count = 0
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts and self.label in (p.rstrip("\\") for p in parts):
                ip = parts[parts.index("inet") + 1]
                if self._ip("addr", "del", ip, "dev", "lo").returncode == 0:
                    count += 1
        return count


class PodAddresses:
    """The node's pod addresses in one of the two modes (``loopback`` or ``alias``)."""

    def __init__(self, mode: str, ip_range: str | None = None, start: float = 0.0) -> None:
        if mode == "auto":  # opt-in: alias changes the host's `lo`
            mode = "alias" if can_manage_aliases() else "loopback"
        if mode not in ("alias", "loopback"):
            raise ValueError(f"address_mode must be auto, alias or loopback, not {mode!r}")
        self.mode = mode
        self.aliases = LoopbackAliases() if mode == "alias" else None
        default_range = "198.18.0.0/16" if self.aliases else "127.10.0.0/16"
        self.ips = IPAllocator(ip_range or default_range, require_loopback=self.aliases is None)
        self.ips.seek(start)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.ips.network

    def allocate(self, uid: str, previous: str | None) -> str:
        """An address for pod ``uid``: ``previous`` (its ``status.podIP``) when still free."""
        if self.aliases is None:
            if previous and self.ips.reserve(previous, uid):
                return previous
            return self.ips.allocate(uid)
        taken = self.aliases.present()
        candidates = []
        if previous and previous not in taken and self.ips.reserve(previous, uid):
            candidates = [previous]
        for _ in range(5):
            ip = candidates.pop() if candidates else self.ips.allocate(uid, exclude=taken)
            try:
                self.aliases.add(ip)
                return ip
            except OSError as exc:  # taken meanwhile by another node on this machine
                log.warning("%s; trying another address", exc)
                self.ips.release(uid)
                taken.add(ip)
        raise OSError("could not add a pod address to lo")

    def release(self, uid: str) -> None:
        if self.aliases is not None:
            for ip, owner in self.ips.in_use().items():
                if owner == uid:
                    self.aliases.remove(ip)
        self.ips.release(uid)

    def remove_all(self) -> None:
        if self.aliases is not None:
            self.aliases.remove_all()
