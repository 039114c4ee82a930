"""Graphs no one backend of a heterogeneous fleet can run, refused at submission (issue 21): 422 on comfyart's API
(tasks and workflow runs) and ComfyUI's own 400 on ``POST /prompt``, naming what is missing, with nothing queued;
against emulators that differ in node classes and checkpoints, and a real Redis."""
from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.daemon import make_settings, running_daemon
from tests.support.fleet import all_healthy, checkpoint_and_nodes_graph, checkpoint_graph, named, start_fleet
from tests.support.graphs import basic_graph

SDXL, SD15 = "sdxl.safetensors", "sd15.safetensors"


async def nothing_queued(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/tasks")).json()["total"] == 0
    assert (await api.get("/api/pool")).json()["queue_length"] == 0
    assert (await api.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_a_node_class_no_backend_has_is_refused_everywhere_naming_it(tmp_path: Path, redis_url, emulator):
    fleet = start_fleet(emulator, [[SDXL], [SD15]], [["ImageInvert"], ["ImageInvert", "ImageScale"]])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet))
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        ours = await api.post("/api/tasks", json={"prompt": basic_graph()})
        comfy = await api.post("/prompt", json={"prompt": basic_graph()})
        saved = await api.put("/api/workflows/invert", json={"graph": basic_graph(), "params": {}})
        run = await api.post("/api/workflows/invert/run", json={})
        await nothing_queued(api)
    assert ours.status_code == 422, ours.text
    assert ours.json()["detail"] == "no backend has node ImageInvert (Node ID '#2')"
    assert comfy.status_code == 400
    assert comfy.json() == {"error": {"type": "invalid_prompt",
                                      "message": "Cannot execute because node ImageInvert does not exist.",
                                      "details": "Node ID '#2'", "extra_info": {}}, "node_errors": {}}
    assert saved.status_code == 201  # a workflow is kept whatever the fleet has now; a run of it is checked
    assert run.status_code == 422 and run.json()["detail"] == ours.json()["detail"], run.text


async def test_a_checkpoint_on_one_backend_and_node_classes_on_another_are_refused(tmp_path: Path, redis_url,
                                                                                  emulator):
    """emu0 has the checkpoint but neither node class, emu1 both node classes but not the checkpoint: the fleet's
    merged /object_info has all of it, no backend has. ComfyUI's shape is the refusal of the backend that lacks
    the least (emu1: the checkpoint)."""
    fleet = start_fleet(emulator, [[SDXL], [SD15]], [["ImageInvert", "ImageAddNoise"], []])
    settings = make_settings(tmp_path, redis_url, static_backends=named(fleet))
    graph = checkpoint_and_nodes_graph(SDXL)
    async with running_daemon(settings) as api:
        await all_healthy(api, 2)
        ours = await api.post("/api/tasks", json={"prompt": graph})
        comfy = await api.post("/prompt", json={"prompt": graph})
        runnable = [await api.post("/api/tasks", json={"prompt": checkpoint_and_nodes_graph(SD15)}),
                    await api.post("/api/tasks", json={"prompt": checkpoint_graph(SDXL)})]
    assert ours.status_code == 422, ours.text
    detail = ours.json()["detail"]
    assert detail.startswith("no backend has all it needs: ") and "node ImageInvert" in detail, detail
    assert f"ckpt_name '{SDXL}'" in detail and detail.endswith("(node 4)"), detail
    assert comfy.status_code == 400
    body = comfy.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = body["node_errors"]["4"]["errors"]
    assert error["type"] == "value_not_in_list" and error["extra_info"]["received_value"] == SDXL
    assert body["node_errors"]["4"]["class_type"] == "CheckpointLoaderSimple"
    assert ours.json()["node_errors"] == body["node_errors"]
    assert [a.status_code for a in runnable] == [201, 201], [a.text for a in runnable]  # each fits one backend
