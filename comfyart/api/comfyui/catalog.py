"""What the pool knows: ``/object_info`` merged over the pool (from the inventories its backends reported),
informational GETs passed through (cached), and ``/system_stats`` with every backend's devices."""
from __future__ import annotations

import asyncio
import collections
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
        self._encoding = asyncio.Lock()
        self._encoded: tuple[dict[str, Any], EncodedDocument] | None = None

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

    async def object_info_encoded(self) -> EncodedDocument:
        """``object_info`` as its JSON bytes and their gzip, made once (off the event loop) for each merged document:
        the web editor asks it at every load, and the fleet's can be megabytes."""
        merged = await self.inventories.merged()
        if merged is None:
            raise BackendUnavailable("no backend has listed its nodes (/object_info) yet")
        async with self._encoding:
            if self._encoded is None or self._encoded[0] is not merged.object_info:
                self._encoded = (merged.object_info, await asyncio.to_thread(encode_document, merged.object_info))
        return self._encoded[1]

    async def object_info(self) -> dict[str, Any]:
        """The node classes of the whole pool, as the inventories the backends reported last (``pool.inventory``):
        a class any backend has, with the choices of its combo inputs merged (backends may hold different models).
        Nothing is fetched on a request's path."""
        merged = await self.inventories.object_info()
        if merged is None:
            raise BackendUnavailable("no backend has listed its nodes (/object_info) yet")
        return merged

    async def _answers(self, path: str) -> list[tuple[str, int, Any]]:
        """Every healthy backend's answer to an informational GET: (backend id, status, JSON); a 404 without JSON
        (ComfyUI's own) as None. Backends that fail, or answer anything else, are left out."""
        backends = self.pool.healthy()
        if not backends:
            raise BackendUnavailable(f"no healthy backend to answer {path}")
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(backend: Any) -> tuple[str, int, Any] | None:
            async with limit:
                try:
                    status, body = await backend.client.get(path)
                except BackendUnavailable:
                    return None
            try:
                return (backend.id, status, parse_json(body, BACKEND_JSON_DEPTH)) if status in (200, 404) else None
            except ValueError:
                return (backend.id, 404, None) if status == 404 else None

        return [a for a in await asyncio.gather(*(one(b) for b in backends)) if a is not None]

    async def _listing(self, path: str, ttl_s: float) -> tuple[int, Any, dict[Any, list[str]]]:
        async def fetch() -> tuple[int, Any, dict[Any, list[str]]]:
            answers = await self._answers(path)
            if not answers:
                raise BackendUnavailable(f"no healthy backend answered {path}")
            status, body = union_of_answers([(status, body) for _, status, body in answers])
            return status, body, listed_by(answers)

        return await self._cached(f"json:{path}", ttl_s, fetch)

    async def backend_json(self, path: str, ttl_s: float = INFO_TTL_S) -> tuple[int, Any]:
        """The healthy backends' answer to an informational GET (status, JSON), cached: lists (``/embeddings``,
        ``/extensions``, ``/models/{folder}``) are the union of every backend's, as backends may hold different
        models and node packs; anything else is the first good answer."""
        status, body, _ = await self._listing(path, ttl_s)
        return status, body

    async def listed_by(self, path: str, ttl_s: float = INFO_TTL_S) -> dict[Any, list[str]]:
        """Which backends listed each item of a list GET (``/extensions``: which of them serve a script), read with
        ``backend_json``'s answer and cached with it."""
        return (await self._listing(path, ttl_s))[2]

    async def merged_json(self, path: str, ttl_s: float = INFO_TTL_S) -> dict[str, Any]:
        """The healthy backends' JSON objects for ``path`` merged into one (``merge_objects``), cached; ``{}`` when
        none answers one (an older ComfyUI without the route). BackendUnavailable when no backend is healthy."""
        async def fetch() -> dict[str, Any]:
            return merge_objects([body for _, status, body in await self._answers(path) if status == 200])

        return await self._cached(f"merged:{path}", ttl_s, fetch)

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


@dataclass(frozen=True)
class EncodedDocument:
    json: bytes
    gzip: bytes


def encode_document(document: Any) -> EncodedDocument:
    """A JSON answer as Starlette's JSONResponse writes it, and gzipped (level 6: a 2 MB /object_info in a few tens of
    milliseconds, to a sixth of its size)."""
    body = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
    return EncodedDocument(body, gzip.compress(body, compresslevel=6, mtime=0))


def union_of_answers(answers: list[tuple[int, Any]]) -> tuple[int, Any]:
    """One answer for several backends' (status, JSON): the union of their good lists, in first-seen order (each
    backend answers its own sorted; an object item counts once by its ``name``, the first backend's kept); else the
    first good answer; else the first."""
    good = [body for status, body in answers if status == 200]
    if good and all(isinstance(body, list) for body in good):
        merged: dict[Any, Any] = {}
        for body in good:
            for item in body:
                key = _item_key(item)
                if key is not None:
                    merged.setdefault(key, item)
        return 200, list(merged.values())
    return (200, good[0]) if good else answers[0]


def _item_key(item: Any) -> Any:
    """What makes a list item the same on two backends: a name or number itself, an object its ``name``."""
    if isinstance(item, (str, int, float)):
        return item
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return ("name", item["name"])
    return None


def listed_by(answers: list[tuple[str, int, Any]]) -> dict[Any, list[str]]:
    """For list answers (backend id, status, JSON): each item (``_item_key``) and the backends that listed it."""
    sources: dict[Any, list[str]] = {}
    for backend_id, status, body in answers:
        if status == 200 and isinstance(body, list):
            for item in body:
                key = _item_key(item)
                if key is not None and backend_id not in sources.setdefault(key, []):
                    sources[key].append(backend_id)
    return sources


def merge_objects(bodies: list[Any]) -> dict[str, Any]:
    """Several backends' JSON objects as one: objects merged key by key, at every depth; lists joined without
    repeats (two backends with the same node pack list it once); any other value the first backend's. Bodies that
    are not objects are left out."""
    merged: dict[str, Any] = {}
    for body in bodies:
        if isinstance(body, dict):
            merged = deep_merge(merged, body)
    return merged


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into ``base`` (neither changed): ``merge_objects`` for one pair."""
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else value
        return merged
    if isinstance(base, list) and isinstance(update, list):
        seen = {_canonical(item) for item in base}
        joined = list(base)
        for item in update:
            if _canonical(item) not in seen:
                seen.add(_canonical(item))
                joined.append(item)
        return joined
    return base


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
