"""What the pool knows, asked of its healthy backends and cached: ``/object_info`` merged over the pool (identical
answers parsed once), informational GETs passed through, and ``/system_stats`` with every backend's devices."""
from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from loguru import logger

from comfyart.api.limits import parse_json
from comfyart.comfy.validate import output_nodes
from comfyart.errors import BackendUnavailable
from comfyart.models import Task
from comfyart.pool.registry import Pool

OBJECT_INFO_TTL_S = 300.0
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

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
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
        """The node classes of the whole pool: a class any healthy backend has, with the choices of its combo
        inputs merged (backends may hold different models). Identical answers are parsed once."""
        async def fetch() -> dict[str, Any]:
            backends = self.pool.healthy()
            if not backends:
                raise BackendUnavailable("no healthy backend to ask for /object_info")
            limit = asyncio.Semaphore(FETCH_CONCURRENCY)

            async def one(backend: Any) -> bytes | None:
                async with limit:
                    try:
                        status, body = await backend.client.get("/object_info")
                    except BackendUnavailable as exc:
                        logger.debug("no /object_info backend={} error={}", backend.id, exc)
                        return None
                    return body if status == 200 else None

            bodies = await asyncio.gather(*(one(b) for b in backends))
            merged: dict[str, Any] = {}
            seen = set()
            for body in bodies:
                if body is None or hashlib.sha256(body).digest() in seen:
                    continue
                seen.add(hashlib.sha256(body).digest())
                try:
                    merge_object_info(merged, parse_json(body, BACKEND_JSON_DEPTH))
                except (ValueError, TypeError, AttributeError):
                    continue
            if not merged:
                raise BackendUnavailable("no backend answered /object_info")
            return merged

        return await self._cached("object_info", OBJECT_INFO_TTL_S, fetch)

    async def backend_json(self, path: str, ttl_s: float = INFO_TTL_S) -> tuple[int, Any]:
        """A healthy backend's answer to an informational GET (status, JSON), cached."""
        async def fetch() -> tuple[int, Any]:
            for backend in self.pool.healthy():
                try:
                    status, body = await backend.client.get(path)
                    if status in (200, 404):
                        return status, parse_json(body, BACKEND_JSON_DEPTH)
                except (BackendUnavailable, ValueError):
                    continue
            raise BackendUnavailable(f"no healthy backend answered {path}")

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


def merge_object_info(merged: dict[str, Any], info: dict[str, Any]) -> None:
    """Fold one backend's /object_info into ``merged``: new classes are added, and the choices of a combo input
    become the union of every backend's."""
    for class_name, class_info in info.items():
        if class_name not in merged:
            merged[class_name] = class_info
            continue
        known = merged[class_name].get("input", {})
        for section in ("required", "optional"):
            for name, spec in (class_info.get("input", {}).get(section) or {}).items():
                mine = (known.get(section) or {}).get(name)
                if (isinstance(mine, list) and mine and isinstance(mine[0], list)
                        and isinstance(spec, list) and spec and isinstance(spec[0], list)):
                    mine[0] = mine[0] + [choice for choice in spec[0] if choice not in mine[0]]
