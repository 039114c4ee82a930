"""The pool's backends and what every loop reads of them: the backends by id, their slots for the scheduler, the
hosts' room for more containers, the scale limits in force, and the events that wake whoever waits for a change.
The pool's loop (``reconciler``) and the admin's controls (``controls``) change it; the dispatcher, the tracker and
the API read it."""
from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from comfyart.clock import now_ms
from comfyart.comfy.client import ComfyClient
from comfyart.config.fleet import PoolConfig, StaticBackendConfig
from comfyart.errors import NotFound
from comfyart.models import BackendState
from comfyart.policy.autoscale import ScaleDecision, ScaleLimits, free_container_slots
from comfyart.policy.inventory import Inventory
from comfyart.policy.needs import Needs
from comfyart.policy.placement import HostView, Runner
from comfyart.policy.scheduling import BackendSlot, PoolView, could_run
from comfyart.pool.backend import Backend
from comfyart.pool.providers.base import Provider
from comfyart.store.pool import ScaleOverride

if TYPE_CHECKING:
    from comfyart.pool.mirrored import Mirrored

RECENT = 20  # errors and scaling decisions kept for /api/pool
COULD_RUN_KEPT = 1024  # distinct needs whose answer ``could_run`` keeps in one generation


Connect = Callable[[str], ComfyClient]  # a client of the backend at this URL


class BackendTable(dict[str, Backend]):
    """The pool's backends by id. Whatever adds, replaces or removes one calls ``on_change`` (the pool's
    generation goes up), and a backend put in is told to call it when its state, mode or VRAM size changes."""

    def __init__(self, on_change: Callable[[], None], on_room: Callable[[str], None]) -> None:
        super().__init__()
        self.on_change = on_change
        self.on_room = on_room

    def __setitem__(self, backend_id: str, backend: Backend) -> None:
        backend.on_change, backend.on_room = self.on_change, self.on_room
        super().__setitem__(backend_id, backend)
        self.on_change()

    def __delitem__(self, backend_id: str) -> None:
        super().__delitem__(backend_id)
        self.on_change()

    def pop(self, backend_id: str, *default: Any) -> Any:
        had = backend_id in self
        backend = super().pop(backend_id, *default)
        if had:
            self.on_change()
        return backend

    def clear(self) -> None:
        super().clear()
        self.on_change()


class Pool:
    def __init__(self, *, config: PoolConfig, providers: Sequence[Provider], connect: Connect) -> None:
        self.config = config
        self.providers = list(providers)
        self.connect = connect
        # goes up whenever a backend joins or leaves, or one's state, mode, tags, VRAM size or what it can run
        # changes (``bump_generation``): what is worked out from those is kept until it does
        self.generation = 0
        self.backends: dict[str, Backend] = BackendTable(self.bump_generation, self.room_made)
        # the backends that may have a free slot, in pool order: a full one leaves until one of its prompts ends
        # (``room_made``), and all come back when the generation (or the slot count) changes; a dispatch round
        # then looks at a handful of backends, not at 1,000
        self._roomy: set[str] = set()
        self._rank: dict[str, int] = {}
        self._roomy_key: tuple[int, int] = (-1, 0)
        self._could_run: dict[Needs, frozenset[str]] = {}
        self._could_run_generation = -1
        self.recent_errors: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.recent_scaling: deque[dict[str, Any]] = deque(maxlen=RECENT)  # decisions that started or drained
        self.hosts_down: dict[str, str] = {}
        self.ready = asyncio.Event()  # set once leftovers are handled and static backends listed
        self.override = ScaleOverride()  # scale limits set at run time
        self.last_decision: ScaleDecision | None = None
        self.last_decision_ms: int | None = None
        self.replacements = 0  # containers recycled or lost that are owed a successor whatever the cooldown
        # (provider kind, host) -> the inventory its containers last reported, kept when they stop: placement
        # sends a container where the blocked tasks can run, and the fleet still has what a stopped host has
        self.host_inventories: dict[tuple[str, str], Inventory] = {}
        # the needs of the queued tasks no backend that takes work could run, with how many tasks have each: the
        # dispatcher's (``note_blocked``), for the autoscaler and placement
        self.blocked_needs: dict[Needs, int] = {}
        # since this process started: containers started, lost (died, host down, unhealthy too long), recycled
        # (max_tasks, max_age, by hand), stopped (scaled down or drained by hand)
        self.counters = {"started": 0, "lost": 0, "recycled": 0, "stopped": 0}
        self._changed = asyncio.Event()  # set, and replaced, at each change
        self.wakeups: list[asyncio.Event] = []  # set on every change too, for loops that wait on several things
        # a standby replica's: the leader's pool as last published (``pool.mirrored``); its descriptions answer
        # for this pool's. None on the leader, and in one process
        self.mirrored: Mirrored | None = None

    # ------------------------------------------------------------------ views
    def slots(self) -> list[BackendSlot]:
        return [b.slot() for b in self.backends.values()]

    def open_slots(self, limit: int) -> list[BackendSlot]:
        """The slots of the healthy, accepting backends that hold fewer than ``limit`` prompts, in pool order: the
        only ones a dispatch round can give a prompt to."""
        if self._roomy_key != (self.generation, limit):
            self._roomy_key = (self.generation, limit)
            self._rank = {backend_id: rank for rank, backend_id in enumerate(self.backends)}
            self._roomy = set(self.backends)
        slots = []
        for backend_id in sorted(self._roomy, key=self._rank.__getitem__):
            backend = self.backends.get(backend_id)
            if backend is not None and len(backend.prompts) < limit and backend.state == BackendState.HEALTHY \
                    and backend.accepting:
                slots.append(backend.slot())
            else:  # full, or not usable: back when a prompt of its ends, or the generation changes
                self._roomy.discard(backend_id)
        return slots

    def room_made(self, backend_id: str) -> None:
        """A prompt of ``backend_id`` left the book: it may have a free slot again."""
        if backend_id in self._rank:
            self._roomy.add(backend_id)

    def usable(self, backend_id: str) -> bool:
        """Whether the backend is in the pool, healthy and accepting prompts."""
        backend = self.backends.get(backend_id)
        return backend is not None and backend.state == BackendState.HEALTHY and backend.accepting

    def could_run(self, needs: Needs) -> frozenset[str]:
        """The ids of the backends that could ever run a task with ``needs``, whatever their state and load
        (``policy.scheduling.could_run``): kept until the generation changes."""
        if self._could_run_generation != self.generation or len(self._could_run) >= COULD_RUN_KEPT:
            self._could_run.clear()
            self._could_run_generation = self.generation
        ids = self._could_run.get(needs)
        if ids is None:
            ids = self._could_run[needs] = frozenset(could_run(needs, self.slots()))
        return ids

    def view(self) -> PoolView:
        """What the scheduler may ask of the whole pool while it places prompts on the backends with a free slot."""
        return PoolView(self.could_run, self.usable)

    def healthy(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.state == BackendState.HEALTHY]

    def get(self, backend_id: str) -> Backend:
        backend = self.backends.get(backend_id)
        if backend is None:
            raise NotFound(f"no backend {backend_id}")
        return backend

    def host_views(self, provider: Provider) -> list[HostView]:
        views = []
        for host in provider.hosts:
            mine = [b for b in self.backends.values() if b.kind == provider.kind and b.host == host.name]
            views.append(HostView(host.name, host.ports, host.gpus, frozenset(b.port for b in mine if b.port),
                                  frozenset(b.gpu for b in mine if b.gpu is not None), len(mine),
                                  available=host.name not in self.hosts_down, tags=host.tags,
                                  inventory=self.host_inventories.get((provider.kind, host.name))))
        return views

    def runner(self, backend: Backend) -> Runner:
        """``backend`` as placement judges blocked tasks: its inventory, or its host's until it lists its own."""
        inventory = backend.inventory
        if inventory is None and backend.managed:
            inventory = self.host_inventories.get((backend.kind, backend.host))
        return Runner(backend.tags, inventory)

    def limits(self, override: ScaleOverride | None = None) -> ScaleLimits:
        """The configuration with the run-time overrides (``self.override`` unless another is given) on top."""
        cfg, override = self.config, override or self.override
        return ScaleLimits(
            min_containers=cfg.min_containers if override.min_containers is None else override.min_containers,
            max_containers=cfg.max_containers if override.max_containers is None else override.max_containers,
            tasks_per_container=cfg.tasks_per_container, scale_up_cooldown_s=cfg.scale_up_cooldown_s,
            scale_down_cooldown_s=cfg.scale_down_cooldown_s, idle_timeout_s=cfg.idle_timeout_s,
            target=override.target)

    # ------------------------------------------------------------------ changes
    def bump_generation(self) -> None:
        """A backend joined or left, or what one could run (its tags, VRAM size, inventory) or whether it is
        usable (its state, mode) changed: answers kept from before are worked out again."""
        self.generation += 1

    def reset(self) -> None:
        """Forget every backend and what was learnt of them (not the counters and recent history of /api/pool): a
        leader's term starts or ended, and the reconciler's ``start`` reads them again."""
        self.ready.clear()
        self.mirrored = None
        self.backends.clear()
        self._roomy, self._rank, self._roomy_key = set(), {}, (-1, 0)
        self._could_run.clear()
        self.hosts_down.clear()
        self.host_inventories.clear()
        self.blocked_needs = {}
        self.override = ScaleOverride()
        self.last_decision, self.last_decision_ms = None, None
        self.replacements = 0
        self.notify()

    def add_static(self, static: StaticBackendConfig, source: str) -> Backend:
        """A backend someone else runs, from the configuration or registered through the API (``source``)."""
        backend = Backend(f"static:{static.name}", "static", "static", static.url, self.connect(static.url),
                          name=static.name, state=BackendState.UNHEALTHY,  # healthy once it answers a probe
                          source=source, tags=frozenset(static.tags), weight=static.weight)
        self.backends[backend.id] = backend
        return backend

    def learn_inventory(self, backend: Backend, inventory: Inventory) -> None:
        """``backend`` listed ``inventory``: what its host's containers have (``pool.inventory`` calls this)."""
        key = (backend.kind, backend.host)
        if backend.managed and self.host_inventories.get(key) is not inventory:
            self.host_inventories[key] = inventory
            self.bump_generation()

    def note_blocked(self, needs: dict[Needs, int]) -> None:
        """The dispatcher's view of the blocked tasks' needs; a change wakes the autoscaler."""
        if needs.keys() != self.blocked_needs.keys():
            self.blocked_needs = needs
            self.notify()
        else:
            self.blocked_needs = needs

    def record_error(self, backend: Backend, reason: str) -> None:
        backend.move_to(BackendState.ERROR)
        backend.error = reason
        self.recent_errors.append({"id": backend.id, "host": backend.host, "error": reason, "at_ms": now_ms()})

    def notify(self) -> None:
        """Wake whoever waits for the pool to change (a free slot, a new backend). No lock: this runs once per
        finished prompt, and waiters queueing on a lock each cost a lap of the event loop."""
        for event in self.wakeups:
            event.set()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout_s: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await changed.wait()

    # ------------------------------------------------------------------ description
    def describe_decision(self) -> dict[str, Any] | None:
        """The autoscaler's last decision and why (None before its first); on a standby, the leader's."""
        if self.mirrored is not None:
            return self.mirrored.decision
        decision = self.last_decision
        return None if decision is None else {
            "desired": decision.desired, "start": decision.start, "drain": list(decision.drain),
            "undrain": list(decision.undrain), "reason": decision.reason,
            "limited_by": list(decision.limited_by), "at_ms": self.last_decision_ms}

    def describe(self) -> dict[str, Any]:
        if self.mirrored is not None:  # a standby: the leader's pool, as it last published it
            return self.mirrored.describe()
        hosts = []
        for provider in self.providers:
            for host, view in zip(provider.hosts, self.host_views(provider), strict=True):
                hosts.append({"name": host.name, "kind": provider.kind, "address": host.address,
                              "ports": list(host.ports), "gpus": list(host.gpus), "containers": view.containers,
                              "free_slots": free_container_slots([view]), "down": self.hosts_down.get(host.name)})
        limits = self.limits()
        return {"hosts": hosts, "backends": [b.describe() for b in self.backends.values()],
                "recent_errors": list(self.recent_errors), "recent_scaling": list(self.recent_scaling),
                "counters": dict(self.counters), "autoscaler": self.describe_decision(),
                "config": {"min_containers": limits.min_containers, "max_containers": limits.max_containers,
                           "target": limits.target,
                           "tasks_per_container": limits.tasks_per_container,
                           "idle_timeout_s": limits.idle_timeout_s,
                           "overridden": {k: v for k, v in vars(self.override).items() if v is not None}}}
