"""Tasks queued by workflow name (workflows.resolve) on a real Redis: what is stored at submission, and the graph
made from it at dispatch."""
from __future__ import annotations

import json
import random

import pytest

from comfyart.errors import InvalidInput, NotFound
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask
from comfyart.store.stores import Stores
from comfyart.workflows.definition import WorkflowDefinition
from comfyart.workflows.parameters import Parameter, ParameterError
from comfyart.workflows.resolve import Resolver
from tests.support.workflows import t2i


@pytest.fixture
def templates(redis_client, tmp_path, workflows) -> Resolver:
    return Resolver(workflows=workflows, tasks=Stores.on(redis_client, "t").tasks, inputs=InputStore(tmp_path / "in"),
                    outputs=OutputStore(tmp_path / "out"), rng=random.Random(7))


async def test_a_queued_task_is_small_and_runs_the_version_it_was_queued_with(templates, workflows, redis_client):
    await workflows.put("t2i", t2i(steps=4))
    task = await templates.submit("t2i", {"prompt": "a cat"})
    assert task.workflow == "t2i" and task.workflow_version == 1 and task.prompt is None
    assert task.params["prompt"] == "a cat" and task.params["seed"] >= 0  # the random seed, recorded
    raw = await redis_client.hgetall(f"t:task:{task.id}")
    assert "prompt" not in raw and json.loads(raw["params"]) == task.params
    assert await redis_client.memory_usage(f"t:task:{task.id}") < 512

    await workflows.put("t2i", t2i(steps=30))  # replaced while the task waits
    prepared = await templates.prepare(await templates.tasks.get(task.id))
    assert prepared.graph["3"]["inputs"]["steps"] == 4
    assert prepared.graph["3"]["inputs"]["seed"] == task.params["seed"]
    assert prepared.graph["6"]["inputs"]["text"] == "a cat" and prepared.uploads == []

    await workflows.delete("t2i")
    assert (await templates.prepare(task)).graph["3"]["inputs"]["steps"] == 4  # retained after the delete
    await redis_client.delete("t:workflow-versions:t2i")  # what the retention expiry does (it was cached)
    with pytest.raises(InvalidInput, match="workflow t2i version 1 is no longer stored"):
        await templates.prepare(task)


async def test_submit_checks_image_references(templates, workflows):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    await workflows.put("load", WorkflowDefinition(graph=graph, params={
        "image": Parameter(type="image", target="1.image", required=True)}))
    raw = await templates.tasks.create(NewTask({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    cases = [({"input": "0" * 64 + ".png"}, "no uploaded input"),
             ({"input": "../../etc/passwd"}, "no uploaded input"),
             ({"task": "01NOSUCH", "filename": "a.png"}, "no task 01NOSUCH"),
             ({"task": raw.id, "filename": "a.png"}, f"task {raw.id} is pending, not completed")]
    for value, reason in cases:
        with pytest.raises(ParameterError) as caught:
            await templates.submit("load", {"image": value})
        assert caught.value.problems["image"].startswith(reason)
    with pytest.raises(NotFound):
        await templates.submit("nothing-here", {})
    assert await templates.tasks.queue.length() == 1  # only the raw task
