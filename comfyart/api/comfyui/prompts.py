"""Prompts queued as ComfyUI's ``POST /prompt`` queues them (quota, checks, validation against the catalog, queue
numbers), and the interrupts and cancels that the queue, interrupt and jobs routes ask for."""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from comfyart.api.comfyui.catalog import Catalog
from comfyart.api.comfyui.sockets import Connection
from comfyart.auth import NOBODY, Principal
from comfyart.comfy.inventory import NotInFleet, admitted_needs
from comfyart.comfy.validate import Verdict, validate
from comfyart.config.sections import LimitsConfig
from comfyart.errors import BackendUnavailable, InvalidTransition, NotFound, TransientError
from comfyart.files.inputs import INPUT_ID, InputStore
from comfyart.models import ComfyPrompt, NewTask, Task, TaskStatus, socket_key
from comfyart.policy.inventory import Fleet
from comfyart.store.comfy_index import ComfyIndex
from comfyart.store.quotas import Quotas
from comfyart.store.tasks import TaskStore
from comfyart.tracker.tracker import Tracker

PROMPT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Prompts:
    """``POST /prompt`` validates the graph against the pool's ``/object_info`` and queues a comfyart task. The prompt
    id the client sees (its own, or one minted here) stays the same across retries and backends; each attempt runs
    under a prompt id of comfyart's on the backend."""

    def __init__(self, *, store: TaskStore, comfy: ComfyIndex, catalog: Catalog, inputs: InputStore,
                 tracker: Tracker, connections: dict[str, Connection], quotas: Quotas | None,
                 limits: LimitsConfig) -> None:
        self.store = store
        self.comfy = comfy
        self.catalog = catalog
        self.inputs = inputs
        self.tracker = tracker
        self.connections = connections  # the sockets' own: a prompt queued for one of them is open there
        self.quotas = quotas
        self.limits = limits

    async def queue_prompt(self, body: dict[str, Any], principal: Principal = NOBODY,
                           usage_source: str | None = None) -> tuple[int, dict[str, Any]]:
        """POST /prompt: (status, answer) as ComfyUI gives them; ``usage_source``: see ``_extra``. Raises
        QuotaExceeded."""
        def refused(kind: str, message: str, node_errors: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
            return 400, {"error": {"type": kind, "message": message, "details": message, "extra_info": {}},
                         "node_errors": node_errors or {}}

        if self.quotas is not None:  # first: a client over its rate costs no validation
            await self.quotas.submission(principal)
        if "prompt" not in body:
            return refused("no_prompt", "No prompt provided")
        graph = body["prompt"]
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and (not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id)):
            return refused("invalid_prompt_id", "prompt_id must be 1-128 letters, digits, '.', '_', ':' or '-'")
        given = body.get("extra_data")
        extra_data: dict[str, Any] = given if isinstance(given, dict) else {}
        client_id = body.get("client_id") or extra_data.get("client_id")
        targets = body.get("partial_execution_targets")
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            return refused("invalid_prompt", "partial_execution_targets must be a list of node ids")
        if client_id is not None and not isinstance(client_id, str):
            return refused("invalid_prompt", "client_id must be a string")
        if isinstance(graph, dict) and len(graph) > self.limits.max_graph_nodes:
            return refused("invalid_prompt", f"prompt has {len(graph)} nodes; at most "
                                             f"{self.limits.max_graph_nodes} are allowed")
        fleet = await self.catalog.inventories.fleet()
        if fleet is None:
            raise BackendUnavailable("no backend has listed its nodes (/object_info) yet")
        await self.inputs.learn(graph)  # inputs another replica took: the check below lets them through
        verdict = self.check(graph, fleet.object_info, targets)
        if verdict.error is not None:
            return 400, {"error": verdict.error, "node_errors": verdict.node_errors}
        try:
            needs = admitted_needs(graph, fleet)
        except NotInFleet as unrunnable:  # each node is known, but no one backend has them all
            return 400, {"error": unrunnable.error, "node_errors": unrunnable.node_errors}
        if targets is None and verdict.node_errors:
            targets = verdict.outputs  # what ComfyUI runs: the valid outputs only
        if "number" in body and isinstance(body["number"], (int, float)) and not isinstance(body["number"], bool):
            number: float = float(body["number"])
        else:
            number = await self.comfy.next_number()
            if body.get("front") is True:
                number = -number
        prompt_id = prompt_id or str(uuid.uuid4())
        extra_data = _extra(extra_data, client_id, usage_source)
        comfy = ComfyPrompt(prompt_id, number, client_id=client_id, extra_data=extra_data, comfy_targets=targets)
        task = await self.store.create(NewTask(graph, priority=1 if body.get("front") is True else 0,
                                               owner=principal.owner, comfy=comfy, needs=needs),
                                       max_queued=self.quotas.max_queued(principal) if self.quotas is not None else 0)
        connection = self.connections.get(socket_key(principal.owner, client_id)) if client_id else None
        if connection is not None:
            connection.open.add(task.id)
        shown = number if "number" in body else int(number)
        return 200, {"prompt_id": prompt_id, "number": shown, "node_errors": verdict.node_errors}

    def check(self, graph: Any, object_info: Mapping[str, Any], targets: list[str] | None = None) -> Verdict:
        """The one check of a graph at submission, for ``POST /prompt`` and ``POST /api/tasks`` alike: ComfyUI's
        validation against the pool's ``object_info``, where an input comfyart stores and delivers is let through."""
        return validate(graph, object_info, targets=targets, also_allowed=self.stored_input)

    async def known_fleet(self) -> Fleet | None:
        """The fleet's inventories, or None while no backend has listed one (a graph is then checked at
        dispatch)."""
        return await self.catalog.inventories.fleet()

    def stored_input(self, value: Any) -> bool:
        return isinstance(value, str) and INPUT_ID.match(value.rsplit("/", 1)[-1]) is not None \
            and self.inputs.is_stored(value.rsplit("/", 1)[-1])

    async def interrupt(self, task: Task) -> bool:
        try:
            return await self.tracker.interrupt(task.id)
        except (NotFound, TransientError):
            return False

    async def cancel(self, task: Task, *, only_if: tuple[TaskStatus, ...]) -> bool:
        if task.status not in only_if:
            return False
        try:
            await self.tracker.cancel(task.id)
        except (InvalidTransition, NotFound):
            return False
        return True


def _extra(given: dict[str, Any], client_id: str | None, usage_source: str | None) -> dict[str, Any]:
    """The ``extra_data`` kept with a prompt: the client's, with its client id and creation time, the
    ``Comfy-Usage-Source`` header as newer ComfyUI keeps it, and without the client's comfy.org credentials."""
    extra_data = {**given, **({"client_id": client_id} if client_id else {}), "create_time": int(time.time() * 1000)}
    if usage_source and "comfy_usage_source" not in given:
        extra_data["comfy_usage_source"] = usage_source[:100]
    for secret in ("auth_token_comfy_org", "api_key_comfy_org"):
        extra_data.pop(secret, None)
    return extra_data
