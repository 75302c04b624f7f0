"""Which addresses a process listens on and talks to, read from /proc (Linux).

The test stack promises that nothing listens on or connects to anything but loopback; these
helpers let a test check that promise on the real processes instead of trusting the flags.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

_TCP_LISTEN = "0A"


@dataclass(frozen=True)
class Socket:
    protocol: str
    local: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
    remote: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
    state: str

    @property
    def listening(self) -> bool:
        return self.protocol.startswith("tcp") and self.state == _TCP_LISTEN

    def __str__(self) -> str:
        (lip, lport), (rip, rport) = self.local, self.remote
        return f"{self.protocol} {lip}:{lport} -> {rip}:{rport} ({self.state})"


def _address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
        ipaddress.IPv4Address(words) if len(words) == 4 else ipaddress.IPv6Address(words)
    )
    return ip, int(port, 16)


def is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def process_sockets(pid: int) -> list[Socket]:
    """The inet sockets ``pid`` holds (empty if the process is gone)."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    sockets: list[Socket] = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{protocol}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] in inodes:
                sockets.append(Socket(protocol, _address(cols[1]), _address(cols[2]), cols[3]))
    return sockets


def non_loopback(pid: int) -> list[Socket]:
    """Sockets of ``pid`` bound to or connected to a non-loopback address.

    An unconnected client socket shows a remote of 0.0.0.0:0; that is not a connection.
    """
    bad = []
    for s in process_sockets(pid):
        unbound = s.local[0].is_unspecified and s.local[1] == 0
        if (not unbound and not is_loopback(s.local[0])) or (
            s.remote[1] != 0 and not is_loopback(s.remote[0])
        ):
            bad.append(s)
    return bad


def children(pid: int) -> list[int]:
    """Direct and indirect child pids of ``pid``."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for k in kids:
            found.append(int(k))
            frontier.append(int(k))
    return found
