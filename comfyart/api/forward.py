"""Requests that drive the leader's own objects, sent to the leader from a standby replica (issue 24).

The pool's controls (health check, refresh, scale, backends added and removed, drain and the other actions, a
backend's log), the scheduler's settings and ComfyUI's ``POST /interrupt`` act on objects only the leader runs.
Each such route starts with ``answer = await on_leader(request, services)``: on the leader (and in one process) it
returns None and the route runs here, under the current term's fence; on a standby it returns the leader's answer to
the same request (method, path, query, body, the caller's headers: the leader authenticates the caller again),
marked with ``X-Comfyart-Forwarded`` so that it is never sent on twice. No leader, or one that does not answer:
503, Retry-After 1, and one line (``TransientError``).
"""
from __future__ import annotations

import httpx
from fastapi import Request, Response

from comfyart.api.deps import Services
from comfyart.errors import TransientError

FORWARDED_HEADER = "x-comfyart-forwarded"  # names the replica that forwarded the request
FORWARD_TIMEOUT_S = 60.0  # a health-check round or an inventory refresh may take a while
# not sent on: they describe one connection, or the body as this replica received it (httpx sets its own)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"})

# checked here already (the auth middleware: a browser's request from another site was refused); sent on, the page's
# Origin would not match the leader's Host, and the leader would refuse a request this replica let through
CHECKED_HERE = frozenset({"origin"})


class NoLeader(TransientError):
    """A request for the leader while none can be reached."""


async def on_leader(request: Request, services: Services) -> Response | None:
    """None: this replica runs the request (it leads, under its term's fence; or it runs alone). Otherwise the
    leader's answer to it (see the module docstring)."""
    gate = services.gate
    if gate is None or gate.enter_term():
        return None
    if request.headers.get(FORWARDED_HEADER):
        raise NoLeader(f"no leader at the moment: {request.headers[FORWARDED_HEADER]} forwarded this request to "
                       f"{gate.name}, which does not lead either")
    leader = await gate.leader()
    if leader is None:
        raise NoLeader("no leader at the moment: try again shortly")
    headers = [(name, value) for name, value in request.headers.items()
               if name.lower() not in HOP_BY_HOP and name.lower() not in CHECKED_HERE]
    headers.append((FORWARDED_HEADER, gate.name))
    try:
        # trust_env off: the caller's credentials never go through a proxy the environment names
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S, trust_env=False) as client:
            answer = await client.request(request.method, leader.url + request.url.path,
                                          params=list(request.query_params.multi_items()),
                                          content=await request.body(), headers=headers)
    except httpx.HTTPError as exc:
        raise NoLeader(f"the leader {leader.name} did not answer: {type(exc).__name__}") from None
    forwarded = Response(answer.content, status_code=answer.status_code)
    for name, value in answer.headers.multi_items():
        if name.lower() not in HOP_BY_HOP:
            forwarded.headers.append(name, value)
    return forwarded
