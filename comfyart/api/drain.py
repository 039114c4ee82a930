"""Draining a backend by the address a Kubernetes pod knows (its IP and ComfyUI port), for a ``preStop`` hook that
has only an HTTP client (issue 25): ``POST /api/pool/drain?address=`` drains the backends at that address (on the
leader: a standby forwards it), then ``GET /api/pool/drained?address=&wait_s=`` answers once they hold no prompt, or
409 after ``wait_s``. The wait is a read: any replica answers it from its pool (a standby's mirrors the leader's),
waking at each change of the pool, so that a long wait never goes through a forwarded request.

Idle is confirmed once more ``CONFIRM_S`` later: a prompt handed to the backend as the drain began is booked a
moment after the dispatcher checked that the backend took work."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from comfyart.api.deps import Services
from comfyart.errors import InvalidInput, NotFound, StateConflict
from comfyart.policy.drain import Drain, drain_progress, parse_address, url_address

CONFIRM_S = 0.5
RECHECK_S = 1.0  # at most between two looks at the pool (a change wakes the wait sooner)


def backends_at(services: Services, address: str) -> list[str]:
    """The ids of the backends whose URL points at ``address`` (HOST:PORT); InvalidInput when it is not one."""
    try:
        wanted = parse_address(address)
    except ValueError as exc:
        raise InvalidInput(f"address: {exc}") from None
    return [b.id for b in services.pool.backends.values() if url_address(b.url) == wanted]


def described(services: Services, backend_id: str) -> dict[str, Any] | None:
    """One backend as ``/api/pool`` describes it; None once it left the pool."""
    pool = services.pool
    if pool.mirrored is None:  # here, the backend itself; a standby's describes the leader's as it published it
        backend = pool.backends.get(backend_id)
        return None if backend is None else backend.describe()
    return next((b for b in pool.describe()["backends"] if b["id"] == backend_id), None)


async def wait_drained(services: Services, address: str, wait_s: float) -> dict[str, Any]:
    """The backends at ``address`` once every one is drained (see the module docstring); StateConflict (409) when
    one still holds a prompt, or takes work, after ``wait_s``; NotFound when none is there."""
    ids = backends_at(services, address)
    if not ids:
        raise NotFound(f"no backend at {address}")
    deadline = time.monotonic() + wait_s
    confirming = False
    while True:
        states = {backend_id: described(services, backend_id) for backend_id in ids}
        progress = {backend_id: drain_progress(state) for backend_id, state in states.items()}
        if all(p == Drain.DONE for p in progress.values()):
            if confirming or all(state is None for state in states.values()):
                return {"drained": True, "backends": states}
            confirming, pause = True, CONFIRM_S
        else:
            confirming, pause = False, RECHECK_S
        left = deadline - time.monotonic()
        if confirming:  # past the deadline too: an idle backend is confirmed, not refused
            await asyncio.sleep(pause)
        elif left <= 0:
            raise StateConflict(not_drained(wait_s, states, progress))
        else:
            await services.pool.wait_changed(min(pause, left))


def not_drained(wait_s: float, states: dict[str, dict[str, Any] | None], progress: dict[str, Drain]) -> str:
    held = [f"{backend_id} holds {(states[backend_id] or {}).get('inflight')} prompt(s)"
            if state == Drain.BUSY else f"{backend_id} is not draining"
            for backend_id, state in progress.items() if state != Drain.DONE]
    return f"not drained after {wait_s:g} s: {', '.join(held)}"
