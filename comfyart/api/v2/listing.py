"""Comfy API v2: the job list (``GET /api/v2/jobs``, the SDK's ``list_jobs``: API-V2.md §6.7, §8) and the health
check (``GET /api/v2/health``, open to all, no backend asked).

The list: ``{"jobs": [{id, status, create_time, update_time, metadata}], "next_cursor"?}``, newest first; ``limit``
1..100 (default 50); ``cursor`` the opaque one a page gave (``next_cursor`` is absent on the last page; one given
twice or not ours answers 400 ``invalid_cursor``); ``metadata[k]=v`` filters (at most 3, each a valid label, else
400 ``invalid_metadata_filter``). A key sees its own jobs, an admin (and everyone with auth off) all v2 jobs. A
page reads the index of the first filter (or of the caller's jobs), never every task (``store.jobs``)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from comfyart.api.auth import Caller
from comfyart.api.deps import ServicesDep
from comfyart.api.v2 import shapes
from comfyart.api.v2.answers import V2Refused
from comfyart.api.v2.labels import filters_from_query, filters_problem
from comfyart.auth import Principal
from comfyart.clock import now_ms
from comfyart.store.jobs import JobIndex

DEFAULT_LIMIT, MAX_LIMIT = 50, 100

router = APIRouter()


def read_limit(values: list[str]) -> int:
    if not values:
        return DEFAULT_LIMIT
    if len(values) > 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= MAX_LIMIT:
        raise V2Refused("invalid_request", f"limit must be one whole number from 1 to {MAX_LIMIT}")
    return int(values[0])


def read_cursor(values: list[str]) -> tuple[int, str] | None:
    if not values:
        return None
    if len(values) > 1:
        raise V2Refused("invalid_cursor", "cursor is given more than once")
    try:
        return shapes.decode_cursor(values[0])
    except ValueError:
        raise V2Refused("invalid_cursor", "cursor is not one this server issued: start again without it") from None


def read_filters(request: Request) -> dict[str, str]:
    try:
        filters = filters_from_query(request.query_params.multi_items())
    except ValueError as exc:
        raise V2Refused("invalid_metadata_filter", str(exc)) from None
    problem = filters_problem(filters)
    if problem is not None:
        raise V2Refused("invalid_metadata_filter", problem)
    return filters


def listed_owner(principal: Principal) -> str | None:
    """Whose jobs the caller lists: its own; None (everyone's) for an admin, and with auth off."""
    return None if principal.admin else principal.id


@router.get("/api/v2/jobs", response_model=None)
async def list_jobs(request: Request, principal: Caller, services: ServicesDep) -> dict[str, Any]:
    query = request.query_params
    limit, after = read_limit(query.getlist("limit")), read_cursor(query.getlist("cursor"))
    filters = read_filters(request)
    tasks, more = await JobIndex(services.store).page(owner=listed_owner(principal), filters=filters, after=after,
                                                      limit=limit)
    now, retention_s = now_ms(), services.api_v2.job_retention_s
    body: dict[str, Any] = {"jobs": [shapes.list_item(t, now_ms=now, retention_s=retention_s) for t in tasks]}
    if more and tasks:
        body["next_cursor"] = shapes.encode_cursor(tasks[-1].created_ms, tasks[-1].id)
    return body


@router.get("/api/v2/health", response_model=None)
async def health() -> dict[str, str]:
    """Whether this server answers: no backend, no Redis asked (``/healthz`` checks those)."""
    return {"status": "healthy"}
