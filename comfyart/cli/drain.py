"""``comfyart drain --backend ID | --address HOST:PORT [--wait] [--timeout S]``: drain a backend before it goes
away, the ``preStop`` hook of a ComfyUI pod that Kubernetes terminates (issue 25).

It asks the daemon to drain the backend (``POST /api/pool/backends/{id}/drain``: it takes no new prompt; a standby
replica sends that to the leader) and, with ``--wait``, returns only once it holds no prompt, polling its state
(``GET /api/pool/backends/{id}``, which any replica answers). A pod knows its IP and port, not its backend id:
``--address`` finds the backends whose URL points there (``GET /api/pool/backends?address=``) and drains each.

Decisions: idle must be seen twice, ``POLL_S`` apart (a prompt handed to the backend as the drain began is booked a
moment later); a backend that takes work again (a new leader read its configuration afresh, or someone enabled it)
is asked again; while waiting, a daemon that does not answer (a replica restarting) is asked again until the
timeout. ``--timeout`` (the pod's grace period, less a margin) implies ``--wait``; past it the command gives up and
the pod is stopped: a prompt cut off then is retried on another backend, as for any backend lost.

Exit codes: 0 drained (with ``--wait``: it holds no prompt), 1 still busy at the timeout (or the daemon refused),
2 no daemon to talk to, or no such backend.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any
from urllib.parse import quote

import httpx

from comfyart.cli.answers import CommandFailed, answer
from comfyart.policy.drain import Drain, drain_progress, parse_address

HELP = ("drain a backend before it goes away (a Kubernetes preStop hook): it takes no new prompt; --wait returns "
        "once it holds none")
POLL_S = 1.0  # between two reads of the backends' state
REQUEST_S = 10.0  # one request at most, and never past the timeout
BUSY, UNKNOWN = 1, 2  # exit statuses: still busy at the timeout; no daemon or no such backend


def add_command(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--backend", metavar="ID", help="the backend's id (comfyart pool lists them)")
    which.add_argument("--address", metavar="HOST:PORT",
                       help="the backend(s) whose URL points here: a pod's own IP and ComfyUI port")
    parser.add_argument("--wait", action="store_true", help="return only once it holds no prompt")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="give up waiting after S seconds, exit 1 (implies --wait): the grace period, less a "
                             "margin")


def drain(client: httpx.Client, args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout < 0:
        raise CommandFailed("--timeout must be >= 0", code=UNKNOWN)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    ids = _backend_ids(client, args)
    for backend_id in ids:
        _ask(client, backend_id, deadline)
    if not args.wait and deadline is None:
        _report(args, {backend_id: None for backend_id in ids}, "draining")
        return 0
    states = _wait(client, ids, deadline)
    busy = {backend_id: states.get(backend_id, {}) for backend_id in ids
            if backend_id not in states or drain_progress(states[backend_id]) != Drain.DONE}
    if busy:
        held = sum(int((state or {}).get("inflight") or 0) for state in busy.values())
        _report(args, states, "")
        raise CommandFailed(f"{', '.join(busy)} still hold(s) {held} prompt(s) after {args.timeout:g} s: stopped "
                            "now, a prompt cut off is retried on another backend", code=BUSY)
    _report(args, states, "drained: holds no prompt")
    return 0


def _backend_ids(client: httpx.Client, args: argparse.Namespace) -> list[str]:
    if args.backend:
        return [args.backend]
    try:
        parse_address(args.address)
    except ValueError as exc:
        raise CommandFailed(f"--address {exc}", code=UNKNOWN) from None
    found = answer(client.get("/api/pool/backends", params={"address": args.address}))
    ids = [backend["id"] for backend in found["backends"]]
    if not ids:
        raise CommandFailed(f"no backend at {args.address} (comfyart pool lists them)", code=UNKNOWN)
    return ids


def _ask(client: httpx.Client, backend_id: str, deadline: float | None) -> None:
    response = client.post(f"/api/pool/backends/{quote(backend_id, safe='')}/drain", timeout=_request_s(deadline))
    if response.status_code == 404:
        raise CommandFailed(f"no backend {backend_id} (comfyart pool lists them)", code=UNKNOWN)
    answer(response)


def _wait(client: httpx.Client, ids: list[str], deadline: float | None) -> dict[str, dict[str, Any] | None]:
    """Poll until every backend is drained (idle twice in a row, or gone) or the deadline; their last states read
    (None: gone)."""
    states: dict[str, dict[str, Any] | None] = {}
    idle_before: set[str] = set()
    while True:
        idle_now = set()
        for backend_id in ids:
            answered, state = _state(client, backend_id, deadline)
            if not answered:
                continue  # not idle this round
            states[backend_id] = state
            progress = drain_progress(state)
            if progress == Drain.NOT_DRAINING:
                _ask_again(client, backend_id, deadline)
            elif progress == Drain.DONE:
                idle_now.add(backend_id)
        if idle_now == set(ids) and all(states[i] is None or i in idle_before for i in ids):
            return states
        idle_before = idle_now
        if deadline is not None and time.monotonic() + POLL_S > deadline:
            return states
        time.sleep(POLL_S)


def _state(client: httpx.Client, backend_id: str, deadline: float | None) -> tuple[bool, dict[str, Any] | None]:
    """(whether the daemon answered, the backend's state: None once it left the pool)."""
    try:
        response = client.get(f"/api/pool/backends/{quote(backend_id, safe='')}", timeout=_request_s(deadline))
    except httpx.TransportError:
        return False, None
    if response.status_code == 404:
        return True, None
    if response.status_code >= 500:  # a replica restarting, no leader for a moment
        return False, None
    state: dict[str, Any] = answer(response)
    return True, state


def _ask_again(client: httpx.Client, backend_id: str, deadline: float | None) -> None:
    print(f"comfyart: {backend_id} takes work again: asking again", file=sys.stderr)
    with contextlib.suppress(httpx.TransportError, CommandFailed):  # read again at the next poll
        _ask(client, backend_id, deadline)


def _request_s(deadline: float | None) -> float:
    return REQUEST_S if deadline is None else max(0.5, min(REQUEST_S, deadline - time.monotonic()))


def _report(args: argparse.Namespace, states: dict[str, dict[str, Any] | None], words: str) -> None:
    if args.json:
        print(json.dumps({"backends": states}, indent=2))
    elif words:
        for backend_id in states:
            print(f"{backend_id} {words}")
