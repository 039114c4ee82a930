"""Workflow files loaded at start-up (workflows.files) into a real Redis: the shipped examples, bad files named and
skipped, API edits never overwritten by older files."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from comfyart.workflows.definition import FileLoad, WorkflowDefinition
from comfyart.workflows.files import load_workflow_files, read_workflow_dir
from tests.support.graphs import text_to_image_graph
from tests.support.paths import ROOT


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
