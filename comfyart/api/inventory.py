"""What the backends hold, as the API shows it: each backend's inventory summary in ``/api/pool`` (counts, and what
no backend of another inventory has), and ``GET /api/models``, the fleet's model files and where each is.

``/api/models`` answers any caller: a client that may run tasks may know which models it can ask for (the
ComfyUI-compatible ``/object_info`` lists them already). Which backends hold each model, by id and state, is for
admins only, as the pool is: backend ids name hosts and ports."""
from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Query

from comfyart.api.auth import Caller
from comfyart.api.deps import Services, ServicesDep
from comfyart.errors import Forbidden
from comfyart.models import BackendState
from comfyart.policy.holdings import EMBEDDINGS, Only, fleet_models
from comfyart.policy.inventory import Inventory
from comfyart.pool.backend import Backend

router = APIRouter()
DIGEST_SHOWN = 12  # characters of an inventory's SHA-256: enough to tell the fleet's apart


def inventory_summaries(services: Services) -> dict[str, dict[str, Any]]:
    """Each backend's inventory summary, by id; worked out once per distinct inventory."""
    pool, holdings = services.pool, services.holdings
    distinct = services.inventories.distinct()
    kinds, only = holdings.kinds(distinct), holdings.exclusive(distinct)
    sharing = Counter(b.inventory.digest for b in pool.backends.values() if b.inventory is not None)
    shared: dict[str, dict[str, Any]] = {}
    summaries = {}
    for backend in pool.backends.values():
        inventory = backend.inventory
        summary: dict[str, Any] = {"read": inventory is not None, "read_ms": backend.inventory_read_ms,
                                   "error": backend.inventory_error}
        if inventory is not None:
            if inventory.digest not in shared:
                shared[inventory.digest] = _described(inventory, kinds.get(inventory.digest, {}),
                                                      only.get(inventory.digest, Only()))
            summary.update(shared[inventory.digest], shared_with=sharing[inventory.digest] - 1)
        summaries[backend.id] = summary
    return summaries


def _described(inventory: Inventory, kinds: dict[str, frozenset[str]], only: Only) -> dict[str, Any]:
    return {"listed": inventory.listed, "digest": inventory.digest[:DIGEST_SHOWN], "nodes": len(inventory.nodes),
            "models": sum(1 for folders in kinds.values() if folders != {EMBEDDINGS}),
            "embeddings": len(inventory.embeddings),
            "only_here": {"models": list(only.models.shown), "more_models": only.models.more,
                          "nodes": list(only.nodes.shown), "more_nodes": only.nodes.more}}


def described_pool(services: Services) -> dict[str, Any]:
    """``Pool.describe`` with each backend's inventory summary."""
    described = services.pool.describe()
    summaries = inventory_summaries(services)
    for backend in described["backends"]:
        backend["inventory"] = summaries.get(backend["id"], {"read": False, "read_ms": None, "error": None})
    return described


def described_backend(services: Services, backend: Backend) -> dict[str, Any]:
    return {**backend.describe(), "inventory": inventory_summaries(services)[backend.id]}


@router.get("/api/models", response_model=None)
async def list_models(services: ServicesDep, principal: Caller,
                      backend: str | None = Query(None, max_length=300, description="only what this backend lists "
                                                                                    "(admins)"),
                      q: str = Query("", max_length=300, description="only names that hold this text, any case")
                      ) -> dict[str, Any]:
    """The fleet's model files, by name: the folders each is a choice of (``ckpt_name`` → ``checkpoints``), how
    many backends list it and how many of those are healthy; for admins, which backends (id, status, mode)."""
    if backend is not None:
        if not principal.admin:
            raise Forbidden("?backend= is for admins: a client is not shown the backends")
        services.pool.get(backend)  # NotFound: no such backend
    inventories = services.inventories
    kinds = services.holdings.kinds(inventories.distinct())
    known = inventories.known()
    by_id = {b.id: b for b, _ in known}
    held = fleet_models([(b.id, inv) for b, inv in known], kinds, backend=backend, text=q)
    models = []
    for model in held:
        entry: dict[str, Any] = {"name": model.name, "kinds": sorted(model.kinds), "held_by": len(model.backends),
                                 "healthy": sum(by_id[i].state == BackendState.HEALTHY for i in model.backends)}
        if principal.admin:
            entry["backends"] = [{"id": i, "status": by_id[i].state.value, "mode": by_id[i].mode.value}
                                 for i in model.backends]
        models.append(entry)
    answer: dict[str, Any] = {"models": models, "count": len(models)}
    if principal.admin:  # backends whose models are not known: any task may go to them (unlisted), or none yet
        answer["unlisted"] = [b.id for b, inv in known if not inv.listed]
        answer["unread"] = [b.id for b in services.pool.backends.values() if b.inventory is None]
    return answer
