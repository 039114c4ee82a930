"""``/api/pool`` (admins only): the backends and hosts (each backend with its inventory's summary), a health check
on demand, scaling limits, static backends registered at run time, one backend's log, its inventory read again on
demand (or every healthy backend's), and what can be done to one backend (drain, recycle, enable, disable). One
backend's state, and the backends at an address (``GET /api/pool/backends?address=HOST:PORT``): what ``comfyart
drain`` reads in a Kubernetes pod's ``preStop`` hook, where the pod knows its IP and port, not its backend id; the
same drain for a hook with only an HTTP client (``POST /api/pool/drain``, ``GET /api/pool/drained``: ``api.drain``).

Reads answer from this replica's pool (a standby's mirrors the leader's, ``pool.mirror``); every other route acts on
the leader's objects, and a standby sends it to the leader (``api.forward.on_leader``)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from comfyart.api.auth import admin_only
from comfyart.api.deps import ServicesDep
from comfyart.api.drain import backends_at, described, wait_drained
from comfyart.api.forward import on_leader
from comfyart.api.inventory import described_backend, described_pool
from comfyart.api.requests import BackendRegistration, ScaleChange, body_doc
from comfyart.errors import BackendUnavailable, NotFound

router = APIRouter(dependencies=[Depends(admin_only)])


@router.get("/api/pool", response_model=None)
async def get_pool(services: ServicesDep) -> dict[str, Any]:
    """Hosts, backends (health, mode, load, inventory summary), recent errors, and the autoscaler's last decision
    and why."""
    return {**described_pool(services), "queue_length": await services.queue.length()}


@router.post("/api/pool/health-check", response_model=None)
async def health_check_now(request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Run one round now (probes, container checks, recycling, scaling) and return the pool."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    await services.controls.check_now()
    return {**described_pool(services), "queue_length": await services.queue.length()}


@router.post("/api/pool/refresh", response_model=None)
async def refresh_inventories(request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Read every healthy backend's inventory now; the pool, with ``failed``: the backends that did not answer
    (id: why)."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    healthy = services.pool.healthy()
    answers = await services.inventories.refresh(healthy)
    failed = {b.id: b.inventory_error for b, answer in zip(healthy, answers, strict=True) if answer is None}
    return {**described_pool(services), "refreshed": len(healthy) - len(failed), "failed": failed,
            "queue_length": await services.queue.length()}


@router.post("/api/pool/scale", response_model=None, openapi_extra=body_doc(ScaleChange))
async def scale(request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Set ``min_containers``, ``max_containers`` or a fixed ``target`` at run time (``null``: back to the
    configuration); kept in Redis across restarts."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    change = await ScaleChange.read(request, services.security.limits)
    await services.controls.set_scale(change.changes())
    return services.pool.describe()


@router.post("/api/pool/backends", status_code=201, openapi_extra=body_doc(BackendRegistration))
async def register_backend(request: Request, services: ServicesDep) -> Response:
    """Register a static ComfyUI backend (a machine can announce itself at boot); kept in Redis. The same
    name and URL again answers 200."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    static = await BackendRegistration.read(request, services.security.limits)
    backend, created = await services.controls.register_static(static)
    return JSONResponse(backend.describe(), status_code=201 if created else 200)


@router.get("/api/pool/backends", response_model=None)
async def list_backends(services: ServicesDep,
                        address: str | None = Query(None, max_length=300, description="only the backends whose URL "
                                                    "points at this HOST:PORT")) -> dict[str, Any]:
    """The backends as ``/api/pool`` describes them (no inventories), or those at ``address``: a pod finds
    itself by its IP and port. On a standby, the leader's, as last mirrored."""
    found = services.pool.describe()["backends"]
    if address is None:
        return {"backends": found}
    ids = set(backends_at(services, address))
    return {"backends": [b for b in found if b["id"] in ids]}


@router.get("/api/pool/backends/{backend_id}", response_model=None)
async def get_backend(backend_id: str, services: ServicesDep) -> dict[str, Any]:
    """One backend as ``/api/pool`` describes it (no inventory): its health, mode, prompts in flight. 404 once it
    left the pool."""
    found = described(services, backend_id)
    if found is None:
        raise NotFound(f"no backend {backend_id}")
    return found


@router.post("/api/pool/drain", response_model=None)
async def drain_at(request: Request, services: ServicesDep,
                   address: str = Query(..., max_length=300, description="HOST:PORT: the pod's IP and ComfyUI port")
                   ) -> dict[str, Any] | Response:
    """Drain the backends whose URL points at ``address`` (a Kubernetes ``preStop`` hook); then ``GET
    /api/pool/drained`` waits until they hold no prompt. 404 when none is there."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    ids = backends_at(services, address)
    if not ids:
        raise NotFound(f"no backend at {address}")
    return {"backends": [(await services.controls.act(backend_id, "drain")).describe() for backend_id in ids]}


@router.get("/api/pool/drained", response_model=None)
async def drained(services: ServicesDep,
                  address: str = Query(..., max_length=300, description="HOST:PORT: the pod's IP and ComfyUI port"),
                  wait_s: float = Query(0.0, ge=0, le=86_400, description="wait this long for the drain to end")
                  ) -> dict[str, Any]:
    """``{"drained": true, ...}`` once the backends at ``address`` hold no prompt (or left the pool); 409 when one
    still holds a prompt, or takes work, after ``wait_s``. Any replica answers (a read)."""
    return await wait_drained(services, address, wait_s)


@router.delete("/api/pool/backends/{name}", status_code=202, response_model=None)
async def deregister_backend(name: str, request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Forget a registered static backend: it takes no new work and leaves once its prompts are done."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    return (await services.controls.deregister_static(name)).describe()


@router.get("/api/pool/backends/{backend_id}/logs", response_model=None)
async def backend_logs(backend_id: str, request: Request, services: ServicesDep,
                       lines: int = Query(100, ge=1, le=10_000)) -> dict[str, Any] | Response:
    """The last lines of a container's (or local process's) log, from Docker (or its log file)."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    backend = services.pool.backends.get(backend_id)
    if backend is None:
        raise NotFound(f"no backend {backend_id}")
    if backend.provider is None or backend.spawned is None:
        raise NotFound(f"backend {backend_id} is run by someone else: comfyart has no log of it")
    text = await backend.provider.logs(backend.spawned, lines)
    return {"backend": backend_id, "lines": text.splitlines()[-lines:]}


@router.post("/api/pool/backends/{backend_id}/refresh", response_model=None)
async def refresh_inventory(backend_id: str, request: Request, services: ServicesDep) -> dict[str, Any] | Response:
    """Read the backend's inventory (``/object_info``, ``/embeddings``) now; the backend with its summary. 503
    when it does not answer (its last inventory stays)."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    backend = services.pool.get(backend_id)
    if await services.inventories.read(backend) is None:
        raise BackendUnavailable(f"backend {backend_id} did not list its inventory: {backend.inventory_error}")
    return described_backend(services, backend)


@router.post("/api/pool/backends/{backend_id}/{action}", response_model=None)
async def control_backend(backend_id: str, action: str, request: Request,
                          services: ServicesDep) -> dict[str, Any] | Response:
    """``drain`` (no new work, then stopped; a static one waits), ``recycle`` (drain, then replace),
    ``enable`` (take work again; cancels a drain), ``disable`` (no new work, kept as is)."""
    if (forwarded := await on_leader(request, services)) is not None:
        return forwarded
    return (await services.controls.act(backend_id, action)).describe()
