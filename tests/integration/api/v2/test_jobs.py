"""Comfy API v2 jobs (api.v2.jobs) on a daemon over an emulated backend: a submission answers 201 and a Job the
SDK's models read, polls to succeeded; an Idempotency-Key makes one job at most; another client's job is not
found; UI exports and graphs the fleet refuses are 422 in the v2 envelope."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from comfy_low.models import Job

from tests.integration.api.test_auth import ALICE_KEY, CAROL_KEY, as_key, secured
from tests.support.daemon import healthy_count, make_settings, running_daemon, static_backends, wait_for_pool
from tests.support.graphs import basic_graph, text_to_image_graph


@pytest.fixture
async def api(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator()))
    async with running_daemon(settings) as client:
        await wait_for_pool(client, lambda pool: healthy_count(pool) == 1)
        yield client


async def polled(client: httpx.AsyncClient, url: str, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.get(url)).json()
        if job["status"] in ("succeeded", "failed", "canceled", "expired") or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.1)


async def test_a_job_is_submitted_and_polled_to_succeeded(api):
    submitted = await api.post("/api/v2/jobs", json={"workflow": basic_graph()})
    assert submitted.status_code == 201
    job = submitted.json()
    Job.model_validate(job)  # what the SDK checks strictly
    assert job["status"] == "queued" and submitted.headers["location"] == job["urls"]["self"]
    assert job["urls"]["self"] == f"{api.base_url}/api/v2/jobs/{job['id']}"
    done = await polled(api, job["urls"]["self"])
    Job.model_validate(done)
    assert done["status"] == "succeeded" and done["outputs"] and done["outputs"][0]["type"] == "image"
    workflow = (await api.get(f"/api/v2/jobs/{job['id']}/workflow")).json()
    assert workflow == {"workflow": basic_graph(), "format": "api"}
    cancel = await api.post(job["urls"]["cancel"])  # a finished job: answered as it is
    assert cancel.status_code == 200 and cancel.json()["status"] == "succeeded"


async def test_an_idempotency_key_makes_one_job_at_most(api):
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post("/api/v2/jobs", json={"workflow": basic_graph()}, headers=headers)
    again = await api.post("/api/v2/jobs", json={"workflow": basic_graph(color=1)}, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 422
    assert again.json() == {"error": {"code": "idempotency_key_reuse", "message": again.json()["error"]["message"],
                                      "details": {"job_id": first.json()["id"]}}}
    assert (await api.get("/api/tasks")).json()["total"] == 1
    bad = await api.post("/api/v2/jobs", json={"workflow": basic_graph()}, headers={"Idempotency-Key": ""})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


async def test_a_refused_graph_frees_its_key_and_answers_in_the_v2_envelope(api):
    headers = {"Idempotency-Key": "k-1"}
    broken = basic_graph()
    broken["2"]["inputs"]["image"] = ["99", 0]
    refused = await api.post("/api/v2/jobs", json={"workflow": broken}, headers=headers)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_workflow" and "2" in error["details"]["node_errors"]
    ui = await api.post("/api/v2/jobs", json={"workflow": {"nodes": [], "links": [], "last_node_id": 0}})
    assert ui.status_code == 422 and ui.json()["error"]["code"] == "workflow_format_ui"
    not_json = await api.post("/api/v2/jobs", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_request"
    missing = await api.get("/api/v2/jobs/01NOSUCHJOB")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["message"] == "no job 01NOSUCHJOB"  # v2's word for a task
    assert (await api.get("/api/tasks")).json()["total"] == 0
    assert (await api.post("/api/v2/jobs", json={"workflow": basic_graph()}, headers=headers)).status_code == 201


async def test_another_clients_job_is_not_found(tmp_path: Path, redis_url, emulator):
    settings = secured(tmp_path, redis_url, static_backends=static_backends(emulator()))
    async with running_daemon(settings) as api:
        alice, carol = as_key(api, ALICE_KEY), as_key(api, CAROL_KEY)
        job = (await alice.post("/api/v2/jobs", json={"workflow": basic_graph()},
                                headers={"Idempotency-Key": "same"})).json()
        for path in ("", "/workflow"):
            theirs = await carol.get(f"/api/v2/jobs/{job['id']}{path}")
            assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "not_found"
        assert (await carol.post(f"/api/v2/jobs/{job['id']}/cancel")).status_code == 404
        # keys live in their owner's namespace: carol's "same" is her own
        assert (await carol.post("/api/v2/jobs", json={"workflow": basic_graph()},
                                 headers={"Idempotency-Key": "same"})).status_code == 201
        assert (await alice.get(f"/api/v2/jobs/{job['id']}")).status_code == 200
        await alice.aclose()
        await carol.aclose()


async def test_a_running_jobs_cancel_answers_canceling_until_its_backend_confirms(tmp_path: Path, redis_url,
                                                                                   emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator("--step-seconds", "0.1")))
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda pool: healthy_count(pool) == 1)
        job = (await api.post("/api/v2/jobs", json={"workflow": text_to_image_graph(steps=100)})).json()
        deadline = time.monotonic() + 30
        while (await api.get(job["urls"]["self"])).json()["status"] != "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        asked = await api.post(job["urls"]["cancel"])
        assert asked.status_code == 200 and asked.json()["status"] == "canceling"
        Job.model_validate(asked.json())
        task = (await api.get(f"/api/tasks/{job['id']}")).json()
        assert task["cancel_asked_ms"] is not None  # in Redis: every comfyart process shows canceling
        assert (await api.post(job["urls"]["cancel"])).json()["status"] in ("canceling", "canceled")
        done = await polled(api, job["urls"]["self"])
        assert done["status"] == "canceled" and done["completed_at"] is not None
