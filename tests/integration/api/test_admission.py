"""A new task's graph checked at submission (api.deps.admit, with comfy.validate): ``POST /api/tasks`` refuses what
the pool's ``/object_info`` refuses, with the same ComfyUI error and node_errors that ``POST /prompt`` answers, and
accepts anything while no backend has answered (the backend checks it at dispatch)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.support.daemon import (
    healthy_count,
    make_settings,
    running_daemon,
    static_backends,
    wait_for_pool,
    wait_for_tasks,
)
from tests.support.graphs import basic_graph


def unknown_class() -> dict:
    graph = basic_graph()
    graph["2"]["class_type"] = "NoSuchNode"
    return graph


def dangling_link() -> dict:
    graph = basic_graph()
    graph["2"]["inputs"]["image"] = ["99", 0]
    return graph


def missing_image() -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "does-not-exist.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


BAD_GRAPHS = {
    "unknown class": (unknown_class, {"type": "invalid_prompt",
                                      "message": "Cannot execute because node NoSuchNode does not exist.",
                                      "details": "Node ID '#2'", "extra_info": {}}),
    "no output": (lambda: {"1": basic_graph()["1"]}, {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                                                      "details": "", "extra_info": {}}),
    "dangling link": (dangling_link, None),
    "missing image": (missing_image, None),
}


@pytest.fixture
async def api(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    (emu.base_dir / "input" / "another-clients-upload.png").write_bytes(b"not ours to list")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as client:
        await wait_for_pool(client, lambda pool: healthy_count(pool) == 1)
        yield client


async def test_bad_graphs_are_refused_at_once_as_post_prompt_refuses_them(api):
    for label, (make, error) in BAD_GRAPHS.items():
        ours = await api.post("/api/tasks", json={"prompt": make()})
        comfy = await api.post("/prompt", json={"prompt": make()})
        assert comfy.status_code == 400, label
        # a node class no backend of the fleet has: comfyart's own API says 422, as for a missing model
        assert ours.status_code == (422 if label == "unknown class" else 400), label
        body = ours.json()
        assert body["error"] == comfy.json()["error"] and body["node_errors"] == comfy.json()["node_errors"], label
        assert error is None or body["error"] == error, label
        assert body["detail"] and "\n" not in body["detail"] and len(body["detail"]) <= 300, label
        assert "another-clients-upload" not in ours.text + comfy.text, label
    assert (await api.get("/api/tasks")).json()["total"] == 0  # nothing was queued


async def test_a_link_to_a_missing_node_is_filed_under_the_node_that_links(api):
    body = (await api.post("/api/tasks", json={"prompt": dangling_link()})).json()
    assert body["detail"] == ("Prompt outputs failed validation: node 2 (ImageInvert): an input links to node 99, "
                              "which is not in the graph")
    [error] = body["node_errors"]["2"]["errors"]
    assert body["node_errors"]["2"]["class_type"] == "ImageInvert"
    assert error["type"] == "exception_during_inner_validation" and error["details"] == "'99'"
    assert error["extra_info"]["input_name"] == "images" and error["extra_info"]["linked_node"] == ["2", 0]


async def test_a_missing_image_is_an_invalid_image_file(api):
    body = (await api.post("/api/tasks", json={"prompt": missing_image()})).json()
    assert body["node_errors"]["1"]["errors"] == [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "image - Invalid image file: does-not-exist.png", "extra_info": {"input_name": "image"}}]


async def test_good_graphs_still_run_and_an_uploaded_input_is_let_through(api):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    uploaded = await api.post("/upload/image", files={"image": ("mine.png", buffer.getvalue(), "image/png")})
    name = uploaded.json()["name"]  # stored by comfyart, delivered to the backend that runs the task
    load = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    answers = [await api.post("/api/tasks", json={"prompt": graph}) for graph in (basic_graph(), load)]
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    tasks = await wait_for_tasks(api, [a.json()["id"] for a in answers])
    assert [t["status"] for t in tasks] == ["completed", "completed"], tasks


async def test_without_an_answering_backend_a_graph_is_checked_at_dispatch(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as api:
        for make, _ in BAD_GRAPHS.values():
            assert (await api.post("/api/tasks", json={"prompt": make()})).status_code == 201


async def test_an_infinite_number_is_refused_not_a_crash(api):
    body = json.dumps({"prompt": basic_graph(width=float("inf"))})  # "Infinity": Python's JSON reads it
    for path in ("/api/tasks", "/prompt"):
        answer = await api.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 400, answer.text
        [error] = answer.json()["node_errors"]["1"]["errors"]
        assert error["type"] == "invalid_input_type" and error["extra_info"]["received_value"] == "inf"
