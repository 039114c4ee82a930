"""The daemon itself: ``/healthz`` (alive: for a container's health check, no key), ``/readyz`` (this replica
takes traffic: for load balancers, no key), ``/metrics`` (Prometheus, admins), ``/api/me``
(the caller as the daemon sees it) and ``/api/stats`` (the dashboard's charts)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from comfyart.api.auth import Caller, admin_only
from comfyart.api.deps import ServicesDep
from comfyart.api.errors import problem
from comfyart.cluster.view import unready_reason
from comfyart.errors import NotFound

router = APIRouter()


@router.get("/metrics", dependencies=[Depends(admin_only)], response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format: tasks by status, queue depth (and by priority), backends and their VRAM, pool,
    dispatch, attempt and webhook counters, wait and run time histograms."""
    if services.metrics is None:
        raise NotFound("metrics are off")
    return Response(await services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/me", response_model=None)
async def who_am_i(principal: Caller, services: ServicesDep) -> dict[str, Any]:
    """The caller as the daemon sees it: its key's name and role (the dashboard shows the pool to admins)."""
    quotas = services.security.quotas
    return {"id": principal.id or None, "name": principal.name, "role": principal.role.value,
            "auth": principal.authenticated,
            "max_queued": quotas.max_queued(principal) if quotas is not None else None}


@router.get("/api/stats", response_model=None)
async def stats_history(services: ServicesDep,
                        window_s: float = Query(3600, ge=60, le=30 * 24 * 3600)) -> dict[str, Any]:
    """Samples of the queue's depth (``queued``, ``submitted``, ``running``) and of the tasks that ended in each
    interval (``completed``, ``failed``, ``canceled``), oldest first: the dashboard's charts."""
    if services.stats is None:
        raise NotFound("stats are off")
    return {"interval_s": services.stats.interval_s, "samples": await services.stats.read(window_s)}


@router.get("/healthz", response_model=None)
async def healthz(services: ServicesDep) -> dict[str, Any] | JSONResponse:
    try:
        await services.store.ping()
    except Exception as exc:  # any failure to reach Redis makes the daemon unhealthy
        return problem(503, f"redis unreachable: {type(exc).__name__}")
    return {"status": "ok", "backends": len(services.pool.backends),
            "healthy_backends": len(services.pool.healthy()), "queue_length": await services.queue.length()}


@router.get("/readyz", response_model=None)
async def readyz(services: ServicesDep) -> dict[str, Any] | JSONResponse:
    """200 {"ready": true, "replica", "role"} when this replica can serve: Redis answers, its first heartbeat is
    written, its event bridge follows the stream (replicated), the pool is ready (a standby's: mirrored from the
    leader) and it is not stopping; 503 with the reason otherwise. A load balancer sends
    traffic by it; ``/healthz`` stays the liveness check."""
    replica = services.replica
    try:
        await services.store.ping()
        redis_answers = True
    except Exception:  # any failure to reach Redis: not ready
        redis_answers = False
    reason = unready_reason(redis_answers=redis_answers, joined=replica is None or replica.joined,
                            pool_ready=services.pool.ready.is_set(),
                            stopping=replica is not None and replica.stopping,
                            events_connected=services.gate is None or services.gate.events_connected())
    who = {"replica": replica.name if replica else None, "role": replica.role if replica else None}
    if reason is not None:
        return JSONResponse({"ready": False, "reason": reason, **who, "detail": f"not ready: {reason}"},
                            status_code=503)
    return {"ready": True, **who}
