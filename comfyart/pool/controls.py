"""What an admin does to the pool through the API: drain, recycle, enable and disable a backend; set the scale
limits; register and deregister static backends; run a round now. Each change is made here and carried out by the
pool's loop (``reconciler``), whose round the API runs at once where the answer should show the result."""
from __future__ import annotations

from typing import Any

from comfyart.config.fleet import StaticBackendConfig
from comfyart.errors import InvalidInput, NotFound, StateConflict
from comfyart.pool.backend import AfterDrain, Backend
from comfyart.pool.health import HealthChecks
from comfyart.pool.reconciler import Reconciler
from comfyart.pool.registry import Pool
from comfyart.store.pool import PoolStore, ScaleOverride


class PoolControls:
    def __init__(self, pool: Pool, *, reconciler: Reconciler, health: HealthChecks,
                 store: PoolStore | None = None) -> None:
        self.pool = pool
        self.reconciler = reconciler
        self.health = health
        self.store = store  # where run-time changes are kept across restarts

    async def check_now(self) -> dict[str, Any]:
        """POST /api/pool/health-check: one whole round now, every backend asked."""
        await self.reconciler.step(every=True)
        return self.pool.describe()

    async def set_scale(self, changes: dict[str, int | None]) -> None:
        """POST /api/pool/scale: set ``min_containers``, ``max_containers`` or ``target`` at run time (None: back
        to the configured value; a field not given keeps its current override). Kept in Redis."""
        merged = ScaleOverride(**{**vars(self.pool.override), **changes})
        wanted = self.pool.limits(merged)
        low, high = wanted.min_containers, wanted.max_containers
        if low > high:
            raise InvalidInput(f"min_containers ({low}) exceeds max_containers ({high})")
        if merged.target is not None and not low <= merged.target <= high:
            raise InvalidInput(f"target {merged.target} is outside min_containers..max_containers ({low}..{high})")
        if self.store is not None:
            await self.store.set_scale_override(merged)
        self.pool.override = merged
        self.reconciler.reset_cooldowns()
        await self.reconciler.step()

    # ------------------------------------------------------------------ one backend
    def drain(self, backend_id: str) -> Backend:
        backend = self.pool.get(backend_id)
        backend.drain(AfterDrain.STOP if backend.managed else AfterDrain.HOLD, "drained through the API")
        return backend

    def recycle(self, backend_id: str) -> Backend:
        backend = self.pool.get(backend_id)
        if not backend.managed:
            raise StateConflict(f"{backend_id} is a static backend: comfyart cannot restart it (drain or disable it)")
        backend.drain(AfterDrain.RECYCLE, "recycled through the API")
        return backend

    def enable(self, backend_id: str) -> Backend:
        backend = self.pool.get(backend_id)
        if backend.after_drain == AfterDrain.REMOVE:
            raise StateConflict(f"{backend_id} is being removed; register it again once it is gone")
        backend.activate()
        self.pool.notify()
        return backend

    def disable(self, backend_id: str) -> Backend:
        backend = self.pool.get(backend_id)
        backend.disable()
        return backend

    async def act(self, backend_id: str, action: str) -> Backend:
        """``drain``, ``recycle``, ``enable`` or ``disable`` one backend, then a round (a drained idle backend goes
        at once). An unknown action is NotFound."""
        actions = {"drain": self.drain, "recycle": self.recycle, "enable": self.enable, "disable": self.disable}
        if action not in actions:
            raise NotFound(f"no action {action!r}: drain, recycle, enable or disable")
        backend = actions[action](backend_id)
        await self.reconciler.step()
        return backend

    # ------------------------------------------------------------------ static backends
    async def register_static(self, static: StaticBackendConfig) -> tuple[Backend, bool]:
        """POST /api/pool/backends: a ComfyUI that announces itself. The same name and URL again is a no-op
        (announcing at every boot is fine; new tags and weight apply); another URL under a taken name is
        refused."""
        name, url = static.name, static.url
        backend = self.pool.backends.get(f"static:{name}")
        if backend is not None:
            if backend.url != url:
                raise StateConflict(f"backend {name} is registered with {backend.url}; DELETE it first")
            if backend.after_drain == AfterDrain.REMOVE:
                raise StateConflict(f"backend {name} is being removed; register it again once it is gone")
            if backend.source == "api" and (backend.tags, backend.weight) != (frozenset(static.tags), static.weight):
                if self.store is not None:
                    await self.store.add_static(static)
                backend.tags, backend.weight = frozenset(static.tags), static.weight
                self.pool.bump_generation()
            return backend, False
        if self.store is not None:
            await self.store.add_static(static)
        backend = self.pool.add_static(static, "api")
        await self.health.probe(backend)
        return backend, True

    async def deregister_static(self, name: str) -> Backend:
        """DELETE /api/pool/backends/{name}: no new work, then forgotten once its prompts are done."""
        backend = self.pool.get(f"static:{name}")
        if backend.source != "api":
            raise StateConflict(f"backend {name} comes from the configuration file; remove it there, or disable it")
        if self.store is not None:
            await self.store.remove_static(name)
        backend.drain(AfterDrain.REMOVE, "deregistered through the API")
        await self.reconciler.finish_drains()
        return backend
