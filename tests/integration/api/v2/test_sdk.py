"""The real ``comfy-sdk`` against ``comfyart serve`` (auth on, three keys, two emulators), pointed at it by
``COMFY_BASE_URL`` and the key (``api_key=`` or ``COMFY_API_KEY``): submit and wait, the job's workflow, a reused
Idempotency-Key, another key's job, a cancel of a queued job, no key at all."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from comfy_sdk import IdempotencyKeyReuse, NotFound, Unauthorized

from tests.support.emulator import EmulatorProcess
from tests.support.graphs import text_to_image_graph
from tests.support.v2 import V2Server, emulators, v2_server, wait_for_job


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[V2Server]:
    """One server for the module: each test reads its own jobs, and counts the prompts it adds."""
    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    workdir = tmp_path_factory.mktemp("sdk")
    with emulators(workdir, 2) as started, v2_server(workdir, redis_server, started) as running:
        yield running


def slow(emulators: list[EmulatorProcess], step_s: float) -> None:
    for emu in emulators:
        emu.control(step_s=step_s)


def test_a_graph_submitted_through_the_sdk_runs_to_succeeded(server: V2Server):
    before = {name: os.environ.get(name) for name in ("COMFY_BASE_URL", "COMFY_API_KEY")}
    prompts = server.prompts_run()
    with server.sdk("alice") as client:
        assert {name: os.environ.get(name) for name in before} == before  # set for the construction only
        job = client.submit(client.workflows.from_json(text_to_image_graph(seed=7)))
        assert job.status == "queued"
        done = job.wait(timeout=60)
        assert done.status == "succeeded" and done.error is None
        assert [o.node_id for o in done.outputs] == ["9"] and done.outputs[0].type == "image"
        workflow = done.get_workflow()
        assert workflow.format == "api" and workflow.graph == text_to_image_graph(seed=7)
        again = client.jobs.get(job.id)
        assert again.id == job.id and again.status == "succeeded"
    assert server.prompts_run() == prompts + 1


async def test_the_async_client_with_its_key_from_the_environment(server: V2Server):
    async with server.async_sdk("bob", key_from_env=True) as client:
        job = await client.submit(client.workflows.from_json(text_to_image_graph(seed=8)))
        await job.wait(timeout=60)
        assert job.status == "succeeded"
        assert (await job.get_workflow()).graph == text_to_image_graph(seed=8)
    with server.http("bob") as bob:  # the job is bob's: the key came from COMFY_API_KEY
        assert bob.get(f"/api/v2/jobs/{job.id}").json()["status"] == "succeeded"
    assert "COMFY_API_KEY" not in os.environ or os.environ["COMFY_API_KEY"] != server.key("bob")


def test_a_reused_idempotency_key_raises_and_runs_one_prompt(server: V2Server):
    prompts = server.prompts_run()
    with server.sdk("alice") as client:
        workflow = client.workflows.from_json(text_to_image_graph(seed=9))
        first = client.submit(workflow, idempotency_key="order-1")
        with pytest.raises(IdempotencyKeyReuse) as reused:
            client.submit(client.workflows.from_json(text_to_image_graph(seed=10)), idempotency_key="order-1")
        assert reused.value.code == "idempotency_key_reuse" and reused.value.http_status == 422
        assert reused.value.details == {"job_id": first.id}
        assert first.wait(timeout=60).status == "succeeded"
    with server.sdk("bob") as other:  # keys live in their owner's namespace
        assert other.submit(workflow, idempotency_key="order-1").wait(timeout=60).status == "succeeded"
    assert server.prompts_run() == prompts + 2


def test_another_keys_job_is_not_found_and_no_key_is_unauthorized(server: V2Server):
    with server.sdk("alice") as alice:
        job = alice.submit(alice.workflows.from_json(text_to_image_graph(seed=11)))
    with server.sdk("bob") as bob, pytest.raises(NotFound):
        bob.jobs.get(job.id)
    with server.sdk(None) as nobody, pytest.raises(Unauthorized):
        nobody.jobs.get(job.id)
    with server.sdk("ops") as admin:  # an admin sees every job
        assert admin.jobs.get(job.id).wait(timeout=60).status == "succeeded"


def test_a_queued_job_is_canceled(server: V2Server):
    prompts = server.prompts_run()
    slow(server.emulators, 1.5)  # 4 steps: each emulator busy for 6 s with one prompt
    try:
        with server.sdk("alice") as client:
            busy = [client.submit(client.workflows.from_json(text_to_image_graph(seed=20 + i))) for i in range(2)]
            with server.http("alice") as http:
                for job in busy:
                    wait_for_job(http, job.id, ("running",), timeout_s=20)
            waiting = client.submit(client.workflows.from_json(text_to_image_graph(seed=30)))
            assert waiting.refresh().status == "queued"
            assert waiting.cancel().status == "canceled"
            assert client.jobs.get(waiting.id).status == "canceled"
            slow(server.emulators, 0.0)
            assert [job.wait(timeout=60).status for job in busy] == ["succeeded", "succeeded"]
    finally:
        slow(server.emulators, 0.0)
    assert server.prompts_run() == prompts + 2  # the canceled job never reached a backend
