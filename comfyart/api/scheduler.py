"""``/api/scheduler`` (admins only): the dispatch settings in force, changed at run time and kept across restarts,
with dispatch counters and the queued tasks no backend could run. A standby answers the leader's (mirrored with its
pool, ``pool.mirror``) and sends a change to the leader (``api.forward``)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from comfyart.api.auth import admin_only
from comfyart.api.deps import ServicesDep
from comfyart.api.forward import on_leader
from comfyart.api.requests import SchedulerChange, body_doc, describe
from comfyart.errors import InvalidInput

router = APIRouter(dependencies=[Depends(admin_only)])


@router.get("/api/scheduler", response_model=None)
async def get_scheduler(services: ServicesDep) -> dict[str, Any]:
    """The settings in force, which ones were changed at run time, dispatch counters, and queued tasks that no
    backend in the pool could run (with why)."""
    mirrored = services.pool.mirrored
    described = mirrored.scheduler if mirrored is not None else services.dispatcher.describe()
    return {**described, "queue_length": await services.queue.length()}


@router.put("/api/scheduler", response_model=None, openapi_extra=body_doc(SchedulerChange))
async def put_scheduler(request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Change ``strategy``, ``order``, ``prefetch``, ``lookahead``, ``priority_ageing_s`` or
    ``affinity_max_skips`` at run time (``null``: back to the configured value); kept in Redis across restarts."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    change = await SchedulerChange.read(request, services.security.limits)
    try:
        await services.dispatcher.apply(change.changes())
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None
    return {**services.dispatcher.describe(), "queue_length": await services.queue.length()}
