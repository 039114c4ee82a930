"""Free loopback ports, and waiting for something to listen on one."""
from __future__ import annotations

import random
import socket
import time
from pathlib import Path

RANGES_FROM = 20000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free ports (checked one by one), below the kernel's ephemeral range: a backend started
    on one of them later must not find it taken by an outgoing connection's or a ``free_port``'s port meanwhile
    (seen: a container failing on "address already in use")."""
    ceiling = max(_ephemeral_floor(), RANGES_FROM + 1000)  # a machine with no room below: take what is there
    for _ in range(200):
        start = random.randint(RANGES_FROM, ceiling - size)
        ports = range(start, start + size)
        if all(_port_free(p) for p in ports):
            return start, start + size - 1
    raise RuntimeError("no free port range")


def _ephemeral_floor() -> int:
    """The first port the kernel hands out by itself (Linux's ip_local_port_range; 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port}")
