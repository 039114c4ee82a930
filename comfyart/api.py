"""The REST API: tasks, their outputs, the pool, and a health check. ``create_app`` takes its services;
there are no module globals. Every error leaves as a 4xx/5xx with a one-line ``detail``, never a stack trace.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse

from . import __version__
from .comfy.protocol import graph_problem
from .errors import NotFound, TransientError
from .models import TaskStatus
from .outputs import OutputStore
from .pool import Pool
from .store import TaskStore

MAX_BODY_BYTES = 32 << 20


@dataclass
class Services:
    store: TaskStore
    pool: Pool
    outputs: OutputStore


def _problem(status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="comfyart", version=__version__,
                  description="Elastic scheduler for fleets of ComfyUI backends")
    store, pool, outputs = services.store, services.pool, services.outputs

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(TransientError)
    async def unavailable(request: Request, exc: TransientError) -> JSONResponse:
        return _problem(503, str(exc), {"Retry-After": str(max(1, round(exc.retry_after_s)))})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _one_line(exc))

    @app.post("/api/tasks", status_code=201)
    async def submit_task(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return _problem(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            return _problem(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _problem(422, "body must be a JSON object with a 'prompt' field")
        if "prompt" not in body:
            return _problem(422, "missing field 'prompt' (a ComfyUI API-format graph)")
        unknown = sorted(set(body) - {"prompt"})
        if unknown:
            return _problem(422, f"unknown field(s): {', '.join(unknown)}")
        problem = graph_problem(body["prompt"])
        if problem is not None:
            return _problem(422, problem)
        task = await store.create(body["prompt"])
        return JSONResponse({"id": task.id, "status": task.status.value}, status_code=201,
                            headers={"Location": f"/api/tasks/{task.id}"})

    @app.get("/api/tasks")
    async def list_tasks(status: Optional[TaskStatus] = None, limit: int = Query(50, ge=1, le=500),
                         offset: int = Query(0, ge=0)) -> Any:
        tasks = await store.list(status=status, limit=limit, offset=offset)
        return {"tasks": [t.model_dump(exclude={"prompt"}) for t in tasks], "total": await store.count(status),
                "limit": limit, "offset": offset}

    @app.get("/api/tasks/{task_id}")
    async def get_task(task_id: str) -> Any:
        return (await store.get(task_id)).model_dump()

    @app.get("/api/tasks/{task_id}/outputs/{filename}")
    async def get_output(task_id: str, filename: str) -> Any:
        task = await store.get(task_id)
        record = next((o for o in task.outputs if o.filename == filename), None)
        path = outputs.find(task_id, filename) if record is not None else None
        if record is None or path is None:
            raise NotFound(f"task {task_id} has no output {filename}")
        return FileResponse(path, media_type=record.content_type, filename=filename)

    @app.get("/api/pool")
    async def get_pool() -> Any:
        return {**pool.describe(), "queue_length": await store.queue_length()}

    @app.get("/healthz")
    async def healthz() -> Any:
        try:
            await store.redis.ping()
        except Exception as exc:  # any failure to reach Redis makes the daemon unhealthy
            return _problem(503, f"redis unreachable: {type(exc).__name__}")
        return {"status": "ok", "backends": len(pool.backends), "healthy_backends": len(pool.healthy()),
                "queue_length": await store.queue_length()}

    return app
