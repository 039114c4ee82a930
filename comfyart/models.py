"""Records and states shared by the store, the scheduler loops and the API."""
from __future__ import annotations

import enum
from typing import Any, Dict, List, NewType, Optional

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
TRANSITIONS: Dict[TaskStatus, frozenset] = {
    TaskStatus.PENDING: frozenset({TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED,
                                   TaskStatus.CANCELED}),
    TaskStatus.RUNNING: frozenset({TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED,
                                   TaskStatus.CANCELED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELED: frozenset(),
}


def sources_of(target: TaskStatus) -> List[TaskStatus]:
    """The statuses from which ``target`` may be reached."""
    return [source for source, targets in TRANSITIONS.items() if target in targets]


class BackendState(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    ERROR = "error"


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
    path: str = Field(description="where comfyart stored the file, relative to the output store")


class Attempt(BaseModel):
    """One submission of a task that ended without a result and was retried (or gave up)."""

    backend: str
    prompt_id: str
    submitted_ms: Optional[int] = None
    ended_ms: int
    outcome: str = Field(description="backend_lost, timed_out, vanished, not_accepted, workflow_error, interrupted")
    error: str


class Task(BaseModel):
    id: TaskId
    status: TaskStatus
    created_ms: int
    updated_ms: int
    started_ms: Optional[int] = None
    finished_ms: Optional[int] = None
    prompt: Optional[Dict[str, Any]] = Field(
        None, description="the API-format graph; for a task queued by workflow name, written when it is dispatched")
    workflow: Optional[str] = None
    workflow_version: Optional[int] = None
    params: Optional[Dict[str, Any]] = Field(None, description="the workflow parameters it runs with, the seed "
                                                               "actually used included")
    backend: Optional[str] = None
    prompt_id: Optional[str] = None
    progress: float = 0.0
    node: Optional[str] = None
    node_step: Optional[int] = None
    node_max: Optional[int] = None
    error: Optional[str] = None
    node_errors: Optional[Dict[str, Any]] = None
    outputs: List[OutputFile] = Field(default_factory=list)
    priority: int = Field(0, description="higher runs first; high = 1, normal = 0, low = -1")
    requires: List[str] = Field(default_factory=list, description="tags a backend must have to run it")
    vram_mb: Optional[int] = Field(None, description="VRAM it needs; backends with less are skipped")
    attempts: int = Field(0, description="submissions so far, the first included")
    submitted_ms: Optional[int] = None
    history: List[Attempt] = Field(default_factory=list, description="earlier attempts that ended without a result")
