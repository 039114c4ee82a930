"""The task routes of the REST API (api.tasks): every bad request gets a 4xx with a one-line reason, never a 500;
listing and reading tasks."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import make_settings, running_daemon
from tests.support.graphs import basic_graph


@pytest.fixture
async def api(tmp_path: Path, redis_url):
    async with running_daemon(make_settings(tmp_path, redis_url)) as client:
        yield client


@pytest.mark.parametrize("body, status, reason", [
    (b"this is not json", 400, "body is not valid JSON"),
    (b"[1, 2]", 422, "body must be a JSON object"),
    (b"{}", 422, "missing field 'prompt'"),
    (b'{"prompt": [1]}', 422, "prompt must be a JSON object"),
    (b'{"prompt": {}}', 422, "prompt has no nodes"),
    (b'{"prompt": {"1": {"inputs": {}}}}', 422, "node '1' has no class_type"),
    (b'{"prompt": {"1": "x"}}', 422, "node '1' must be an object"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "urgency": 1}', 422, "unknown field(s): urgency"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "priority": "urgent"}', 422, "priority: must be high, normal, low"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "priority": 101}', 422, "priority: must be high, normal, low"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "requires": "video"}', 422, "requires: a list of tags"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "requires": ["no spaces"]}', 422, "requires: a list of tags"),
    (b'{"prompt": {"1": {"class_type": "A"}}, "vram_mb": 0}', 422, "vram_mb: a whole number"),
])
async def test_bad_submissions(api, body, status, reason):
    response = await api.post("/api/tasks", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert reason in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert (await api.get("/api/pool")).json()["queue_length"] == 0  # nothing was queued


@pytest.mark.parametrize("path, status, reason", [
    ("/api/tasks/01NOSUCHTASK", 404, "no task 01NOSUCHTASK"),
    ("/api/tasks/01NOSUCHTASK/outputs/x.png", 404, "no task"),
    ("/api/tasks?status=exploded", 422, "status: Input should be"),
    ("/api/tasks?limit=0", 422, "limit: Input should be greater than or equal to 1"),
    ("/api/tasks?offset=-1", 422, "offset"),
    ("/api/tasks?offset=9223372036854775808", 422, "offset"),  # past what Redis takes (found by the fuzzer)
    ("/api/workflows/x?version=9223372036854775808", 422, "version"),
])
async def test_bad_reads(api, path, status, reason):
    response = await api.get(path)
    assert response.status_code == status
    assert reason in response.json()["detail"]


async def test_output_of_a_task_that_has_none(api):
    task_id = (await api.post("/api/tasks", json={"prompt": basic_graph()})).json()["id"]
    response = await api.get(f"/api/tasks/{task_id}/outputs/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404


async def test_listing_and_health(api):
    ids = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i)})).json()["id"] for i in range(3)]
    listing = (await api.get("/api/tasks", params={"limit": 2})).json()
    assert [t["id"] for t in listing["tasks"]] == ids[::-1][:2] and listing["total"] == 3
    assert "prompt" not in listing["tasks"][0]
    assert (await api.get("/api/tasks", params={"status": "completed"})).json()["tasks"] == []
    health = (await api.get("/healthz")).json()
    assert health["status"] == "ok" and health["queue_length"] == 3
    assert (await api.get(f"/api/tasks/{ids[0]}")).json()["prompt"] == basic_graph(color=0)
