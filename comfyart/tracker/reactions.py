"""What one event of a backend's socket means for a prompt: what the tracker notes in the prompt's state (progress,
outputs seen, whether the socket saw the whole run), and what it must then do (a ``Reaction``). No I/O here: the
tracker carries the reactions out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from comfyart.comfy.protocol import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
    describe_error,
)
from comfyart.models import TaskStatus
from comfyart.policy.attempts import prompt_progress

if TYPE_CHECKING:  # the state is only read and noted in: none of the book's code is needed
    from comfyart.tracker.prompts import PromptState


@dataclass(frozen=True)
class MarkRunning:
    """The backend started the prompt: its task is running."""


@dataclass(frozen=True)
class Settle:
    """The prompt ended: look it up and end its attempt. ``outputs``: the socket saw the whole successful run on one
    connection, and these are its outputs (no lookup needed)."""

    outputs: dict[str, Any] | None


@dataclass(frozen=True)
class Fail:
    """The prompt ended without a result: its task ends in ``status`` with ``error``."""

    error: str
    status: TaskStatus = TaskStatus.FAILED


Reaction = MarkRunning | Settle | Fail


def note_progress(state: PromptState, *, step: float | None = None, step_max: float | None = None,
                  **fields: Any) -> None:
    """Merge progress into ``state.unsaved``: a sampler can send hundreds of steps a second, and a short prompt
    ends before its progress is worth a write, so it is written at intervals."""
    progress = prompt_progress(total_nodes=state.total_nodes, cached_nodes=state.cached,
                               finished_nodes=len(state.finished), step=step, step_max=step_max)
    state.unsaved.update(fields, progress=progress)


def _outputs_ran(state: PromptState) -> bool:
    """Whether every output node of the prompt ran (none was served from cache), so that its ``executed`` came
    live. (A cached output node's result may come without one, from an older ComfyUI: then /history is asked.
    A cached loader or text encoder, as in every run of a workflow with a new seed, changes nothing.)"""
    if state.cached == 0:
        return True
    return state.output_nodes is not None and state.output_nodes.isdisjoint(state.cached_nodes)


def react(state: PromptState, event: Event, *, epoch: int, now: float) -> Reaction | None:
    """Note ``event`` in ``state``; ``epoch`` counts the backend's socket connections so far (the event came on the
    last), ``now`` is the monotonic time."""
    state.last_seen = now
    if isinstance(event, ExecutionStart):
        state.submitted = True
        state.epoch = epoch
        return MarkRunning()
    if isinstance(event, ExecutionCached):
        state.cached = len(event.nodes)
        state.cached_nodes = frozenset(event.nodes)
        state.cache_known = True
        note_progress(state)
    elif isinstance(event, Executing):
        if event.node is None:
            seen_whole = state.succeeded and state.cache_known and state.epoch == epoch and _outputs_ran(state)
            return Settle(state.outputs if seen_whole else None)
        if state.node is not None:
            state.finished.add(state.node)
        state.node = event.node
        note_progress(state, node=event.node, node_step=None, node_max=None)
    elif isinstance(event, Progress):
        note_progress(state, step=event.value, step_max=event.max, node=event.node, node_step=int(event.value),
                      node_max=int(event.max))
    elif isinstance(event, Executed):
        state.outputs[event.node] = event.output
    elif isinstance(event, ExecutionSuccess):
        state.succeeded = True
    elif isinstance(event, ExecutionError):
        return Fail(describe_error(event.node_id, event.node_type, event.exception_type, event.exception_message))
    elif isinstance(event, ExecutionInterrupted):
        return Fail(f"interrupted at node {event.node_id} ({event.node_type})",
                    TaskStatus.CANCELED if state.interrupt_by else TaskStatus.FAILED)
    return None
