"""What the pool knows: ``/object_info`` merged over the pool (from the inventories its backends reported),
informational GETs passed through (cached), and ``/system_stats`` with every backend's devices."""
from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from comfyart.api.limits import parse_json
from comfyart.comfy.validate import output_nodes
from comfyart.errors import BackendUnavailable
from comfyart.models import Task
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool

INFO_TTL_S = 60.0
STATS_TTL_S = 2.0
FETCH_CONCURRENCY = 8
CACHED_ANSWERS = 64
BACKEND_JSON_DEPTH = 256  # what a backend answers may nest deeper than a request, but not without end

T = TypeVar("T")


class _Cached:
    def __init__(self) -> None:
        self.value: Any = None
        self.expires = 0.0
        self.lock = asyncio.Lock()


class Catalog:
    """The pool's node classes, models and devices as one ComfyUI would answer them, each answer cached a while."""

    def __init__(self, pool: Pool, inventories: Inventories) -> None:
        self.pool = pool
        self.inventories = inventories
        self._cache: collections.OrderedDict[str, _Cached] = collections.OrderedDict()

    async def _cached(self, key: str, ttl_s: float, fetch: Callable[[], Awaitable[T]]) -> T:
        entry = self._cache.get(key)
        if entry is None:
            # keys come from requests (/models/{folder}): the oldest idle ones make room
            while len(self._cache) >= CACHED_ANSWERS:
                oldest = next((k for k, v in self._cache.items() if not v.lock.locked()), None)
                if oldest is None:
                    break
                del self._cache[oldest]
            entry = self._cache[key] = _Cached()
        self._cache.move_to_end(key)
        if entry.value is not None and time.monotonic() < entry.expires:
            return cast(T, entry.value)
        async with entry.lock:  # one fetch at a time; the others take its answer
            if entry.value is None or time.monotonic() >= entry.expires:
                entry.value = await fetch()
                entry.expires = time.monotonic() + ttl_s
        return cast(T, entry.value)

    async def object_info(self) -> dict[str, Any]:
        """The node classes of the whole pool, as the inventories the backends reported last (``pool.inventory``):
        a class any backend has, with the choices of its combo inputs merged (backends may hold different models).
        Nothing is fetched on a request's path."""
        merged = await self.inventories.object_info()
        if merged is None:
            raise BackendUnavailable("no backend has listed its nodes (/object_info) yet")
        return merged

    async def backend_json(self, path: str, ttl_s: float = INFO_TTL_S) -> tuple[int, Any]:
        """The healthy backends' answer to an informational GET (status, JSON), cached: lists (``/embeddings``,
        ``/extensions``, ``/models/{folder}``) are the union of every backend's, as backends may hold different
        models and node packs; anything else is the first good answer."""
        async def fetch() -> tuple[int, Any]:
            limit = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def one(backend: Any) -> tuple[int, Any] | None:
                async with limit:
                    try:
                        status, body = await backend.client.get(path)
                        return (status, parse_json(body, BACKEND_JSON_DEPTH)) if status in (200, 404) else None
                    except (BackendUnavailable, ValueError):
                        return None

            answers = [a for a in await asyncio.gather(*(one(b) for b in self.pool.healthy())) if a is not None]
            if not answers:
                raise BackendUnavailable(f"no healthy backend answered {path}")
            return union_of_answers(answers)

        return await self._cached(f"json:{path}", ttl_s, fetch)

    async def system_stats(self) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            backends = self.pool.healthy()
            answers = await asyncio.gather(*(b.client.system_stats(5.0) for b in backends), return_exceptions=True)
            system: dict[str, Any] = {}
            devices: list[dict[str, Any]] = []
            for backend, answer in zip(backends, answers, strict=True):
                if isinstance(answer, BaseException):
                    continue
                system = system or dict(answer.get("system", {}))
                for device in answer.get("devices", []):
                    devices.append({**device, "name": f"{backend.id}: {device.get('name')}",
                                    "backend": backend.id})
            if not system:
                raise BackendUnavailable("no healthy backend answered /system_stats")
            system["argv"] = ["comfyart"]  # a backend's command line is not the caller's business
            return {"system": system, "devices": devices}

        return await self._cached("system_stats", STATS_TTL_S, fetch)

    async def outputs_to_execute(self, task: Task) -> list[str]:
        """The output nodes the task's prompt runs: its own targets, else every output node of its graph."""
        if task.comfy_targets is not None:
            return task.comfy_targets
        try:
            return output_nodes(task.prompt or {}, await self.object_info())
        except BackendUnavailable:
            return []


def union_of_answers(answers: list[tuple[int, Any]]) -> tuple[int, Any]:
    """One answer for several backends' (status, JSON): the union of their good lists, in first-seen order (each
    backend answers its own sorted); else the first good answer; else the first."""
    good = [body for status, body in answers if status == 200]
    if good and all(isinstance(body, list) for body in good):
        merged: dict[Any, None] = {}
        for body in good:
            merged.update(dict.fromkeys(item for item in body if isinstance(item, (str, int, float))))
        return 200, list(merged)
    return (200, good[0]) if good else answers[0]
