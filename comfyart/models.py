"""Records and states shared by the store, the loops and the API: tasks and their status transitions, a task
about to be queued (``NewTask``), backends' health states and their transitions. No I/O."""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NewType

from pydantic import BaseModel, Field

TaskId = NewType("TaskId", str)


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED})

# status -> statuses it may move to; pending -> pending is a requeue after a lost submission
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED,
                                   TaskStatus.CANCELED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED,
                                   TaskStatus.CANCELED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELED: frozenset(),
}


def sources_of(target: TaskStatus) -> list[TaskStatus]:
    """The statuses from which ``target`` may be reached."""
    return [source for source, targets in TRANSITIONS.items() if target in targets]


class BackendState(enum.StrEnum):
    STARTING = "starting"  # a container or process starting up, not yet answering
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed its last health checks (static and adopted backends start here)
    ERROR = "error"  # lost or failed to start: on its way out of the pool


# state -> states it may move to; staying in a state is always allowed
BACKEND_TRANSITIONS: dict[BackendState, frozenset[BackendState]] = {
    BackendState.STARTING: frozenset({BackendState.HEALTHY, BackendState.ERROR}),
    BackendState.HEALTHY: frozenset({BackendState.UNHEALTHY, BackendState.ERROR}),
    BackendState.UNHEALTHY: frozenset({BackendState.HEALTHY, BackendState.ERROR}),
    BackendState.ERROR: frozenset(),
}


def backend_may_move(current: BackendState, target: BackendState) -> bool:
    return target == current or target in BACKEND_TRANSITIONS[current]


class BackendMode(enum.StrEnum):
    """Whether a backend takes new prompts; independent of its health."""

    ACTIVE = "active"
    DISABLED = "disabled"  # takes nothing new until enabled; stays in the pool
    DRAINING = "draining"  # takes nothing new; once idle it is stopped, replaced or removed (see Backend.after_drain)


class OutputFile(BaseModel):
    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"
    size: int
    content_type: str
    sha256: str
    path: str = Field(description="where comfyart stored the file: relative to the output store, or with object "
                                  "storage the object's key")
    bucket: str | None = Field(None, description="with object storage: the bucket that holds it")
    url: str | None = Field(None, description="with object storage: a presigned URL of the object")
    replica: str | None = Field(None, description="with several replicas: the one whose data directory holds the file "
                                                  "(every other fetches it from there)")


class Attempt(BaseModel):
    """One submission of a task that ended without a result and was retried (or gave up)."""

    backend: str
    prompt_id: str
    submitted_ms: int | None = None
    ended_ms: int
    outcome: str = Field(description="backend_lost, timed_out, vanished, not_accepted, workflow_error, interrupted")
    error: str


class Task(BaseModel):
    id: TaskId
    status: TaskStatus
    created_ms: int
    updated_ms: int
    started_ms: int | None = None
    finished_ms: int | None = None
    prompt: dict[str, Any] | None = Field(
        None, description="the API-format graph; for a task queued by workflow name, written when it is dispatched")
    workflow: str | None = None
    workflow_version: int | None = None
    params: dict[str, Any] | None = Field(None, description="the workflow parameters it runs with, the seed "
                                                               "actually used included")
    backend: str | None = None
    prompt_id: str | None = None
    progress: float = 0.0
    node: str | None = None
    node_step: int | None = None
    node_max: int | None = None
    error: str | None = None
    node_errors: dict[str, Any] | None = None
    outputs: list[OutputFile] = Field(default_factory=list)
    priority: int = Field(0, description="higher runs first; high = 1, normal = 0, low = -1")
    requires: list[str] = Field(default_factory=list, description="tags a backend must have to run it")
    vram_mb: int | None = Field(None, description="VRAM it needs; backends with less are skipped")
    attempts: int = Field(0, description="submissions so far, the first included")
    submitted_ms: int | None = None
    history: list[Attempt] = Field(default_factory=list, description="earlier attempts that ended without a result")
    owner: str | None = Field(None, description="id of the API key that queued it (none with auth off)")
    retry_of: str | None = Field(None, description="the ended task this one runs again (POST …/retry)")
    needs: dict[str, Any] | None = Field(
        None, description="what it asks of a backend, worked out when it was queued: node classes, the values of "
                          "its combo inputs (models), tags, VRAM; none: worked out at dispatch")
    # queued through the ComfyUI-compatible API
    client_id: str | None = Field(None, description="the ComfyUI client id whose WebSocket gets its events")
    comfy_prompt_id: str | None = Field(None, description="the prompt id its ComfyUI client knows it by")
    number: float | None = Field(None, description="its ComfyUI queue number")
    extra_data: dict[str, Any] | None = None
    comfy_targets: list[str] | None = Field(None, description="the output nodes to run (ComfyUI's "
                                                                 "partial_execution_targets); none: all")
    comfy_outputs: dict[str, Any] | None = Field(None, description="the UI outputs as the backend reported them")
    comfy_messages: list[list[Any]] | None = Field(
        None, description="the backend's execution_* messages of the last attempt, [type, data] each, as ComfyUI "
                          "keeps them in its history")
    webhook: str | None = Field(None, description="URL that gets the record once the task ends")
    webhook_public_only: bool = Field(False, description="queued by a client key: its webhook may reach public "
                                                         "addresses only")
    webhook_deliveries: list[dict[str, Any]] = Field(default_factory=list,
                                                     description="each attempt to deliver the webhook")
    # queued through Comfy API v2 (/api/v2/jobs): the dashboard and /api/tasks ignore these
    v2: bool = Field(False, description="queued through /api/v2/jobs: kept for api_v2.job_retention_s after its "
                                        "end, then expired and its outputs removed")
    labels: dict[str, str] | None = Field(None, description="its v2 metadata labels")
    cancel_asked_ms: int | None = Field(None, description="when a v2 cancel of it running was asked: it shows "
                                                          "'canceling' until its backend confirms")
    expired_ms: int | None = Field(None, description="when its v2 retention ended and its outputs were removed")


@dataclass(frozen=True)
class Relay:
    """Where the frames of a prompt queued through the ComfyUI-compatible API go: its client's socket (none
    without a client id), under the prompt id that client knows."""

    task_id: str
    comfy_prompt_id: str
    client_id: str | None
    owner: str | None = None

    @property
    def socket(self) -> str | None:
        return socket_key(self.owner, self.client_id) if self.client_id else None


def socket_key(owner: str | None, client_id: str) -> str:
    """Which socket of the ComfyUI-compatible API a client id names: client ids are the callers' own, so two
    callers' ids live apart, and one can neither hear nor take over another's socket."""
    return client_id if owner is None else f"{owner}\0{client_id}"


def relay_of(task: Task) -> Relay | None:
    return Relay(task.id, task.comfy_prompt_id, task.client_id, task.owner) if task.comfy_prompt_id else None


@dataclass(frozen=True)
class ComfyPrompt:
    """What the ComfyUI-compatible API records of a prompt it queues."""

    comfy_prompt_id: str  # the prompt id its client knows it by
    number: float  # its ComfyUI queue number
    client_id: str | None = None  # whose WebSocket gets its events
    extra_data: dict[str, Any] | None = None
    comfy_targets: list[str] | None = None  # the output nodes to run; None: all

    def fields(self) -> dict[str, Any]:
        """As the task record holds them."""
        return {"comfy_prompt_id": self.comfy_prompt_id, "client_id": self.client_id, "number": self.number,
                "extra_data": self.extra_data, "comfy_targets": self.comfy_targets}


@dataclass(frozen=True)
class NewTask:
    """A task to queue: a whole graph (``prompt``), or a run of a stored workflow (name, version and parameter
    values; its graph is resolved at dispatch), with what it asks of a backend, who queued it, and where its end is
    reported."""

    prompt: dict[str, Any] | None = None
    workflow: str | None = None
    workflow_version: int | None = None
    params: dict[str, Any] | None = None
    priority: int = 0
    requires: Sequence[str] = ()
    vram_mb: int | None = None
    webhook: str | None = None
    webhook_public_only: bool = False  # queued by a client key: its webhook may reach public addresses only
    owner: str | None = None  # the id of the API key that queues it (none with auth off)
    retry_of: str | None = None
    comfy: ComfyPrompt | None = None
    needs: dict[str, Any] | None = None  # policy.needs.needs_record, worked out at submission
    v2: bool = False  # queued through /api/v2/jobs: retained, then expired
    labels: dict[str, str] | None = None  # its v2 metadata labels
