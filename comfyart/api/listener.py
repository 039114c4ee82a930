"""The API's listening socket: bound by ``comfyart serve`` before anything else starts, and handed to uvicorn."""
from __future__ import annotations

import errno
import socket

from comfyart.errors import ConfigError


def listen_socket(host: str, port: int) -> socket.socket:
    """The API's socket, bound before anything else starts (Redis, backends): a port already taken stops
    ``comfyart serve`` at once with one line. Left to uvicorn, the bind failed inside the running daemon, whose
    ``sys.exit`` then left it hung, deaf to SIGTERM."""
    # IPPROTO_TCP named outright: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections of a socket
    # whose protocol says TCP, and with it on every answer waited ~40 ms for the client's delayed ACK
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                             socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(listen_problem(host, port, exc.errno, exc.strerror or str(exc))) from exc
    return listener


def listen_problem(host: str, port: int, code: int | None, reason: str) -> str:
    """What to tell someone whose daemon cannot listen on ``host:port``."""
    where = f"cannot listen on {f'[{host}]' if ':' in host else host}:{port}: {reason[:1].lower()}{reason[1:]}"
    if code == errno.EADDRINUSE:
        return (f"{where} (another comfyart serve? set server.port, e.g. COMFYART_SERVER__PORT={port + 1} "
                f"comfyart serve ...)")
    if code in (errno.EACCES, errno.EPERM):
        return f"{where} (ports below 1024 need privileges: set server.port)"
    return f"{where} (check server.host and server.port)"
