"""``GET /api/v2/jobs/{id}/events`` (api.v2.events) on a daemon over an emulated backend that sends a sampler's
previews: the status snapshot first, throttled progress, previews that decode to images, every output before the
terminal status, which is the last frame; a finished job's stream; the per-key cap; keepalives; another key's
job; and the comfy-sdk's own ``job.events()`` reading it."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from comfy_low.models import Output, Progress
from comfy_sdk import AsyncComfy
from comfy_sdk import events as sdk_events
from comfy_sdk.events import OutputReady, Preview, StatusChange
from PIL import Image

from comfyart.api.v2 import events as v2_events
from comfyart.api.v2.stream import THROTTLE_S
from tests.integration.api.test_auth import ALICE_KEY, CAROL_KEY, as_key, secured
from tests.support.daemon import healthy_count, make_settings, running_daemon, static_backends, wait_for_pool
from tests.support.graphs import basic_graph, text_to_image_graph

SAMPLER = ("--preview-method", "auto", "--step-seconds", "0.1")
TERMINAL = ("succeeded", "failed", "canceled", "expired")


@pytest.fixture
async def api(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator(*SAMPLER)),
                             api_v2={"max_streams_per_key": 2})
    async with running_daemon(settings) as client:
        await wait_for_pool(client, lambda pool: healthy_count(pool) == 1)
        yield client


async def read_stream(client: httpx.AsyncClient, url: str, *, limit_s: float = 60.0,
                      until: int | None = None) -> tuple[httpx.Response, list[tuple[float, str, Any]]]:
    """Every frame of one stream until it closes (or ``until`` frames): (arrival, event or ':' comment, data)."""
    frames: list[tuple[float, str, Any]] = []
    async with asyncio.timeout(limit_s), client.stream("GET", url, headers={"Accept": "text/event-stream"}) as answer:
        if answer.status_code != 200:
            await answer.aread()
            return answer, frames
        event, data = None, None
        async for line in answer.aiter_lines():
            assert not line.startswith("id:"), "no ids: the contract has no replay"
            if line.startswith(":"):
                frames.append((time.monotonic(), ":", line[1:].strip()))
            elif line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
            elif line == "" and event is not None:
                frames.append((time.monotonic(), event, data))
                event, data = None, None
            if until is not None and len(frames) >= until:
                break
    return answer, frames


async def test_a_running_job_streams_status_progress_previews_outputs_then_its_end(api):
    job = (await api.post("/api/v2/jobs", json={"workflow": text_to_image_graph(steps=12)})).json()
    answer, frames = await read_stream(api, job["urls"]["events"])
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache" and answer.headers["x-accel-buffering"] == "no"
    names = [name for _, name, _ in frames]
    assert names[0] == "status" and frames[0][2]["status"] in ("queued", "running")
    assert names[-1] == "status" and frames[-1][2] == {"status": "succeeded"}, names
    assert [data["status"] for _, name, data in frames if name == "status"][-2:] == ["running", "succeeded"]
    progress = [(at, data) for at, name, data in frames if name == "progress"]
    assert len(progress) >= 2
    for _, data in progress:
        Progress.model_validate(data)
    assert any(data["current_node"] == "3" and data["steps"] == 12 for _, data in progress)
    duration = progress[-1][0] - progress[0][0]
    assert len(progress) <= duration / THROTTLE_S + 3  # throttled: not every 0.25 s write
    previews = [data for _, name, data in frames if name == "preview"]
    assert previews and previews[-1]["node_id"] == "3" and previews[-1]["content_type"] == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(previews[-1]["data_base64"]))) as image:
        assert image.format == "JPEG" and image.size[0] > 0
    outputs = [data for _, name, data in frames if name == "output"]
    done = (await api.get(job["urls"]["self"])).json()
    assert outputs == done["outputs"] and len(outputs) == 1  # the same objects as the job's, before the end
    Output.model_validate(outputs[0])
    assert names.index("output") == len(names) - 2


async def test_a_finished_job_streams_its_outputs_then_its_terminal_status(api):
    job = (await api.post("/api/v2/jobs", json={"workflow": basic_graph()})).json()
    deadline = time.monotonic() + 60
    while (await api.get(job["urls"]["self"])).json()["status"] not in TERMINAL and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    answer, frames = await read_stream(api, job["urls"]["events"], limit_s=10)
    done = (await api.get(job["urls"]["self"])).json()
    assert [(name, data) for _, name, data in frames] == [
        *[("output", output) for output in done["outputs"]], ("status", {"status": "succeeded"})]


async def test_a_key_holds_a_few_streams_and_hears_keepalives_while_nothing_happens(api, monkeypatch):
    monkeypatch.setattr(v2_events, "KEEPALIVE_S", 0.3)
    assert (await api.post("/api/pool/backends/static:emu0/disable")).status_code == 200  # queued, quiet
    job = (await api.post("/api/v2/jobs", json={"workflow": basic_graph()})).json()
    url = job["urls"]["events"]
    first = asyncio.ensure_future(read_stream(api, url, until=3))
    second = asyncio.ensure_future(read_stream(api, url, until=3))
    (_, one), (_, two) = await asyncio.gather(first, second)
    for frames in (one, two):
        assert [name for _, name, _ in frames] == ["status", ":", ":"]
        assert frames[1][2] == "keepalive" and frames[2][0] - frames[1][0] >= 0.2
    held = [asyncio.ensure_future(read_stream(api, url)) for _ in range(2)]
    await asyncio.sleep(0.5)
    refused = await api.get(url)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "too_many_streams"
    for stream in held:
        stream.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    deadline = time.monotonic() + 10  # a stream's slot is given back once it notices its client left
    while (again := await read_stream(api, url, until=1, limit_s=10))[0].status_code == 429:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert again[1][0][1] == "status"


async def test_another_keys_job_is_not_found(tmp_path: Path, redis_url, emulator):
    settings = secured(tmp_path, redis_url, static_backends=static_backends(emulator()))
    async with running_daemon(settings) as api:
        alice, carol = as_key(api, ALICE_KEY), as_key(api, CAROL_KEY)
        async with alice, carol:
            job = (await alice.post("/api/v2/jobs", json={"workflow": basic_graph()})).json()
            other = await carol.get(job["urls"]["events"])
            assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
            answer, frames = await read_stream(alice, job["urls"]["events"])
            assert answer.status_code == 200 and frames[-1][1:] == ("status", {"status": "succeeded"})


async def test_the_comfy_sdk_reads_the_stream_as_typed_events(api, monkeypatch):
    monkeypatch.setenv("COMFY_BASE_URL", str(api.base_url))
    monkeypatch.setenv("COMFY_API_KEY", "unused-auth-is-off")
    async with AsyncComfy() as comfy:
        job = await comfy.submit(comfy.workflows.from_json(text_to_image_graph(steps=10)))
        events = [event async for event in job.events()]
    kinds = [type(event).__name__ for event in events]
    assert isinstance(events[0], StatusChange) and events[0].status in ("queued", "running"), kinds
    assert isinstance(events[-1], StatusChange) and events[-1].status == "succeeded", kinds
    assert any(isinstance(event, sdk_events.Progress) and event.steps == 10 for event in events), kinds
    previews = [event for event in events if isinstance(event, Preview)]
    assert previews and previews[0].node_id == "3"
    with previews[0].to_pil() as image:
        assert image.format == "JPEG"
    ready = [i for i, event in enumerate(events) if isinstance(event, OutputReady)]
    assert len(ready) == 1 and ready[0] == len(events) - 2  # before the terminal status
    output = events[ready[0]]
    assert isinstance(output, OutputReady) and output.output.content_type == "image/png"
