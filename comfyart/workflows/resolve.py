"""Tasks that run a stored workflow: queued by name, version and parameter values, resolved into a graph (and the
image files it loads) only when the dispatcher is about to submit them.
"""
from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyart.clock import now_ms
from comfyart.comfy.inventory import checked_needs, graph_needs
from comfyart.comfy.protocol import with_preview_method
from comfyart.errors import InvalidInput, NotFound
from comfyart.files.assets import BlobStore
from comfyart.files.cache import FileUnreachable
from comfyart.files.inputs import InputStore, StoredInput
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask, Task, TaskStatus
from comfyart.policy.assets import input_name_digest
from comfyart.policy.inventory import Combo, Fleet
from comfyart.policy.needs import Needs, graph_cost, graph_models, needs_of_record
from comfyart.store.assets import AssetStore
from comfyart.store.tasks import TaskStore
from comfyart.store.workflows import WorkflowStore
from comfyart.workflows.definition import WorkflowDefinition
from comfyart.workflows.parameters import ImageInput, ParameterError, apply, bind, image_inputs

CACHED_DEFINITIONS = 256


@dataclass(frozen=True)
class Upload:
    """A file to put on the backend (``POST /upload/image``) before the prompt that loads it."""

    param: str
    path: Path
    name: str  # the file name the backend will know it by, and the graph names
    content_type: str


@dataclass(frozen=True)
class PreparedPrompt:
    graph: dict[str, Any]
    uploads: list[Upload]
    extra_data: dict[str, Any] | None = None  # passed on with the prompt (a ComfyUI client's, e.g. its workflow)
    targets: list[str] | None = None  # the output nodes to run (partial_execution_targets); None: all


def backend_name(path: Path, sha256: str) -> str:
    """The name a backend knows an image parameter's file by (one per content)."""
    return f"comfyart-{sha256[:24]}{path.suffix.lower()}"


class Resolver:
    def __init__(self, *, workflows: WorkflowStore, tasks: TaskStore, inputs: InputStore, outputs: OutputStore,
                 rng: random.Random | None = None, preview_method: str = "default", blobs: BlobStore | None = None,
                 assets: AssetStore | None = None) -> None:
        self.workflows = workflows
        self.blobs, self.assets = blobs, assets  # the v2 assets a raw graph loads
        self.preview_method = preview_method  # for a prompt that does not choose (comfyui.preview_method)
        self.tasks = tasks
        self.inputs = inputs
        self.outputs = outputs
        self.rng = rng or random.SystemRandom()
        # versions never change once written, so a cached definition cannot go stale
        self._definitions: OrderedDict[tuple[str, int], WorkflowDefinition] = OrderedDict()

    async def definition(self, name: str, version: int, *, known_stored: bool = False) -> WorkflowDefinition:
        """One version, parsed once. A cached one is checked to be still stored (a deleted workflow's versions
        expire) unless the caller already knows it is."""
        key = (name, version)
        cached = self._definitions.get(key)
        if cached is not None:
            if not known_stored and not await self.workflows.has_version(name, version):
                del self._definitions[key]
                raise NotFound(f"workflow {name} has no version {version}")
            self._definitions.move_to_end(key)
            return cached
        definition = await self.workflows.definition(name, version)
        self._definitions[key] = definition
        if len(self._definitions) > CACHED_DEFINITIONS:
            self._definitions.popitem(last=False)
        return definition

    # ------------------------------------------------------------------ submission
    async def submit(self, name: str, params: Mapping[str, Any], uploads: Mapping[str, StoredInput] | None = None,
                     *, task: NewTask | None = None, max_queued: int = 0,
                     may_read: Callable[[Task], bool] = lambda task: True, fleet: Fleet | None = None) -> Task:
        """Queue a run of workflow ``name``'s current version, with ``task``'s scheduling, owner and webhook.
        ``uploads`` are files that came with the request, by parameter; an image parameter may name an output of a
        task ``may_read`` lets the caller see. With the ``fleet``'s inventories, numbers are held to the bounds of
        the inputs they target, the graph they make must pass ComfyUI's validation and some backend must have all
        it needs (stored with the task). Raises NotFound, ParameterError naming each parameter at fault,
        GraphRefused, or NotInFleet."""
        meta = await self.workflows.current(name)
        if meta is None:
            raise NotFound(f"no workflow {name}")
        version = int(meta["version"])
        definition = await self.definition(name, version, known_stored=True)  # the current version is stored
        request = dict(params)
        for param, stored in (uploads or {}).items():
            if param in request:
                raise ParameterError({param: "given both as a file and in params"})
            request[param] = {"input": stored.id}
        object_info = fleet.object_info if fleet is not None else None
        values = bind(definition.params, request, self.rng, graph=definition.graph, object_info=object_info)
        problems, names = {}, {}
        for image in image_inputs(definition.params, values):
            try:
                path, sha256, _ = await self._source(image, may_read)
                names[image.param] = backend_name(path, sha256)
            except ValueError as exc:
                problems[image.param] = str(exc)
        if problems:
            raise ParameterError(problems)
        run = dataclasses.replace(task or NewTask(), prompt=None, workflow=name, workflow_version=version,
                                  params=values)
        if fleet is not None:
            graph = apply(definition.graph, definition.params, values, names)
            tags, vram_mb = _requirements(run, definition)
            run = dataclasses.replace(run, needs=checked_needs(graph, fleet, tags=tags, vram_mb=vram_mb,
                                                               also_allowed=lambda value: value in names.values()))
        return await self.tasks.create(run, max_queued=max_queued)

    async def _source(self, image: ImageInput,
                      may_read: Callable[[Task], bool] = lambda task: True) -> tuple[Path, str, str]:
        """(path, sha256, content type) of an image parameter's file, or ValueError saying why it has none
        (FileUnreachable, a TransientError, while the replica that holds it does not answer)."""
        return await self._located(image, may_read)

    async def _located(self, image: ImageInput, may_read: Callable[[Task], bool]) -> tuple[Path, str, str]:
        ref = image.ref
        if ref.input is not None:
            path = await self.inputs.locate(ref.input)
            if path is None:
                raise ValueError(f"no uploaded input {ref.input}")
            return path, ref.input.split(".")[0], self.inputs.content_type(ref.input)
        try:
            task = await self.tasks.get(ref.task or "")
        except NotFound:
            raise ValueError(f"no task {ref.task}") from None
        if not may_read(task):
            raise ValueError(f"no task {ref.task}")
        if task.status is not TaskStatus.COMPLETED:
            raise ValueError(f"task {task.id} is {task.status}, not completed")
        record = next((o for o in task.outputs if o.filename == ref.filename), None)
        path = await self.outputs.locate(task.id, record.filename, record.replica) if record is not None else None
        if record is None or path is None:
            raise ValueError(f"task {task.id} has no output {ref.filename}")
        if not record.content_type.startswith("image/"):
            raise ValueError(f"output {ref.filename} of task {task.id} is {record.content_type}, not an image")
        return path, record.sha256, record.content_type

    # ------------------------------------------------------------------ dispatch
    async def prepare_many(self, tasks: Sequence[Task]) -> list[PreparedPrompt | InvalidInput | FileUnreachable]:
        """``prepare`` for each task, its workflow versions checked in one round trip: a dispatch round
        prepares hundreds of tasks at once, and each Redis round trip waits for a lap of a busy event loop."""
        stored = await self.workflows.stored_versions((t.workflow, t.workflow_version) for t in tasks
                                                      if t.workflow is not None and t.workflow_version is not None)
        prepared: list[PreparedPrompt | InvalidInput | FileUnreachable] = []
        for task in tasks:
            try:
                prepared.append(await self.prepare(task, known_stored=(task.workflow, task.workflow_version) in stored))
            except (InvalidInput, FileUnreachable) as exc:
                prepared.append(exc)
        return prepared

    async def prepare(self, task: Task, *, known_stored: bool = False) -> PreparedPrompt:
        """The graph to submit for ``task`` and the files to upload first. Raises InvalidInput when it can no
        longer run (its workflow version or an input file is gone): retrying elsewhere would not help; raises
        FileUnreachable while an input file's replica does not answer (it may come back: the task waits)."""
        if task.workflow is None or task.workflow_version is None:
            if task.prompt is None:
                raise InvalidInput(f"task {task.id} has neither a prompt nor a workflow")
            extra_data = {k: v for k, v in (task.extra_data or {}).items() if k != "client_id"} or None
            named = await self._named_inputs(task.prompt)
            named += await self._asset_inputs(task, task.prompt, {upload.name for upload in named})
            return PreparedPrompt(task.prompt, named,
                                  with_preview_method(extra_data, self.preview_method), task.comfy_targets)
        try:
            definition = await self.definition(task.workflow, task.workflow_version, known_stored=known_stored)
        except NotFound:
            raise InvalidInput(f"workflow {task.workflow} version {task.workflow_version} is no longer stored "
                               f"(the workflow was deleted)") from None
        values = task.params or {}
        uploads: list[Upload] = []
        for image in image_inputs(definition.params, values):
            try:
                path, sha256, content_type = await self._source(image)
            except ValueError as exc:
                raise InvalidInput(f"params.{image.param}: {exc}") from None
            uploads.append(Upload(image.param, path, backend_name(path, sha256), content_type))
        graph = apply(definition.graph, definition.params, values, {u.param: u.name for u in uploads})
        return PreparedPrompt(graph, uploads, with_preview_method(None, self.preview_method))

    async def _named_inputs(self, graph: Mapping[str, Any]) -> list[Upload]:
        """Stored inputs a raw graph names by their id (as the ComfyUI-compatible upload answers them): each goes
        to the backend under that same name, so the graph needs no change. One another replica took is copied
        here first (``InputStore.locate``)."""
        uploads: dict[str, Upload] = {}
        for node_id, node in graph.items():
            for name, value in (node.get("inputs") or {}).items() if isinstance(node, dict) else ():
                if isinstance(value, str) and 68 <= len(value) <= 69 and value not in uploads:
                    path = await self.inputs.locate(value)
                    if path is not None:
                        uploads[value] = Upload(f"{node_id}.{name}", path, value, self.inputs.content_type(value))
        return list(uploads.values())

    async def _asset_inputs(self, task: Task, graph: Mapping[str, Any], named: Container[str]) -> list[Upload]:
        """The v2 assets a raw graph loads by their backend names (``policy.assets.comfy_input_name``, as the v2
        submission resolved them): each goes to the backend under that name, but only while the task's owner has
        a live asset of that blob: knowing a digest gives nobody another's bytes. InvalidInput when a blob the
        graph names is stored but no asset of the owner's holds it any more (deleted or expired since)."""
        if self.blobs is None or self.assets is None:
            return []
        uploads: dict[str, Upload] = {}
        for node_id, node in graph.items():
            for name, value in (node.get("inputs") or {}).items() if isinstance(node, dict) else ():
                digest = input_name_digest(value) if isinstance(value, str) and value not in uploads else None
                if digest is None or value in named:
                    continue
                blob_path = await self.blobs.locate(digest)  # claimed: the blob GC leaves it for its delivery
                if blob_path is None:
                    continue  # not one of ours: a backend's own file, its validation decides
                record = await self.assets.of_blob(task.owner, digest, now_ms=now_ms())
                if record is None:
                    raise InvalidInput(f"{node_id}.{name}: the asset of {value} was deleted or has expired")
                uploads[value] = Upload(f"{node_id}.{name}", blob_path, value, record.content_type)
        return list(uploads.values())

    async def needs(self, task: Task, combos: Container[Combo] = ()) -> tuple[Needs, float]:
        """What ``task`` asks of a backend (its own tags and VRAM with its workflow's, the node classes of its graph,
        the values of its combo inputs among ``combos``, and the models it loads) and its graph's estimated cost:
        as worked out at submission, else now. A task that can no longer run needs nothing and costs nothing:
        dispatching it fails it with the reason."""
        if task.needs is not None:
            return needs_of_record(task.needs)
        tags, vram_mb = set(task.requires), task.vram_mb
        graph: Mapping[str, Any] = task.prompt or {}
        if task.workflow is not None and task.workflow_version is not None:
            try:
                definition = await self.definition(task.workflow, task.workflow_version, known_stored=True)
            except NotFound:
                return Needs(), 0.0
            tags, vram_mb = _requirements(task, definition)
            values = task.params or {}
            images = {i.param: "" for i in image_inputs(definition.params, values)}
            try:
                graph = apply(definition.graph, definition.params, values, images)
            except (KeyError, TypeError):
                graph = definition.graph
        nodes, settings = graph_needs(graph, combos)
        needs = Needs(frozenset(tags), None if vram_mb is None else vram_mb << 20, graph_models(graph), nodes,
                      settings)
        return needs, graph_cost(graph)


def _requirements(task: Task | NewTask, definition: WorkflowDefinition) -> tuple[set[str], int | None]:
    """The tags and VRAM a task of a workflow asks for: its own with the workflow's."""
    tags = set(task.requires) | set(definition.requires)
    vram_mb = task.vram_mb
    if definition.vram_mb is not None:
        vram_mb = max(vram_mb or 0, definition.vram_mb)
    return tags, vram_mb
