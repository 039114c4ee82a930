"""comfyart in front of backends that behave as the newest ComfyUI server (the emulator's ``--newest``): its REST
tasks and ComfyUI-API prompts complete with outputs, the backends accept the prompt ids comfyart mints, and a
prompt's ``extra_data.preview_method`` decides whether its previews reach the client's socket."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.sockets import frames_until_end


async def test_comfyart_runs_tasks_and_prompts_on_newest_backends(tmp_path: Path, redis_url, emulator):
    emus = [emulator("--newest", "--node-seconds", "0.05") for _ in range(2)]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))
    async with running_daemon(settings) as api, httpx.AsyncClient() as plain:
        tasks = [(await api.post("/api/tasks", json={"prompt": basic_graph(color=i, prefix=f"new/{i}")})).json()
                 for i in range(4)]
        prompts = [(await api.post("/prompt", json={"prompt": basic_graph(color=9 + i, prefix="door/p")})).json()
                   for i in range(2)]
        assert all("prompt_id" in p for p in prompts), prompts
        records = await wait_for_tasks(api, [t["id"] for t in tasks])
        assert [r["status"] for r in records] == ["completed"] * 4
        assert all(r["outputs"] for r in records)
        held: dict[str, Any] = {}
        for emu in emus:
            held.update((await plain.get(emu.url + "/history")).json())
        for record in records:
            backend_id = record["prompt_id"]
            assert str(uuid.UUID(backend_id)) == backend_id  # a canonical uuid: the newest server accepts it
            assert held[backend_id]["status"]["status_str"] == "success"
        for prompt in prompts:
            deadline = asyncio.get_running_loop().time() + 30
            while not (entry := (await api.get(f"/history/{prompt['prompt_id']}")).json()):
                assert asyncio.get_running_loop().time() < deadline, "prompt never finished"
                await asyncio.sleep(0.1)
            assert entry[prompt["prompt_id"]]["outputs"]


@pytest.mark.parametrize("configured, expected", [("auto", [3, 3, 0]), ("default", [3, 0, 0])])
async def test_previews_reach_the_client_as_its_prompt_or_the_configured_default_asks(
        tmp_path: Path, redis_url, emulator, configured, expected):
    """Newest ComfyUI previews only a prompt that asks: the client's own choice goes through, and a prompt without one
    gets ``comfyui.preview_method`` ("default": the backend's own, none here)."""
    emus = [emulator("--newest") for _ in range(2)]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus),
                             comfyui={"preview_method": configured})
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        url = f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=viewer"
        async with session.ws_connect(url) as ws:
            await ws.receive()
            counts = []
            for seed, extra in ((1, {"preview_method": "auto"}), (2, {}), (3, {"preview_method": "none"})):
                body = {"prompt": text_to_image_graph(seed=seed, steps=3), "client_id": "viewer", "extra_data": extra}
                prompt_id = (await api.post("/prompt", json=body)).json()["prompt_id"]
                frames = await frames_until_end(ws, prompt_id)
                counts.append(sum(isinstance(f, bytes) for f in frames))
            assert counts == expected


async def test_every_gpu_of_every_newest_backend_and_what_a_node_is_doing_reach_the_client(
        tmp_path: Path, redis_url, emulator):
    """Newest ComfyUI lists every GPU of a multi-GPU server in /system_stats, and says in ``progress_state`` what a
    running node spends its time on (``activity``): comfyart lists every device of every backend, and passes the
    activity on to the prompt's client."""
    emus = [emulator("--newest", "--devices", "2", "--model-load-seconds", "0.2") for _ in range(2)]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        devices = (await api.get("/system_stats")).json()["devices"]
        assert len(devices) == 4
        assert sorted(d["backend"] for d in devices) == ["static:emu0"] * 2 + ["static:emu1"] * 2
        assert len({d["name"] for d in devices}) == 4  # each named by its backend too
        url = f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=watcher"
        async with session.ws_connect(url) as ws:
            await ws.receive()
            body = {"prompt": text_to_image_graph(steps=2), "client_id": "watcher"}
            prompt_id = (await api.post("/prompt", json=body)).json()["prompt_id"]
            frames = await frames_until_end(ws, prompt_id)
        activities = {state.get("activity") for f in frames if isinstance(f, dict) and f["type"] == "progress_state"
                      for state in f["data"]["nodes"].values()}
        assert "loading" in activities
