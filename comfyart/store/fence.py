"""The fence: a leader's writes land only while its epoch is the current one.

Leadership (``store.lease``) raises the fencing epoch ``P:leader:epoch`` at every election. The leader's term sets
``FENCE`` once, in the context its loops' tasks are created in, so every task they start inherits it; an API
request's task never has one (a user's write goes through on any replica, leader or not). Every script a leader's
loop runs checks the caller's epoch against ``P:leader:epoch`` before it writes anything: a leader that was paused
(GC, SIGSTOP, a frozen VM) and wakes up after losing the lease is refused, and nothing it sends lands.

The convention every fenced script follows: ``KEYS[1]`` is the epoch key (``Keys.leader_epoch``), ``ARGV[1]`` the
caller's epoch (``fence_arg()``; ``''``: a user's write, not fenced). A script checked as a whole starts with
``FENCED_CALL``; a batched one (``store.tasks``' transitions, whose items come from several callers) carries an
epoch per item and asks ``fenced(epoch)`` for each. A refusal is an error reply starting ``COMFYART_FENCED``, which
``store.redis.map_redis_errors`` turns into ``errors.Fenced``, setting the context's ``Fence.tripped`` on the way.
The check costs one GET inside a script that runs anyway: no extra round trip.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from comfyart.errors import Fenced

FENCED_ERROR = "COMFYART_FENCED"  # the error replies of a refused write start with this


@dataclass
class Fence:
    """The epoch of a leader's term, and whether one of its writes was refused (then the term is over, whatever
    the lease says: the loops stop and the replica steps down)."""

    epoch: int
    tripped: asyncio.Event = field(default_factory=asyncio.Event)


# Set by the leader's term for every task its loops create; None in an API request (a user's write).
FENCE: ContextVar[Fence | None] = ContextVar("comfyart_fence", default=None)


def fence_arg() -> str:
    """The current context's epoch as a fenced script takes it (``ARGV[1]``), or ``''`` where no fence is set."""
    fence = FENCE.get()
    return "" if fence is None else str(fence.epoch)


def refused(message: str) -> Fenced:
    """The ``Fenced`` a refused write raises; trips the current context's fence first."""
    fence = FENCE.get()
    if fence is not None:
        fence.tripped.set()
    detail = message.removeprefix(FENCED_ERROR).strip()
    return Fenced(f"this replica no longer leads: {detail}" if detail else "this replica no longer leads")


def ensure_leading(valid: Callable[[], bool] | None, what: str) -> None:
    """Right before a write Redis cannot fence (a POST /prompt, a provider's spawn or remove, a backend socket
    under the shared client id): raises ``Fenced``, tripping the fence, when ``valid`` (the leadership's: the term
    and its local deadline) says this replica's term is over, or when the caller's own term is (its fence tripped:
    a task of an earlier term while this replica leads again). None: nothing to check (no leadership given)."""
    fence = FENCE.get()
    if valid is not None and (not valid() or fence is not None and fence.tripped.is_set()):
        raise refused(f"its term is over: {what} not done")


# fenced(epoch): nil when the write may go ahead (no epoch given, or the current one), else the refusal's message.
# The epoch key is read once per script run, however many items ask.
FENCED_LUA = """
local fence_now
local function fenced(epoch)
  if epoch == '' then return nil end
  if fence_now == nil then fence_now = redis.call('GET', KEYS[1]) or '' end
  if fence_now == epoch then return nil end
  local now = fence_now
  if now == '' then now = 'none' end
  return 'COMFYART_FENCED epoch ' .. epoch .. ' is over (the epoch is now ' .. now .. ')'
end
"""

# The start of a script fenced as a whole: refused before it reads or writes anything else.
FENCED_CALL = FENCED_LUA + """
local fence_refusal = fenced(ARGV[1])
if fence_refusal then return redis.error_reply(fence_refusal) end
"""
