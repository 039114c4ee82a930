"""``/api/keys`` (admins only): API keys made at run time (only their hash is kept) beside those of the
configuration; a key is shown once, when made, and can be revoked."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from comfyart.api.auth import admin_only
from comfyart.api.deps import ServicesDep
from comfyart.api.errors import BadRequest
from comfyart.api.requests import KeyCreation, body_doc
from comfyart.errors import NotFound

router = APIRouter(dependencies=[Depends(admin_only)])


@router.get("/api/keys", response_model=None)
async def list_keys(services: ServicesDep) -> dict[str, Any]:
    """Every key: those made at run time and those of the configuration; never a key or its hash."""
    security = services.security
    configured = security.authenticator.config_keys.values() if security.authenticator else ()
    made = await security.keys.records() if security.keys else []
    return {"keys": [k.describe() for k in [*configured, *made]]}


@router.post("/api/keys", status_code=201, openapi_extra=body_doc(KeyCreation))
async def create_key(request: Request, services: ServicesDep) -> JSONResponse:
    """A new key: ``{"name", "role": "client"|"admin", "max_queued", "submissions_per_minute"}``. The answer
    holds the key itself, the only time it is shown: only its hash is kept."""
    keys = services.security.keys
    if keys is None:
        raise BadRequest(409, "auth is off: keys would not be checked; turn auth on first")
    body = await KeyCreation.read(request, services.security.limits)
    record, key = await keys.create(body.name, body.role, max_queued=body.max_queued,
                                    submissions_per_minute=body.submissions_per_minute)
    return JSONResponse({**record.describe(), "key": key}, status_code=201,
                        headers={"Location": f"/api/keys/{record.id}"})


@router.delete("/api/keys/{key_id}", response_model=None)
async def revoke_key(key_id: str, services: ServicesDep) -> dict[str, Any]:
    """Revoke a key made at run time: it is refused from the next request on. (Keys of the configuration
    leave with the configuration.)"""
    if services.security.keys is None:
        raise NotFound(f"no key {key_id}")
    return (await services.security.keys.revoke(key_id)).describe()
