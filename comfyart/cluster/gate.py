"""The leader gate (issue 24): what the API of a replicated daemon asks before a request that drives the leader's
own objects (the pool's controls, the scheduler's settings, an interrupt of a running prompt): whether this replica
leads, and where the leader is when it does not (``api.forward`` then sends the request there).

On the leader such a request runs under the current term's fence (``enter_term``): a write it makes through a fenced
script is refused once another replica leads. One process (not replicated) has no gate: everything runs here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from comfyart.errors import TransientError
from comfyart.store.fence import FENCE, Fence
from comfyart.store.replicas import ReplicaStore
from comfyart.store.stores import Stores


@dataclass(frozen=True)
class LeaderAddress:
    name: str
    url: str


class LeaderGate:
    def __init__(self, replicas: ReplicaStore, *, name: str, epoch: Callable[[], int | None],
                 events_connected: Callable[[], bool] = lambda: True) -> None:
        self.replicas = replicas
        self.name = name  # this replica's
        self.epoch = epoch  # the epoch of the term this replica leads now; None: it does not lead
        self.events_connected = events_connected  # the event bridge follows the stream (``/readyz``)

    def leading(self) -> bool:
        return self.epoch() is not None

    def enter_term(self) -> bool:
        """Set the current term's fence in the caller's context (an API request's task); whether this replica
        leads."""
        epoch = self.epoch()
        if epoch is None:
            return False
        FENCE.set(Fence(epoch))
        return True

    async def leader(self) -> LeaderAddress | None:
        """The replica the lease names and its URL from the registry; None when none leads, its record is gone,
        or Redis does not answer."""
        try:
            lease = await self.replicas.leader()
            if lease is None or lease.name == self.name:
                return None
            record = next((r for r in await self.replicas.live() if r.name == lease.name), None)
        except TransientError:
            return None
        return None if record is None or not record.url else LeaderAddress(record.name, record.url)


def build(stores: Stores, name: str, *, epoch: Callable[[], int | None],
          events_connected: Callable[[], bool]) -> LeaderGate | None:
    """The gate of a replicated daemon (``stores.replicated``); None in one process (no one to forward to)."""
    if not stores.replicated:
        return None
    return LeaderGate(ReplicaStore(stores.client, stores.keys), name=name, epoch=epoch,
                      events_connected=events_connected)
