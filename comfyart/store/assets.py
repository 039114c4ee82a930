"""The v2 API's asset records (API-V2.md §6.6), in Redis: a uuid4 id over a blob (``files.assets``), one owner's.
Keys in ``store.keys``: the record, and per owner and blob the ids of its live assets of that blob, which answer
``HEAD by-hash`` and ``from-hash`` without telling one owner about another's blobs ("miss and not-yours
indistinguishable"). The owner None is auth off: one shared space.

A record with an expiry is a Redis key with that expiry: it vanishes on time without a sweep; its index entry is
scored by the same time and is read only from ``now`` on. Creation and deletion are each one Lua script, so the
record and its indexes never disagree. Besides the owner's index of a blob, one index per blob holds every owner's
assets of it: ``live_blobs`` answers the blob GC from it, one round trip for a batch of blobs.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from comfyart.errors import NotFound
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text_map, texts

NEVER = "+inf"  # the index score of an asset without expiry

# KEYS: the new record, its owner's index of its blob, its owner's file paths, every owner's index of the blob.
# ARGV: id, record prefix, now (ms), expires (ms or ''), then the record's fields as name, value pairs. An asset of
# this owner and blob that is still live and has the same file_path, content_type and job_id is the same asset: it
# is returned (and kept at least as long as asked) instead of a second one. Either way the owner's file_path names
# it. Returns {'new' | 'existing', id}.
_CREATE = """
local id, prefix, now, expires = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local fields = {}
for i = 5, #ARGV, 2 do fields[ARGV[i]] = ARGV[i + 1] end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. now)
for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local same = redis.call('HMGET', prefix .. other, 'file_path', 'content_type', 'job_id')
  if same[1] == fields['file_path'] and same[2] == fields['content_type'] and same[3] == fields['job_id'] then
    local score = redis.call('ZSCORE', KEYS[2], other)
    if expires == '' then
      if score ~= 'inf' then
        redis.call('PERSIST', prefix .. other)
        redis.call('HSET', prefix .. other, 'expires_ms', '')
        redis.call('ZADD', KEYS[2], '+inf', other)
        redis.call('ZADD', KEYS[4], '+inf', other)
      end
    elseif score ~= 'inf' and tonumber(expires) > tonumber(score) then
      redis.call('PEXPIREAT', prefix .. other, expires)
      redis.call('HSET', prefix .. other, 'expires_ms', expires)
      redis.call('ZADD', KEYS[2], expires, other)
      redis.call('ZADD', KEYS[4], expires, other)
    end
    redis.call('HSET', KEYS[3], fields['file_path'], other)
    return {'existing', other}
  end
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if expires == '' then
  redis.call('ZADD', KEYS[2], '+inf', id)
  redis.call('ZADD', KEYS[4], '+inf', id)
else
  redis.call('PEXPIREAT', KEYS[1], expires)
  redis.call('ZADD', KEYS[2], expires, id)
  redis.call('ZADD', KEYS[4], expires, id)
end
redis.call('HSET', KEYS[3], fields['file_path'], id)
return {'new', id}
"""

# KEYS: the record, its owner's index of its blob, its owner's file paths, every owner's index of the blob. ARGV:
# id, owner ('' for none). Returns
# 1 when it was there.
_DELETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
local path = redis.call('HGET', KEYS[1], 'file_path')
if path and redis.call('HGET', KEYS[3], path) == ARGV[1] then redis.call('HDEL', KEYS[3], path) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class AssetRecord:
    """One asset. ``hash`` is ``blake3:<hex>``; ``file_path`` the name the client gave (``photo.png``); times in
    ms since the epoch; ``expires_ms`` None: kept until deleted; ``job_id``: the job that produced it (None: an
    upload)."""

    id: str
    owner: str | None
    hash: str
    size: int
    content_type: str
    file_path: str
    created_ms: int
    expires_ms: int | None = None
    job_id: str | None = None

    @property
    def hex(self) -> str:
        return self.hash.removeprefix("blake3:")

    def fields(self) -> dict[str, str]:
        """The record as Redis holds it ('' for None)."""
        return {"owner": self.owner or "", "hash": self.hash, "size": str(self.size),
                "content_type": self.content_type, "file_path": self.file_path,
                "created_ms": str(self.created_ms), "expires_ms": _text(self.expires_ms),
                "job_id": self.job_id or ""}

    @classmethod
    def from_fields(cls, asset_id: str, fields: dict[str, str]) -> AssetRecord:
        return cls(id=asset_id, owner=fields["owner"] or None, hash=fields["hash"], size=int(fields["size"]),
                   content_type=fields["content_type"], file_path=fields["file_path"],
                   created_ms=int(fields["created_ms"]),
                   expires_ms=int(fields["expires_ms"]) if fields["expires_ms"] else None,
                   job_id=fields["job_id"] or None)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def is_asset_id(asset_id: str) -> bool:
    """Whether ``asset_id`` could name an asset (a uuid in its canonical form): anything else is not found
    without asking Redis."""
    try:
        return str(uuid.UUID(asset_id)) == asset_id
    except ValueError:
        return False


class AssetStore:
    """Every owner's asset records. Blobs, paths and hashes are checked by the caller (``policy.assets``)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)

    async def create(self, owner: str | None, *, hash: str, size: int, content_type: str, file_path: str,
                     now_ms: int, expires_ms: int | None = None,
                     job_id: str | None = None) -> tuple[AssetRecord, bool]:
        """A new asset of a stored blob, or the owner's live one of the same blob, file_path, content_type and
        job (kept at least until ``expires_ms`` then): (record, created_new)."""
        record = AssetRecord(id=str(uuid.uuid4()), owner=owner, hash=hash, size=size, content_type=content_type,
                             file_path=file_path, created_ms=now_ms, expires_ms=expires_ms, job_id=job_id)
        args: list[Any] = [record.id, self.keys.asset_prefix, now_ms, _text(expires_ms)]
        for name, value in record.fields().items():
            args += [name, value]
        with map_redis_errors():
            outcome, asset_id = texts(await self._create(
                keys=[self.keys.asset(record.id), self.keys.asset_blob(owner, record.hex),
                      self.keys.asset_paths(owner), self.keys.blob_assets(record.hex)], args=args))
        if outcome == "new":
            return record, True
        existing = await self.get(owner, asset_id)
        if existing is None:  # deleted between the script and this read: as good as never there
            raise NotFound(f"asset {asset_id} not found")
        return existing, False

    async def get(self, owner: str | None, asset_id: str) -> AssetRecord | None:
        """The asset, when it exists, has not expired, and is ``owner``'s (another's is as missing)."""
        if not is_asset_id(asset_id):
            return None
        with map_redis_errors():
            fields = text_map(await self.redis.hgetall(self.keys.asset(asset_id)))
        if not fields:
            return None
        record = AssetRecord.from_fields(asset_id, fields)
        return record if record.owner == owner else None

    async def delete(self, owner: str | None, asset_id: str) -> None:
        """Delete ``owner``'s asset; NotFound when there is none (a second delete, another's asset). Its blob
        stays: other assets may share it."""
        record = await self.get(owner, asset_id)
        deleted = 0
        if record is not None:
            with map_redis_errors():
                deleted = await self._delete(keys=[self.keys.asset(asset_id),
                                                   self.keys.asset_blob(owner, record.hex),
                                                   self.keys.asset_paths(owner),
                                                   self.keys.blob_assets(record.hex)],
                                             args=[asset_id, owner or ""])
        if not deleted:
            raise NotFound(f"asset {asset_id} not found")

    async def of_blob(self, owner: str | None, hex_digest: str, *, now_ms: int) -> AssetRecord | None:
        """One of ``owner``'s live assets of a blob (the one kept longest), or None: None too when only other
        owners have that blob. What ``HEAD by-hash`` and ``from-hash`` ask."""
        with map_redis_errors():
            ids = texts(await self.redis.zrange(self.keys.asset_blob(owner, hex_digest), NEVER, now_ms,
                                                byscore=True, desc=True, offset=0, num=1))
        return await self.get(owner, ids[0]) if ids else None

    async def by_paths(self, owner: str | None, file_paths: list[str]) -> dict[str, AssetRecord]:
        """``owner``'s live assets named by each of ``file_paths`` that names one (the latest uploaded under it),
        by file_path: two round trips whatever the number of paths."""
        if not file_paths:
            return {}
        with map_redis_errors():
            ids = await self.redis.hmget(self.keys.asset_paths(owner), file_paths)
        found = {path: asset_id.decode() if isinstance(asset_id, bytes) else asset_id
                 for path, asset_id in zip(file_paths, ids, strict=True) if asset_id is not None}
        records = await self.many(owner, list(set(found.values())))
        return {path: records[asset_id] for path, asset_id in found.items() if asset_id in records}

    async def many(self, owner: str | None, asset_ids: list[str]) -> dict[str, AssetRecord]:
        """``owner``'s live assets among ``asset_ids``, by id (others', expired and malformed ones left out), in one
        round trip."""
        wanted = [asset_id for asset_id in dict.fromkeys(asset_ids) if is_asset_id(asset_id)]
        if not wanted:
            return {}
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for asset_id in wanted:
                    pipe.hgetall(self.keys.asset(asset_id))
                replies = await pipe.execute()
        records = {}
        for asset_id, reply in zip(wanted, replies, strict=True):
            fields = text_map(reply)
            if fields and fields.get("owner", "") == (owner or ""):
                records[asset_id] = AssetRecord.from_fields(asset_id, fields)
        return records

    async def live_blobs(self, hex_digests: list[str], *, now_ms: int) -> set[str]:
        """Which of ``hex_digests`` a live asset of any owner names (one not expired, not deleted): the blobs the
        GC keeps. One round trip for the lot (a ZCOUNT each)."""
        if not hex_digests:
            return set()
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for hex_digest in hex_digests:
                    pipe.zcount(self.keys.blob_assets(hex_digest), now_ms, NEVER)
                counts = await pipe.execute()
        return {hex_digest for hex_digest, count in zip(hex_digests, counts, strict=True) if count}

    async def forget_blobs(self, hex_digests: list[str], *, now_ms: int) -> None:
        """Drop the expired entries of these blobs' indexes of every owner's assets (the GC removed the blobs): an
        index left empty is no key any more. One round trip."""
        if not hex_digests:
            return
        with map_redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for hex_digest in hex_digests:
                    pipe.zremrangebyscore(self.keys.blob_assets(hex_digest), "-inf", f"({now_ms}")
                await pipe.execute()
