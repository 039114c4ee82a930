"""The newest server's ``/api/jobs`` routes (server.py @002c3fb9; shapes in ``jobs.py``): the list, one job, and
cancelling one or several. Declared with their ``/api`` prefix only, as upstream does; absent (404) from 0.3.64.
"""
from __future__ import annotations

import heapq
from typing import Any

from aiohttp import web

from comfyart.emulator import jobs
from comfyart.emulator.answers import json_body
from comfyart.emulator.engine import EMULATOR, Emulator
from comfyart.emulator.newest import is_canonical_uuid

routes = web.RouteTableDef()


def _queue(emu: Emulator) -> tuple[list[list[Any]], list[list[Any]]]:
    running = [emu.running.wire()] if emu.running is not None else []
    return running, [entry[2].wire() for entry in sorted(emu.pending)]


def _absent() -> web.Response:
    return web.Response(status=404, content_type="application/octet-stream")


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if not emu.flavour.newest:
        return _absent()
    try:
        query = jobs.parse_query(dict(request.query))
    except jobs.JobQueryError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    running, pending = _queue(emu)
    return web.json_response(jobs.list_jobs(running, pending, emu.history, query))


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if not emu.flavour.newest:
        return _absent()
    running, pending = _queue(emu)
    job = jobs.find_job(request.match_info["job_id"], running, pending, emu.history)
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


def cancel(emu: Emulator, job_id: str) -> bool:
    """Interrupt the job if it runs, take it off the queue if it waits; False for a finished or unknown one."""
    if emu.running is not None and emu.running.prompt_id == job_id:
        emu.interrupt_requested = True
        return True
    before = len(emu.pending)
    emu.pending[:] = [entry for entry in emu.pending if entry[2].prompt_id != job_id]
    heapq.heapify(emu.pending)
    return len(emu.pending) != before


@routes.post("/api/jobs/{job_id}/cancel")
async def cancel_one(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if not emu.flavour.newest:
        return _absent()
    cancelled = cancel(emu, request.match_info["job_id"])
    if cancelled:
        await emu.broadcast_status()
    return web.json_response({"cancelled": cancelled})


@routes.post("/api/jobs/cancel")
async def cancel_many(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR]
    if not emu.flavour.newest:
        return _absent()
    try:
        body = await json_body(request)
    except ValueError:
        return web.json_response({"error": "Request body must be valid JSON"}, status=400)
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        return web.json_response({"error": "job_ids must be a list"}, status=400)
    invalid = [i if isinstance(i, str) else repr(i) for i in ids if not is_canonical_uuid(i)]
    if invalid:
        return web.json_response({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400)
    cancelled = [cancel(emu, job_id) for job_id in ids]
    if any(cancelled):
        await emu.broadcast_status()
    return web.json_response({"cancelled": any(cancelled)})
