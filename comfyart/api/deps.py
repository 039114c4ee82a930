"""What routes reach through dependencies: the daemon's services (``ServicesDep``, on ``app.state``), the task a
caller may see (``VisibleTask``), and the admission of a new task: its owner, quota and webhook rules, its graph
checked against the pool's ``/object_info``, and the one place a request becomes a ``NewTask``."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from comfyart.api.auth import Caller
from comfyart.api.comfyui.front import FrontDoor
from comfyart.api.requests import RunOptions, Scheduling, TaskSubmission
from comfyart.api.security import Security
from comfyart.api.v2.stream import StreamSlots
from comfyart.auth import Principal, can_see
from comfyart.cluster.gate import LeaderGate
from comfyart.cluster.locator import FileLocator
from comfyart.cluster.replicas import Replica
from comfyart.comfy.inventory import checked_needs
from comfyart.config.sections import ApiV2Config
from comfyart.dispatcher import Dispatcher
from comfyart.errors import InvalidInput, NotFound
from comfyart.files.assets import BlobStore
from comfyart.files.inputs import InputStore
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.metrics import Metrics
from comfyart.models import NewTask, Task
from comfyart.policy.holdings import Holdings
from comfyart.policy.inventory import Fleet
from comfyart.pool.controls import PoolControls
from comfyart.pool.inventory import Inventories
from comfyart.pool.registry import Pool
from comfyart.stats import StatsHistory
from comfyart.store.assets import AssetStore
from comfyart.store.idempotency import IdempotencyStore
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
    inventories: Inventories
    workflow_file_errors: list[str] = field(default_factory=list)
    objects: S3Outputs | None = None
    security: Security = field(default_factory=Security)
    metrics: Metrics | None = None
    stats: StatsHistory | None = None
    dashboard: bool = True
    editor: bool = True  # ComfyUI's web editor at /comfy/
    holdings: Holdings = field(default_factory=Holdings)  # /api/pool's and /api/models' answers, remembered
    idempotency: IdempotencyStore | None = None  # Idempotency-Keys of POST /api/v2/jobs (None: the header is refused)
    api_v2: ApiV2Config = field(default_factory=ApiV2Config)
    blobs: BlobStore | None = None  # the v2 assets' bytes and records (None: the assets routes answer 404)
    assets: AssetStore | None = None
    v2_streams: StreamSlots = field(default_factory=StreamSlots)  # the v2 event streams each key holds open
    replica: Replica | None = None  # this replica among the others on the Redis (issue 24; None: not registered)
    files: FileLocator | None = None  # the other replicas' files (issue 24; None: one process, or a shared data_dir)
    gate: LeaderGate | None = None  # replicated: who leads (``api.forward``); None in one process


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
    addresses only, how many unfinished tasks the owner may have (0: no limit), and the pool's ``/object_info`` a
    workflow run is checked against (None: no backend has answered it; the backend checks the graph), and what a
    raw graph needs of a backend (``policy.needs.needs_record``)."""

    owner: str | None
    webhook_public_only: bool = False
    max_queued: int = 0
    fleet: Fleet | None = None
    needs: dict[str, Any] | None = None

    def new_task(self, options: Scheduling, *, prompt: dict[str, Any] | None = None, workflow: str | None = None,
                 workflow_version: int | None = None, params: dict[str, Any] | None = None,
                 retry_of: str | None = None) -> NewTask:
        """The task a request queues: ``options`` and what it runs (a graph, or a workflow's version and
        parameters; for a run by name the resolver fills those in)."""
        return NewTask(prompt=prompt, workflow=workflow, workflow_version=workflow_version, params=params,
                       priority=options.priority or 0, requires=options.requires or (), vram_mb=options.vram_mb,
                       webhook=options.webhook, webhook_public_only=self.webhook_public_only, owner=self.owner,
                       retry_of=retry_of, needs=self.needs if prompt is not None else None)


async def admit(services: Services, principal: Principal, options: Scheduling,
                input_names: Collection[str] = ()) -> Admission:
    """Admit a new task of the caller: its submission rate is checked (QuotaExceeded), a client key's webhook
    may not name a private address, and a new graph must pass ComfyUI's validation against the pool's
    ``/object_info`` (GraphRefused) once a backend has answered it; ``input_names``: files the dispatcher will
    deliver (a v2 graph's assets), valid wherever an input file is."""
    security, webhook = services.security, options.webhook
    public_only = webhook is not None and not principal.admin
    if webhook is not None and public_only and not security.private_webhooks:
        problem = literal_target_problem(webhook)
        if problem is not None:
            raise InvalidInput(f"webhook: {problem}")
    max_queued = 0
    if security.quotas is not None:  # first: a client over its rate costs no validation
        await security.quotas.submission(principal)
        max_queued = security.quotas.max_queued(principal)
    fleet = await services.front.prompts.known_fleet() if isinstance(options, (TaskSubmission, RunOptions)) else None
    if fleet is not None and isinstance(options, TaskSubmission):
        await services.inputs.learn(options.prompt)  # inputs another replica took pass the graph check
    needs = checked_graph(services, options, fleet, input_names) if fleet is not None else None
    return Admission(principal.owner, public_only, max_queued, fleet, needs)


def checked_graph(services: Services, options: Scheduling, fleet: Fleet,
                  input_names: Collection[str] = ()) -> dict[str, Any] | None:
    """What a new raw graph needs of a backend, once it passed ComfyUI's validation against the fleet's
    ``/object_info`` (GraphRefused) and some backend of the fleet has everything it needs (NotInFleet, 422)."""
    if not isinstance(options, TaskSubmission) or options.prompt is None:
        return None
    stored_input = services.front.prompts.stored_input
    return checked_needs(options.prompt, fleet, also_allowed=lambda value: value in input_names or stored_input(value),
                         tags=options.requires or (), vram_mb=options.vram_mb)
