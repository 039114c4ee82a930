"""Reading a task's outputs (api.tasks) from a daemon with an emulated backend: the first output without its name
(``/output``, optionally waiting for the run), HEAD on every file route, ranges, and the answers of a task with no
output to give."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph

FILE_HEADERS = ("content-type", "content-length", "content-disposition", "etag", "last-modified", "accept-ranges")


@pytest.fixture
def emu(emulator):
    return emulator("--step-seconds", "0.2")  # a run of 10 steps takes about 2 s: long enough to ask during it


@pytest.fixture
async def api(tmp_path: Path, redis_url, emu):
    async with running_daemon(make_settings(tmp_path, redis_url, static_backends=static_backends(emu))) as client:
        yield client


async def test_the_first_output_needs_no_name_and_waits_for_the_run(api):
    task_id = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=5, steps=10)})).json()["id"]
    early = await api.get(f"/api/tasks/{task_id}/output")
    assert early.status_code == 409
    assert early.json()["detail"].startswith(f"task {task_id} is still ") and "?wait=SECONDS" in early.json()["detail"]
    short = await api.get(f"/api/tasks/{task_id}/output", params={"wait": 0.2})
    assert short.status_code == 409 and "after waiting 0.2 s" in short.json()["detail"]

    waited = await api.get(f"/api/tasks/{task_id}/output", params={"wait": 60})
    answered_ms = time.time() * 1000
    [task] = await wait_for_tasks(api, [task_id], timeout_s=1)
    [output] = task["outputs"]
    assert waited.status_code == 200 and hashlib.sha256(waited.content).hexdigest() == output["sha256"]
    # woken by the task's end, not by the record read again every few seconds
    assert answered_ms - task["finished_ms"] < 1500
    named = await api.get(f"/api/tasks/{task_id}/outputs/{output['filename']}")
    assert named.content == waited.content
    assert waited.headers["content-disposition"] == f'attachment; filename="{output["filename"]}"'
    assert waited.headers["content-type"] == "image/png"
    assert all(waited.headers[h] == named.headers[h] for h in FILE_HEADERS)


async def test_head_answers_every_file_route_as_get_does_without_a_body(api):
    task_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
    [task] = await wait_for_tasks(api, [task_id])
    name = task["outputs"][0]["filename"]
    for path in (f"/api/tasks/{task_id}/output", f"/api/tasks/{task_id}/outputs/{name}"):
        got, head = await api.get(path), await api.head(path)
        assert head.status_code == got.status_code == 200 and head.content == b""
        assert all(head.headers[h] == got.headers[h] for h in FILE_HEADERS)
        assert int(head.headers["content-length"]) == task["outputs"][0]["size"]
        ranged = await api.get(path, headers={"range": "bytes=0-7"})
        assert ranged.status_code == 206 and ranged.content == b"\x89PNG\r\n\x1a\n"
    for path in (f"/api/tasks/{task_id}/outputs/other.png", "/api/tasks/01NOSUCH/output"):
        got, head = await api.get(path), await api.head(path)
        assert head.status_code == got.status_code == 404 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
    page, head = await api.get("/"), await api.head("/")
    assert head.status_code == page.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == page.headers["content-length"]


async def test_a_task_with_no_output_to_give(api, emu):
    nothing = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    empty_id = (await api.post("/api/tasks", json={"prompt": nothing})).json()["id"]
    emu.control(fail_node_types=["ImageInvert"])
    failed_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
    empty, failed = await wait_for_tasks(api, [empty_id, failed_id])
    assert (empty["status"], empty["outputs"], failed["status"]) == ("completed", [], "failed")

    response = await api.get(f"/api/tasks/{empty_id}/output", params={"wait": 5})
    assert response.status_code == 404 and response.json()["detail"] == f"task {empty_id} completed with no output"
    response = await api.get(f"/api/tasks/{failed_id}/output", params={"wait": 5})
    assert response.status_code == 409 and response.json()["detail"] == f"task {failed_id} is failed: it has no output"
    response = await api.get(f"/api/tasks/{failed_id}/output", params={"wait": 301})
    assert response.status_code == 422 and "wait" in response.json()["detail"]
