"""The web editor's userdata (ComfyUI's user manager: saved workflows, settings, any file the page keeps), one space
per owner in Redis: the files' bytes, their info, the directories they make and the bytes used. Every change is one
Lua script, so the quota and ComfyUI's conflicts (a file that exists, a directory in the way) hold across daemons."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis.asyncio as aioredis

from comfyart.policy.userdata import FileInfo
from comfyart.store.keys import Keys
from comfyart.store.redis import map_redis_errors, text_map

# Both scripts refuse before changing anything. KEYS: files, meta, dirs, bytes (Keys.userdata). A meta value is
# "size created_ms modified_ms". An ancestor of a path is each prefix before a '/': a directory.
_ANCESTORS = """
local function ancestors(path)
  local found, start = {}, 1
  while true do
    local i = string.find(path, '/', start, true)
    if not i then return found end
    found[#found + 1] = string.sub(path, 1, i - 1)
    start = i + 1
  end
end
local function blocked(path)
  if redis.call('HEXISTS', KEYS[3], path) == 1 then return 'directory' end
  for _, dir in ipairs(ancestors(path)) do
    if redis.call('HEXISTS', KEYS[1], dir) == 1 then return 'parent_is_file' end
  end
  return nil
end
local function count(path, by)
  for _, dir in ipairs(ancestors(path)) do
    if redis.call('HINCRBY', KEYS[3], dir, by) <= 0 then redis.call('HDEL', KEYS[3], dir) end
  end
end
local function remove(path, meta)
  local size = tonumber(string.match(meta, '^(%d+)'))
  redis.call('HDEL', KEYS[1], path)
  redis.call('HDEL', KEYS[2], path)
  redis.call('DECRBY', KEYS[4], size)
  count(path, -1)
end
"""

# ARGV: path, content, now (ms), expect ('any', 'absent', or 'sha1:' + the current content's sha1, '' when
# absent), the most bytes in all, the most bytes a file. Returns {'ok', size, created, modified} or {refusal, used}.
_WRITE = _ANCESTORS + """
local path, content, now, expect = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local why = blocked(path)
if why then return {why, '0'} end
local old = redis.call('HGET', KEYS[2], path)
if expect == 'absent' and old then return {'exists', '0'} end
if string.sub(expect, 1, 5) == 'sha1:' then
  local current = ''
  if old then current = redis.sha1hex(redis.call('HGET', KEYS[1], path)) end
  if current ~= string.sub(expect, 6) then return {'changed', '0'} end
end
local size, old_size, created = string.len(content), 0, now
if old then
  local s, c = string.match(old, '^(%d+) (%d+)')
  old_size, created = tonumber(s), c
end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if size > tonumber(ARGV[6]) then return {'file_too_large', tostring(used)} end
if size > old_size and used - old_size + size > tonumber(ARGV[5]) then return {'full', tostring(used)} end
redis.call('HSET', KEYS[1], path, content)
redis.call('HSET', KEYS[2], path, size .. ' ' .. created .. ' ' .. now)
redis.call('INCRBY', KEYS[4], size - old_size)
if not old then count(path, 1) end
return {'ok', tostring(size), created, now}
"""

# ARGV: source, destination, 'any' or 'absent'. Returns {'ok', meta} or {refusal}. The file keeps its times.
_MOVE = _ANCESTORS + """
local source, dest = ARGV[1], ARGV[2]
local meta = redis.call('HGET', KEYS[2], source)
if not meta then return {'missing'} end
if source == dest then return {'ok', meta} end
local why = blocked(dest)
if why then return {why} end
local old = redis.call('HGET', KEYS[2], dest)
if old and ARGV[3] == 'absent' then return {'exists'} end
local content = redis.call('HGET', KEYS[1], source)
if old then remove(dest, old) end
remove(source, meta)
local size = string.len(content)
redis.call('HSET', KEYS[1], dest, content)
redis.call('HSET', KEYS[2], dest, meta)
redis.call('INCRBY', KEYS[4], size)
count(dest, 1)
return {'ok', meta}
"""

# ARGV: path. Returns 1 when it was there.
_DELETE = _ANCESTORS + """
local meta = redis.call('HGET', KEYS[2], ARGV[1])
if not meta then return 0 end
remove(ARGV[1], meta)
return 1
"""


class UserDataRefused(Exception):
    """A change refused; ``reason``: ``exists`` (409), ``full`` or ``file_too_large`` (413), ``directory`` or
    ``parent_is_file`` (a directory is in the way: 400), ``changed`` (not the content expected), ``missing``."""

    def __init__(self, reason: str, used: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.used = used


@dataclass(frozen=True)
class Expect:
    """What a write expects to find: anything (``overwrite``), no file, or exactly this content (None: no file),
    for a read-modify-write that must not lose a concurrent one."""

    mode: str

    @staticmethod
    def content(current: bytes | None) -> Expect:
        return Expect("sha1:" + (hashlib.sha1(current).hexdigest() if current is not None else ""))


ANY, ABSENT = Expect("any"), Expect("absent")


def _info(path: str, meta: str) -> FileInfo:
    size, created, modified = (int(part) for part in meta.split(" "))
    return FileInfo(path=path, size=size, created_ms=created, modified_ms=modified)


class UserData:
    """The userdata of every owner (None: auth is off, one shared space). Paths are checked by the caller."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, max_bytes: int, max_file_bytes: int) -> None:
        self.redis = client
        self.keys = keys
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self._write = client.register_script(_WRITE)
        self._move = client.register_script(_MOVE)
        self._delete = client.register_script(_DELETE)

    async def read(self, owner: str | None, path: str) -> bytes | None:
        key = self.keys.userdata(owner)[0]
        with map_redis_errors():  # bytes as stored (the client decodes every other reply); redis-py types it not
            content = await self.redis.execute_command("HGET", key, path, NEVER_DECODE=True)  # type: ignore[no-untyped-call]
        return content if isinstance(content, bytes) else None

    async def files(self, owner: str | None) -> list[FileInfo]:
        with map_redis_errors():
            metas = text_map(await self.redis.hgetall(self.keys.userdata(owner)[1]))
        return [_info(path, meta) for path, meta in metas.items()]

    async def used(self, owner: str | None) -> int:
        with map_redis_errors():
            return int(await self.redis.get(self.keys.userdata(owner)[3]) or 0)

    async def write(self, owner: str | None, path: str, content: bytes, *, now_ms: int,
                    expect: Expect = ANY) -> FileInfo:
        """Store ``content`` at ``path``, or raise UserDataRefused."""
        with map_redis_errors():
            answer = await self._write(keys=self.keys.userdata(owner), args=[
                path, content, now_ms, expect.mode, self.max_bytes, self.max_file_bytes])
        if answer[0] != "ok":
            raise UserDataRefused(answer[0], int(answer[1]))
        return FileInfo(path=path, size=int(answer[1]), created_ms=int(answer[2]), modified_ms=int(answer[3]))

    async def move(self, owner: str | None, source: str, dest: str, *, overwrite: bool) -> FileInfo:
        with map_redis_errors():
            answer = await self._move(keys=self.keys.userdata(owner),
                                      args=[source, dest, "any" if overwrite else "absent"])
        if answer[0] != "ok":
            raise UserDataRefused(answer[0])
        return _info(dest, answer[1])

    async def delete(self, owner: str | None, path: str) -> bool:
        with map_redis_errors():
            return bool(await self._delete(keys=self.keys.userdata(owner), args=[path]))
