"""JSON bodies whatever content type they are sent with (api.requests, api.inputs): ``curl -d`` without a
content-type header works, a body that is not JSON is refused naming its type, forms stay forms."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.daemon import make_settings, running_daemon
from tests.support.graphs import basic_graph
from tests.support.paths import ROOT

URLENCODED = {"content-type": "application/x-www-form-urlencoded"}  # what curl -d sends unless told otherwise


@pytest.fixture
async def api(tmp_path: Path, redis_url):
    settings = make_settings(tmp_path, redis_url, workflows={"directory": str(ROOT / "config" / "workflows")})
    async with running_daemon(settings) as client:
        yield client


async def test_json_sent_as_a_form_or_without_a_type_is_read_as_json(api):
    run = json.dumps({"params": {"prompt": "a lighthouse"}, "priority": "high"})
    for headers in (URLENCODED, {"content-type": "text/plain"}, {}):
        created = await api.post("/api/workflows/text-to-image/run", content=run, headers=headers)
        assert created.status_code == 201, created.json()
        assert created.json()["params"]["prompt"] == "a lighthouse" and created.json()["priority"] == 1
        task = await api.post("/api/tasks", content=json.dumps({"prompt": basic_graph()}), headers=headers)
        assert task.status_code == 201, task.json()
    changed = await api.put("/api/scheduler", content=b'{"prefetch": 1}', headers=URLENCODED)
    assert changed.status_code == 200 and changed.json()["prefetch"] == 1


async def test_a_form_sent_to_a_workflow_run_stays_a_form(api):
    form = await api.post("/api/workflows/text-to-image/run", data={"params": '{"prompt": "x"}', "priority": "low"})
    assert form.status_code == 201 and form.json()["params"]["prompt"] == "x", form.json()
    wrong = await api.post("/api/workflows/text-to-image/run", data={"prompt": "x"})
    assert wrong.status_code == 422
    assert wrong.json()["detail"].startswith(
        "unknown form field 'prompt' (body sent as application/x-www-form-urlencoded)")
    assert "content-type: application/json" in wrong.json()["detail"]


@pytest.mark.parametrize("path, method", [
    ("/api/tasks", "POST"), ("/api/workflows/text-to-image/run", "POST"), ("/api/scheduler", "PUT"),
    ("/api/pool/scale", "POST"), ("/api/workflows/x", "PUT"),
    ("/api/workflows/infer", "POST"), ("/api/pool/backends", "POST"),
])
async def test_a_body_that_is_not_json_is_refused_naming_its_type(api, path, method):
    plain = await api.request(method, path, content=b"prompt: a lighthouse", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    assert plain.json()["detail"] == ("body sent as text/plain is not JSON: send a JSON body with "
                                      "'content-type: application/json'")
    declared = await api.request(method, path, content=b"prompt: a lighthouse",
                                 headers={"content-type": "application/json"})
    assert declared.status_code == 400 and declared.json()["detail"] == "body is not valid JSON"


async def test_a_multipart_body_to_a_json_route_is_refused(api):
    response = await api.post("/api/tasks", files={"prompt": ("graph.json", b"{}", "application/json")})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("this route takes JSON, not multipart/form-data")
