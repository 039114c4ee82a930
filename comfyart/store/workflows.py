"""Workflows in Redis, every version kept, so a task queued by name runs the version it was submitted with. A
delete removes the name and the current version's metadata and lets the versions expire after
``DELETED_RETENTION_S``, so tasks queued before the delete still run. The keys are in ``store.keys``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from comfyart.clock import now_ms
from comfyart.errors import Conflict, NotFound
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text_map, text_set
from comfyart.workflows.definition import Workflow, WorkflowDefinition
from comfyart.workflows.parameters import Parameter

DELETED_RETENTION_S = 7 * 24 * 3600

# KEYS: names set, current hash, versions hash, sequence
# ARGV: name, expected version ('' any, '0' absent), definition JSON, sha, source, now_ms, description, params JSON
_PUT = """
local current = redis.call('HGET', KEYS[2], 'version')
if ARGV[2] ~= '' and (current or '0') ~= ARGV[2] then return {'conflict', current or '0'} end
if current and redis.call('HGET', KEYS[2], 'sha') == ARGV[4] then return {'unchanged', current} end
local outcome = current and 'replaced' or 'created'
local version = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[3], version, ARGV[3])
redis.call('PERSIST', KEYS[3])
local created = redis.call('HGET', KEYS[2], 'created_ms') or ARGV[6]
redis.call('HSET', KEYS[2], 'name', ARGV[1], 'version', version, 'sha', ARGV[4], 'source', ARGV[5],
           'created_ms', created, 'updated_ms', ARGV[6], 'description', ARGV[7], 'params', ARGV[8])
redis.call('SADD', KEYS[1], ARGV[1])
return {outcome, tostring(version)}
"""

# KEYS: names set, current hash, versions hash; ARGV: name, retention seconds
_DELETE = """
if redis.call('DEL', KEYS[2]) == 0 then return 0 end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class PutResult:
    version: int
    changed: bool  # a new version was written (identical content keeps the current one)
    created: bool  # the workflow did not exist before


# what each stored version records besides its definition
_VERSION_META = ("source", "updated_ms")


class WorkflowStore:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._put = client.register_script(_PUT)
        self._delete = client.register_script(_DELETE)

    def _keys(self, name: str) -> list[str]:
        keys = self.keys
        return [keys.workflows, keys.workflow(name), keys.workflow_versions(name), keys.workflow_seq(name)]

    async def put(self, name: str, definition: WorkflowDefinition, *, source: str = "api",
                  expected_version: int | None = None) -> PutResult:
        """Store ``definition`` as the next version of ``name``. Content identical to the current version keeps
        it. ``expected_version`` (0: must not exist) makes the write conditional; a mismatch raises Conflict."""
        document = definition.model_dump(mode="json")
        written = now_ms()
        version_record = {**document, "source": source, "updated_ms": written}
        args = [name, "" if expected_version is None else str(expected_version), json.dumps(version_record),
                definition.content_sha(), source, str(written), definition.description,
                json.dumps(document["params"])]
        with map_redis_errors():
            outcome, version = await self._put(keys=self._keys(name), args=args)
        if outcome == "conflict":
            raise Conflict(f"workflow {name} is at version {version}, not {expected_version}")
        return PutResult(int(version), changed=outcome != "unchanged", created=outcome == "created")

    async def current(self, name: str) -> dict[str, str] | None:
        """The current version's metadata (no graph), or None."""
        with map_redis_errors():
            meta = text_map(await self.redis.hgetall(self._keys(name)[1]))
        return meta or None

    async def get(self, name: str, version: int | None = None) -> Workflow:
        meta = await self.current(name)
        if meta is None and version is None:
            raise NotFound(f"no workflow {name}")
        wanted = version if version is not None else int(meta["version"])  # type: ignore[index]
        record = await self._version_record(name, wanted)
        created_ms = int(meta["created_ms"]) if meta is not None else record["updated_ms"]
        return Workflow(name=name, version=wanted, created_ms=created_ms, **record)

    async def definition(self, name: str, version: int) -> WorkflowDefinition:
        """One stored version, current or not (old versions stay until the workflow is deleted)."""
        record = await self._version_record(name, version)
        return WorkflowDefinition.model_validate({k: v for k, v in record.items() if k not in _VERSION_META})

    async def _version_record(self, name: str, version: int) -> dict[str, Any]:
        with map_redis_errors():
            raw = await self.redis.hget(self._keys(name)[2], str(version))
        if raw is None:
            raise NotFound(f"workflow {name} has no version {version}")
        record: dict[str, Any] = json.loads(raw)
        return record

    async def has_version(self, name: str, version: int) -> bool:
        with map_redis_errors():
            return bool(await self.redis.hexists(self._keys(name)[2], str(version)))

    async def stored_versions(self, wanted: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of ``wanted`` (name, version) pairs are stored, in one round trip."""
        pairs = list(dict.fromkeys(wanted))
        if not pairs:
            return set()
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, version in pairs:
                    pipe.hexists(self._keys(name)[2], str(version))
                found = await pipe.execute()
        return {pair for pair, present in zip(pairs, found, strict=True) if present}

    async def versions(self, name: str) -> list[int]:
        with map_redis_errors():
            fields = await self.redis.hkeys(self._keys(name)[2])
        return sorted(int(f) for f in fields)

    async def summaries(self) -> list[dict[str, Any]]:
        """Every workflow's current metadata with its parameter map, sorted by name; graphs are not read."""
        with map_redis_errors():
            names = sorted(text_set(await self.redis.smembers(self._keys("")[0])))
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self._keys(name)[1])
                metas = await pipe.execute()
        listing = []
        for meta in metas:
            if not meta:
                continue  # deleted between the two reads
            params = {k: Parameter.model_validate(v).model_dump(mode="json")
                      for k, v in json.loads(meta["params"]).items()}
            listing.append({"name": meta["name"], "version": int(meta["version"]), "description": meta["description"],
                            "params": params, "source": meta["source"], "created_ms": int(meta["created_ms"]),
                            "updated_ms": int(meta["updated_ms"])})
        return listing

    async def delete(self, name: str) -> None:
        with map_redis_errors():
            deleted = await self._delete(keys=self._keys(name)[:3], args=[name, DELETED_RETENTION_S])
        if not deleted:
            raise NotFound(f"no workflow {name}")
