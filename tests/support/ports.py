"""Free loopback ports, and waiting for something to listen on one."""
from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free ports (checked one by one; good enough on a test machine)."""
    for _ in range(200):
        start = free_port()
        if start + size > 65000:
            continue
        ports = range(start, start + size)
        if all(_port_free(p) for p in ports):
            return start, start + size - 1
    raise RuntimeError("no free port range")


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
