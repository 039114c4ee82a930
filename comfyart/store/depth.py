"""The unfinished tasks by the tags they require (issue 25): what ``comfyart_queue_depth_by_tags`` exports, so that
an autoscaler outside comfyart (KEDA, an HPA) can scale a group of backends that carries some tags by the tasks
that need them.

One Lua script counts, by (tags, state): the head of the queue (``scan`` entries at most; the rest are reported as
not scanned, as the priority breakdown does) and the claims as ``queued``, the active set as ``submitted`` or
``running`` (the states of ``comfyart_queue_depth``). A task's tags are those of its ``needs`` (worked out at
submission: its own with its workflow's) when it has them, else its own ``requires``: a workflow run queued before any
backend listed its inventory shows only its own. Both are stored as JSON lists, sorted; the script reads the list
out of the JSON text with a pattern rather than decoding the whole ``needs`` document (node classes and combo values:
a few kilobytes each, for up to ``scan`` tasks). A tag never holds a quote or a bracket (``config.fleet.TAG_PATTERN``),
and a quote inside a JSON string is escaped, so ``"tags":[`` matches only the key.
"""
from __future__ import annotations

from dataclasses import dataclass

from comfyart.models import TaskStatus
from comfyart.store.queue import TaskQueue
from comfyart.store.redis import map_redis_errors, text

NO_TAGS = "-"  # the label of tasks that require no tag (a tag starts with a letter or a digit: no tag is "-")

# KEYS: queue, claims, active, running   ARGV: task key prefix, most queue entries to read, the label of no tags
# returns tags, state, count, ..., then the queued entries not read
_BY_TAGS = """
local function tags_of(task_key)
  local fields = redis.call('HMGET', task_key, 'needs', 'requires')
  local list = nil
  if fields[1] then list = string.match(fields[1], '"tags":%[(.-)%]') end
  if not list and fields[2] then list = string.match(fields[2], '^%[(.-)%]') end
  if not list or list == '' then return ARGV[3] end
  return (string.gsub(list, '"', ''))
end
local counts, order = {}, {}
local function count(id, state)
  local key = tags_of(ARGV[1] .. id) .. '\\n' .. state
  if not counts[key] then counts[key] = 0; order[#order + 1] = key end
  counts[key] = counts[key] + 1
end
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do count(id, 'queued') end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do count(id, 'queued') end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('ZSCORE', KEYS[4], id) then count(id, 'running') else count(id, 'submitted') end
end
local flat = {}
for _, key in ipairs(order) do
  local cut = string.find(key, '\\n', 1, true)
  flat[#flat + 1] = string.sub(key, 1, cut - 1)
  flat[#flat + 1] = string.sub(key, cut + 1)
  flat[#flat + 1] = counts[key]
end
flat[#flat + 1] = math.max(0, redis.call('ZCARD', KEYS[1]) - #ids)
return flat
"""


@dataclass(frozen=True)
class DepthByTags:
    """Unfinished tasks by (tags joined by commas, or ``NO_TAGS``; state: queued, submitted, running), and the
    queued tasks beyond the scan, whose tags were not read."""

    counts: dict[tuple[str, str], int]
    beyond_scan: int


class TagDepth:
    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue
        self._by_tags = queue.redis.register_script(_BY_TAGS)

    async def read(self, scan: int) -> DepthByTags:
        keys = self.queue.keys
        with map_redis_errors():
            flat = await self._by_tags(keys=[keys.queue, keys.claims, keys.active, keys.in_status(TaskStatus.RUNNING)],
                                       args=[keys.task_prefix, scan, NO_TAGS])
        counts = {(text(flat[i]), text(flat[i + 1])): int(flat[i + 2]) for i in range(0, len(flat) - 1, 3)}
        return DepthByTags(counts, int(flat[-1]))

