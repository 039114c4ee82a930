"""``GET /api/cluster`` (admins only): the replicas on this Redis, which one leads, its fencing epoch and since
when, and the latest elections (issue 24). Any replica answers it, from Redis."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from comfyart.api.auth import admin_only
from comfyart.api.deps import ServicesDep
from comfyart.errors import NotFound

router = APIRouter(dependencies=[Depends(admin_only)])


@router.get("/api/cluster", response_model=None)
async def get_cluster(services: ServicesDep) -> dict[str, Any]:
    """``replica``: the one answering; ``leader``: {name, epoch, since_ms, since} or null while no replica holds the
    lease; ``replicas``: each live replica's record (url, version, role as it believes, started_ms, heartbeat_ms,
    pid, its fleet configuration's fingerprint), with ``leader`` (the lease names it) and ``config_differs`` (its
    fleet configuration is not the leader's; ``differing_sections`` says where); ``elections``: newest first;
    ``now_ms``: this replica's clock, to count heartbeat ages against."""
    if services.replica is None:
        raise NotFound("this daemon runs no replica registry")
    return await services.replica.describe()
