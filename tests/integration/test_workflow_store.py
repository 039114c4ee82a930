"""Workflows in a real Redis: versions, conditional writes, deletes that keep what queued tasks need, the
resolution of queued tasks, and workflow files loaded at start-up."""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import astuple
from pathlib import Path

import pytest

from comfyart.errors import Conflict, InvalidInput, NotFound
from comfyart.files.inputs import InputStore
from comfyart.files.outputs import OutputStore
from comfyart.models import NewTask
from comfyart.store.keys import Keys
from comfyart.store.stores import Stores
from comfyart.store.workflows import DELETED_RETENTION_S, WorkflowStore
from comfyart.workflows.definition import FileLoad, WorkflowDefinition
from comfyart.workflows.files import load_workflow_files, read_workflow_dir
from comfyart.workflows.parameters import Parameter, ParameterError
from comfyart.workflows.resolve import Resolver
from tests.conftest import ROOT, text_to_image_graph

SEED_MAP = {"seed": Parameter(type="int", target="3.seed", min=0),
            "prompt": Parameter(type="string", target="6.text", required=True)}


def t2i(steps: int = 4, description: str = "") -> WorkflowDefinition:
    return WorkflowDefinition(graph=text_to_image_graph(steps=steps), params=SEED_MAP, description=description)


@pytest.fixture
def workflows(redis_client) -> WorkflowStore:
    return WorkflowStore(redis_client, Keys("t"))


async def test_versions_are_kept_and_identical_content_adds_none(workflows):
    assert astuple(await workflows.put("t2i", t2i()))[:2] == (1, True)
    assert astuple(await workflows.put("t2i", t2i()))[:2] == (1, False)  # same content: same version
    assert astuple(await workflows.put("t2i", t2i(steps=8)))[:2] == (2, True)
    current = await workflows.get("t2i")
    assert current.version == 2 and current.graph["3"]["inputs"]["steps"] == 8 and current.source == "api"
    first = await workflows.get("t2i", 1)
    assert first.graph["3"]["inputs"]["steps"] == 4
    assert first.source == "api" and first.created_ms <= first.updated_ms <= current.updated_ms  # its own times
    assert await workflows.versions("t2i") == [1, 2]
    assert current.created_ms <= current.updated_ms
    [listed] = await workflows.summaries()
    assert listed["name"] == "t2i" and listed["version"] == 2 and set(listed["params"]) == {"seed", "prompt"}
    assert listed["params"]["seed"]["target"] == [{"node": "3", "input": "seed"}]


async def test_conditional_writes(workflows):
    with pytest.raises(Conflict, match="at version 0, not 3"):
        await workflows.put("t2i", t2i(), expected_version=3)
    assert astuple(await workflows.put("t2i", t2i(), expected_version=0))[:2] == (1, True)
    with pytest.raises(Conflict, match="at version 1, not 0"):
        await workflows.put("t2i", t2i(steps=5), expected_version=0)
    assert astuple(await workflows.put("t2i", t2i(steps=5), expected_version=1))[:2] == (2, True)
    with pytest.raises(Conflict):
        await workflows.put("t2i", t2i(steps=6), expected_version=1)
    assert (await workflows.get("t2i")).version == 2


async def test_delete_keeps_versions_for_queued_tasks_and_never_reuses_a_number(workflows, redis_client):
    await workflows.put("t2i", t2i())
    await workflows.put("t2i", t2i(steps=8))
    await workflows.delete("t2i")
    with pytest.raises(NotFound, match="no workflow t2i"):
        await workflows.get("t2i")
    with pytest.raises(NotFound):
        await workflows.delete("t2i")
    assert await workflows.summaries() == []
    # what tasks queued before the delete need stays readable, for a while
    assert (await workflows.definition("t2i", 1)).graph["3"]["inputs"]["steps"] == 4
    assert 0 < await redis_client.ttl("t:workflow-versions:t2i") <= DELETED_RETENTION_S
    assert astuple(await workflows.put("t2i", t2i(steps=9)))[:2] == (3, True)
    assert await redis_client.ttl("t:workflow-versions:t2i") == -1  # alive again: no expiry
    assert await workflows.versions("t2i") == [1, 2, 3]


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


# ---------------------------------------------------------------------------- files at start-up

def write(directory: Path, name: str, content: object) -> Path:
    path = directory / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


async def test_the_shipped_example_workflows_load(workflows):
    found, errors = read_workflow_dir(ROOT / "config" / "workflows")
    assert errors == []
    assert {f.name for f in found} >= {"text-to-image", "image-to-image"}
    report = await load_workflow_files(ROOT / "config" / "workflows", workflows)
    assert report.counts[FileLoad.CREATE] == len(found)
    image = (await workflows.get("image-to-image")).params["image"]
    assert image.type == "image" and image.required


async def test_bad_workflow_files_are_named_and_skipped(workflows, tmp_path):
    graph = text_to_image_graph()
    ui_graph = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": []}
    write(tmp_path, "good-api.json", graph)
    write(tmp_path, "good.json", ui_graph)  # the UI graph, kept beside it
    write(tmp_path, "good.params.yaml", "description: fine\nparams:\n  seed: {type: int, target: 3.seed}\n")
    write(tmp_path, "plain.json", graph)  # an API graph under a plain name
    write(tmp_path, "broken-api.json", '{"3": {"class_type": ')
    write(tmp_path, "uionly.json", ui_graph)
    write(tmp_path, "orphan.params.yaml", "params: {}\n")
    write(tmp_path, "badtarget-api.json", graph)
    write(tmp_path, "badtarget.params.yaml", "params:\n  seed: {type: int, target: 99.seed}\n")
    write(tmp_path, "badyaml-api.json", graph)
    write(tmp_path, "badyaml.params.yaml", "params: [unclosed\n")
    write(tmp_path, "extra-api.json", graph)
    write(tmp_path, "extra.params.yaml", "params: {}\nvram: 8\n")
    write(tmp_path, "bad name-api.json", graph)
    (tmp_path / "binary-api.json").write_bytes(b"\xff\xfe\x00garbage")
    write(tmp_path, "notes.txt", "ignored")

    report = await load_workflow_files(tmp_path, workflows)
    errors = sorted(report.errors)
    expected = [("bad name-api.json", "a workflow name is"),
                ("badtarget.params.yaml", "params.seed: target node '99' is not in the graph"),
                ("badyaml.params.yaml", "not valid YAML"),
                ("binary-api.json", "not UTF-8"),
                ("broken-api.json", "not valid JSON"),
                ("extra.params.yaml", "expected a mapping with 'description' and 'params'"),
                ("orphan.params.yaml", "no orphan-api.json beside it"),
                ("uionly.json", "UI format; export the workflow with 'Export (API)' as uionly-api.json")]
    assert len(errors) == len(expected), errors
    for error, (filename, reason) in zip(errors, expected, strict=True):
        assert error.startswith(f"{filename}: ") and reason in error, error
    assert sorted(w["name"] for w in await workflows.summaries()) == ["good", "plain"]
    good = await workflows.get("good")
    assert good.ui == ui_graph and good.description == "fine" and good.source == "file:good-api.json"


async def test_files_never_overwrite_newer_api_edits(workflows, tmp_path):
    shutil.copy(ROOT / "config/workflows/text-to-image-api.json", tmp_path / "t2i-api.json")
    (tmp_path / "t2i.params.yaml").write_text("params:\n  steps: {type: int, target: 3.steps, default: 20}\n")
    past = time.time() - 3600
    for path in tmp_path.iterdir():
        os.utime(path, (past, past))
    assert (await load_workflow_files(tmp_path, workflows)).counts == {FileLoad.CREATE: 1}
    assert (await load_workflow_files(tmp_path, workflows)).counts == {FileLoad.UNCHANGED: 1}

    edited = (await workflows.get("t2i")).model_copy(update={"description": "edited through the API"})
    await workflows.put("t2i", WorkflowDefinition(**edited.model_dump(include={"graph", "params", "ui",
                                                                              "description"})))
    assert (await load_workflow_files(tmp_path, workflows)).counts == {FileLoad.KEEP_STORED: 1}
    assert (await workflows.get("t2i")).description == "edited through the API"

    # the file is edited after that: now the file is newer, and wins
    (tmp_path / "t2i.params.yaml").write_text("params:\n  steps: {type: int, target: 3.steps, default: 25}\n")
    later = time.time() + 1  # file times are coarser than a millisecond; make "after" unambiguous
    os.utime(tmp_path / "t2i.params.yaml", (later, later))
    assert (await load_workflow_files(tmp_path, workflows)).counts == {FileLoad.REPLACE: 1}
    current = await workflows.get("t2i")
    assert current.version == 3 and current.params["steps"].default == 25 and current.source == "file:t2i-api.json"


async def test_a_missing_directory_is_reported(workflows, tmp_path):
    report = await load_workflow_files(tmp_path / "nope", workflows)
    assert len(report.errors) == 1 and "cannot read the workflow directory" in report.errors[0]
