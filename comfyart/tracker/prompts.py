"""The in-flight book: every prompt comfyart holds on a backend, or is about to submit to one.

The dispatcher opens an entry before POST /prompt; whoever ends the attempt (the tracker, the dispatcher when a
submission fails, the loss of the backend) closes it. Each backend's own list of prompts (``Backend.prompts``,
which the pool and the scheduler read for its load) is written here and nowhere else.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from comfyart.models import Relay

if TYPE_CHECKING:  # only named here: what the book does to a backend needs none of the pool's code
    from comfyart.pool.backend import Backend


@dataclass(frozen=True)
class Preview:
    """A backend's preview frame (ComfyUI's binary type 1 or 4, as it came) and the node that ran when it came."""

    node: str | None
    payload: bytes


@dataclass
class PromptState:
    task_id: str
    total_nodes: int
    backend: Backend
    submitted: bool = False  # the backend confirmed (or /queue showed) it; before that a lookup proves nothing
    since: float = field(default_factory=time.monotonic)  # submission, for task_timeout
    last_seen: float = field(default_factory=time.monotonic)  # last event or lookup, for the watchdog
    cached: int = 0
    finished: set[str] = field(default_factory=set)
    node: str | None = None
    settling: bool = False
    download_failures: int = 0
    # what the socket showed: when it saw the whole run (start, no output node cached, success, on one connection),
    # the outputs of its ``executed`` events are the history's outputs and /history need not be asked
    epoch: int = -1  # the backend's socket connection that carried execution_start
    cache_known: bool = False
    cached_nodes: frozenset[str] = frozenset()
    output_nodes: frozenset[str] | None = None  # its graph's output nodes, by its backend's inventory; None: unknown
    succeeded: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    unsaved: dict[str, Any] = field(default_factory=dict)  # progress fields the next flush writes
    started: bool = False  # recorded as running (its execution_start, or /queue showed it running)
    interrupt_by: float | None = None  # interrupted at a client's request: canceled once the backend says so,
    # or at this monotonic time at the latest
    relay: Relay | None = None  # queued through the ComfyUI-compatible API: its frames go to its client
    messages: list[list[Any]] = field(default_factory=list)  # its execution_* messages, for that client
    preview: Preview | None = None  # the latest preview the backend sent of it (as sent: read by who shows it)


class PromptBook:
    """Prompt id -> its state, and each backend's prompts. ``on_change`` runs whenever a slot frees up (the
    pool wakes the loops that wait for one)."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._prompts: dict[str, PromptState] = {}
        self.on_change = on_change

    def open(self, backend: Backend, prompt_id: str, task_id: str, graph: Mapping[str, Any], *, cost: float = 0.0,
             relay: Relay | None = None) -> PromptState:
        """Take a slot on ``backend`` for a prompt about to be submitted (``cost``: its graph's estimate)."""
        inventory = backend.inventory
        state = PromptState(task_id, total_nodes=len(graph), backend=backend, relay=relay,
                            output_nodes=inventory.output_nodes(graph) if inventory is not None else None)
        self._prompts[prompt_id] = state
        backend.prompts[prompt_id] = task_id
        if cost:
            backend.prompt_costs[prompt_id] = cost
        return state

    def get(self, prompt_id: str) -> PromptState | None:
        return self._prompts.get(prompt_id)

    def latest_preview(self, task_id: str, prompt_id: str | None) -> Preview | None:
        """The latest preview of ``task_id``'s attempt ``prompt_id``, while that attempt is in flight."""
        state = self._prompts.get(prompt_id or "")
        return state.preview if state is not None and state.task_id == task_id else None

    def holds(self, prompt_id: str, state: PromptState) -> bool:
        """Whether ``state`` is still the entry of ``prompt_id`` (not closed meanwhile: canceled, settled)."""
        return self._prompts.get(prompt_id) is state

    def items(self) -> list[tuple[str, PromptState]]:
        """Every entry, as a list: the caller may close entries while it goes through them."""
        return list(self._prompts.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._prompts)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._prompts

    def __len__(self) -> int:
        return len(self._prompts)

    def close(self, backend: Backend, prompt_id: str, *, done: bool) -> None:
        """The attempt ended: its slot on ``backend`` is free; ``done`` counts it as a task the backend served
        (for recycling after ``max_tasks``)."""
        self._prompts.pop(prompt_id, None)
        backend.prompt_costs.pop(prompt_id, None)
        if backend.prompts.pop(prompt_id, None) is not None and done:
            backend.tasks_done += 1
        backend.room_made()
        if not backend.prompts:
            backend.idle_since = time.monotonic()
        self.on_change()

    def of_backend(self, backend: Backend) -> list[tuple[str, PromptState]]:
        """The entries of ``backend``'s prompts, as a list: the caller may close them while it goes through them."""
        return [(prompt_id, state) for prompt_id in list(backend.prompts)
                if (state := self._prompts.get(prompt_id)) is not None]

    def clear(self) -> None:
        """Forget every entry (a leader's term starts or ended: the next term's recovery reads what is in flight
        from Redis again)."""
        for prompt_id, state in list(self._prompts.items()):
            state.backend.prompts.pop(prompt_id, None)
            state.backend.prompt_costs.pop(prompt_id, None)
        self._prompts.clear()
        self.on_change()

    def drop(self, backend: Backend, prompt_id: str) -> None:
        """A lost backend's attempt ended: its entry leaves the book, and counts as no task served."""
        self._prompts.pop(prompt_id, None)
        backend.prompts.pop(prompt_id, None)
        backend.prompt_costs.pop(prompt_id, None)
        backend.room_made()


def note_running(running: dict[str, str], backend_id: str, kind: str, data: Mapping[str, Any]) -> None:
    """Keep ``running`` (backend id -> the prompt it runs) up to date from one frame of that backend: its preview
    frames carry no prompt id, so they belong to the prompt that started last and has not ended."""
    prompt_id = data.get("prompt_id")
    if kind == "execution_start" and isinstance(prompt_id, str):
        running[backend_id] = prompt_id
    elif kind == "executing" and data.get("node") is None and running.get(backend_id) == prompt_id:
        del running[backend_id]
