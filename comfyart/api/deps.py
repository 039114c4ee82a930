"""What routes reach through dependencies: the daemon's services (``ServicesDep``, on ``app.state``), the task a
caller may see (``VisibleTask``), and the admission of a new task: its owner, quota and webhook rules, and the one
place a request becomes a ``NewTask``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from comfyart.api.auth import Caller
from comfyart.api.comfyui.front import FrontDoor
from comfyart.api.requests import Scheduling
from comfyart.api.security import Security
from comfyart.auth import Principal, can_see
from comfyart.dispatcher import Dispatcher
from comfyart.errors import InvalidInput, NotFound
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.metrics import Metrics
from comfyart.models import NewTask, Task
from comfyart.pool.controls import PoolControls
from comfyart.pool.registry import Pool
from comfyart.stats import StatsHistory
from comfyart.store.queue import TaskQueue
from comfyart.store.tasks import TaskStore
from comfyart.store.workflows import WorkflowStore
from comfyart.tracker.tracker import Tracker
from comfyart.webhooks import literal_target_problem
from comfyart.workflows.resolve import Resolver


@dataclass
class Services:
    """Everything the API asks: built by ``daemon.build``, put on ``app.state`` by ``create_app``."""

    store: TaskStore
    queue: TaskQueue
    pool: Pool
    controls: PoolControls
    outputs: OutputStore
    workflows: WorkflowStore
    resolver: Resolver
    inputs: InputStore
    tracker: Tracker
    dispatcher: Dispatcher
    front: FrontDoor
    workflow_file_errors: list[str] = field(default_factory=list)
    objects: S3Outputs | None = None
    security: Security = field(default_factory=Security)
    metrics: Metrics | None = None
    stats: StatsHistory | None = None
    dashboard: bool = True


# Dependencies are coroutines though they never wait: FastAPI runs a plain function dependency in a worker thread.
async def services_of(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services_of)]


async def visible_task(task_id: str, principal: Caller, services: ServicesDep) -> Task:
    """The task, if the caller may see it; another client's answers as a missing one does."""
    task = await services.store.get(task_id)
    if not can_see(principal, task.owner):
        raise NotFound(f"no task {task_id}")
    return task


VisibleTask = Annotated[Task, Depends(visible_task)]


@dataclass(frozen=True)
class Admission:
    """What a new task of one caller carries besides its request: its owner, whether its webhook may reach public
    addresses only, and how many unfinished tasks the owner may have (0: no limit)."""

    owner: str | None
    webhook_public_only: bool = False
    max_queued: int = 0

    def new_task(self, options: Scheduling, *, prompt: dict[str, Any] | None = None, workflow: str | None = None,
                 workflow_version: int | None = None, params: dict[str, Any] | None = None,
                 retry_of: str | None = None) -> NewTask:
        """The task a request queues: ``options`` and what it runs (a graph, or a workflow's version and
        parameters; for a run by name the resolver fills those in)."""
        return NewTask(prompt=prompt, workflow=workflow, workflow_version=workflow_version, params=params,
                       priority=options.priority or 0, requires=options.requires or (), vram_mb=options.vram_mb,
                       webhook=options.webhook, webhook_public_only=self.webhook_public_only, owner=self.owner,
                       retry_of=retry_of)


async def admit(services: Services, principal: Principal, options: Scheduling) -> Admission:
    """Admit a new task of the caller: its submission rate is checked (QuotaExceeded), and a client key's webhook
    may not name a private address."""
    security, webhook = services.security, options.webhook
    public_only = webhook is not None and not principal.admin
    if webhook is not None and public_only and not security.private_webhooks:
        problem = literal_target_problem(webhook)
        if problem is not None:
            raise InvalidInput(f"webhook: {problem}")
    if security.quotas is None:
        return Admission(principal.owner, public_only)
    await security.quotas.submission(principal)
    return Admission(principal.owner, public_only, security.quotas.max_queued(principal))
