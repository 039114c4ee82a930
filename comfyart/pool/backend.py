"""One ComfyUI backend as the pool knows it: where it is, its health and mode, its load, what it reported.

Its health state changes through ``move_to``, which follows ``models.BACKEND_TRANSITIONS`` as task states follow
theirs; its mode (active, disabled, draining) through ``drain``, ``activate`` and ``disable``.
"""
from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from comfyart.clock import now_ms
from comfyart.comfy.client import ComfyClient
from comfyart.comfy.websocket import BackendSocket
from comfyart.errors import InvalidTransition
from comfyart.models import BackendMode, BackendState, backend_may_move
from comfyart.policy.health import HealthCount
from comfyart.policy.inventory import Inventory
from comfyart.policy.scheduling import BackendSlot
from comfyart.pool.providers.base import Provider, Spawned
from comfyart.redact import redact_url


class AfterDrain(enum.StrEnum):
    """What happens to a draining backend once it holds no prompt."""

    SCALE_DOWN = "scale-down"  # the autoscaler's: stopped, unless the load comes back first
    STOP = "stop"  # drained by hand: stopped
    RECYCLE = "recycle"  # stopped and replaced
    REMOVE = "remove"  # a static backend deregistered through the API: forgotten
    HOLD = "hold"  # a static backend drained by hand: stays, taking nothing, until enabled


@dataclass
class Backend:
    id: str
    kind: str  # "docker", "process" or "static"
    host: str
    url: str
    client: ComfyClient
    port: int | None = None
    gpu: int | None = None
    name: str = ""
    state: BackendState = BackendState.STARTING
    mode: BackendMode = BackendMode.ACTIVE
    after_drain: AfterDrain | None = None
    drain_reason: str | None = None
    source: str = "config"  # static backends: "config" or "api"
    spawned: Spawned | None = None
    provider: Provider | None = None
    prompts: dict[str, str] = field(default_factory=dict)  # prompt id -> task id in flight (the PromptBook's)
    prompt_costs: dict[str, float] = field(default_factory=dict)  # prompt id -> its graph's estimated cost
    tasks_done: int = 0
    health: HealthCount = field(default_factory=lambda: HealthCount(False))
    unhealthy_since: float | None = None  # monotonic
    idle_since: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    stuck_prompt: str | None = None  # a prompt that timed out here and may still occupy the backend
    answered: float = field(default_factory=time.monotonic)  # monotonic: its last good health check (or creation)
    socket: BackendSocket | None = None  # the tracker's latest WebSocket to it: its ``heard`` is a sign of life too
    given_up: set[str] = field(default_factory=set)  # prompts requeued elsewhere while it was out of reach, which
    # it may still hold: taken off it (``pool.unreachable``) before it gets new work
    task_limit: int = 0  # max_tasks for a container: it takes no more than that many, then it is recycled
    last_health_ms: int | None = None
    vram_total: int | None = None
    vram_free: int | None = None
    ram_free: int | None = None
    tags: frozenset[str] = frozenset()
    weight: float = 1.0
    models: frozenset[str] = frozenset()  # of the last prompt given to it: what it has loaded once that runs
    inventory: Inventory | None = None  # its node classes and models, as it last listed them (``pool.inventory``)
    inventory_read_ms: int | None = None  # when it last listed them
    inventory_error: str | None = None  # why its last read failed (None: it answered)
    last_dispatch: int = 0  # the dispatcher's sequence number of that prompt
    error: str | None = None
    created_ms: int = field(default_factory=now_ms)
    # called when its state, mode or VRAM size changes: the pool it is in bumps its generation
    on_change: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    # called with its id when one of its prompts leaves the book: the pool looks at it again for a free slot
    on_room: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def room_made(self) -> None:
        if self.on_room is not None:
            self.on_room(self.id)

    @property
    def managed(self) -> bool:
        return self.kind != "static"

    @property
    def accepting(self) -> bool:
        if self.task_limit and self.tasks_done + len(self.prompts) >= self.task_limit:
            return False
        return self.mode == BackendMode.ACTIVE

    # ------------------------------------------------------------------ changes
    def move_to(self, state: BackendState) -> None:
        """Change the health state as the transition table allows; InvalidTransition otherwise."""
        if not backend_may_move(self.state, state):
            raise InvalidTransition(f"backend {self.id} is {self.state.value}; cannot become {state.value}")
        if state != self.state:
            self.state = state
            self._changed()

    def drain(self, after: AfterDrain, reason: str) -> None:
        """No new prompts; once idle, ``after`` happens to it (the pool's reconciler sees to it)."""
        if self.mode != BackendMode.DRAINING:
            logger.info("draining backend={} then={} reason={}", self.id, after.value, reason)
        self._set_mode(BackendMode.DRAINING)
        self.after_drain, self.drain_reason = after, reason

    def activate(self) -> None:
        """Take new prompts again (a drain is called off)."""
        self._set_mode(BackendMode.ACTIVE)
        self.after_drain, self.drain_reason = None, None

    def disable(self) -> None:
        self._set_mode(BackendMode.DISABLED)
        self.after_drain, self.drain_reason = None, "disabled"

    def _set_mode(self, mode: BackendMode) -> None:
        if mode != self.mode:
            self.mode = mode
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def record_stats(self, stats: dict[str, Any]) -> None:
        """What a /system_stats answer says of its memory."""
        self.last_health_ms = now_ms()
        system = stats.get("system")
        if isinstance(system, dict) and isinstance(system.get("ram_free"), int):
            self.ram_free = system["ram_free"]
        devices = stats.get("devices") or []
        if devices and isinstance(devices[0], dict):
            vram_total = devices[0].get("vram_total")
            self.vram_free = devices[0].get("vram_free")
            if vram_total != self.vram_total:  # what it can run changed (vram_free changes all the time)
                self.vram_total = vram_total
                self._changed()

    # ------------------------------------------------------------------ views
    def slot(self) -> BackendSlot:
        return BackendSlot(self.id, len(self.prompts), self.state == BackendState.HEALTHY, self.accepting,
                           self.tags, self.weight, self.vram_total, self.vram_free, self.models, self.last_dispatch,
                           work=sum(self.prompt_costs.values()), inventory=self.inventory)

    def idle_s(self, now: float) -> float:
        return 0.0 if self.prompts else max(0.0, now - self.idle_since)

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"id": self.id, "kind": self.kind, "name": self.name, "host": self.host, "url": redact_url(self.url),
                "port": self.port, "gpu": self.gpu, "status": self.state.value, "mode": self.mode.value,
                "after_drain": self.after_drain.value if self.after_drain else None,
                "drain_reason": self.drain_reason,
                "source": self.source if self.kind == "static" else None, "inflight": len(self.prompts),
                "tasks": sorted(set(self.prompts.values())),
                "tasks_done": self.tasks_done, "idle_s": round(self.idle_s(now), 1),
                "age_s": round(now - self.started, 1), "last_health_check_ms": self.last_health_ms,
                "health_failures": self.health.failures, "vram_total": self.vram_total,
                "vram_free": self.vram_free, "ram_free": self.ram_free, "tags": sorted(self.tags),
                "weight": self.weight, "models": sorted(self.models), "error": self.error,
                "created_ms": self.created_ms}
