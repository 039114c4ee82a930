"""Draining one backend before it goes away (issue 25, a Kubernetes ``preStop`` hook): which backend an address
names, and how far its drain is. Pure: the API finds the backend, ``comfyart drain`` asks and waits.

A pod knows its own IP and port, not comfyart's id of it, so a backend is found by the host and port of its URL
(``url_address``; a URL without a port has its scheme's). Its drain is done once it holds no prompt while draining,
or once it left the pool (a drained container is stopped and forgotten); a backend active again (a new leader's pool
read the configuration afresh, or someone enabled it) is asked again.
"""
from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Address(NamedTuple):
    host: str  # lower case; an IPv6 address without its brackets, in its short form
    port: int


def _host(text: str) -> str:
    host = text.strip().lower().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.rstrip(".")


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (``[IPv6]:PORT``) as a pod gives it; ValueError with a one-line reason otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 10.0.3.7:8188, or [fd00::7]:8188)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, [ADDRESS]:PORT")
    return Address(_host(host), int(port))


def url_address(url: str) -> Address | None:
    """The host and port a backend's URL points at; None when it names none."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return Address(_host(parts.hostname), port)


class Drain(enum.StrEnum):
    """How far a backend's drain is, as ``drain_progress`` reads it."""

    DONE = "done"  # holds no prompt and takes none (or has left the pool)
    BUSY = "busy"  # draining, prompts still on it
    NOT_DRAINING = "not draining"  # takes work: ask again


def drain_progress(backend: Mapping[str, Any] | None) -> Drain:
    """``backend`` as ``GET /api/pool/backends/{id}`` describes it (None: no longer in the pool)."""
    if backend is None:
        return Drain.DONE
    if backend.get("mode") != "draining":
        return Drain.NOT_DRAINING
    return Drain.BUSY if backend.get("inflight") else Drain.DONE
