"""The web editor's default workflow (ComfyUI frontend 1.58.1's ``defaultGraph``, Z-Image Turbo) sent to comfyart's
ComfyUI front door as the page sends it, over a 0.3.64 and a newest-server emulator: comfyart's validation against
the fleet's ``/object_info`` accepts it, and it runs to a saved image with its sampler's progress and previews."""
from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
from PIL import Image

from tests.support.daemon import make_settings, running_daemon, static_backends
from tests.support.graphs import default_editor_graph
from tests.support.sockets import frames_until_end


async def test_the_default_workflow_runs_through_comfyart_on_either_server(tmp_path: Path, redis_url, emulator):
    emus = [emulator("--preview-method", "auto"), emulator("--newest", "--preview-method", "auto")]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        info = (await api.get("/object_info")).json()
        assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == ["z_image_turbo_bf16.safetensors"]
        url = f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=page"
        async with session.ws_connect(url) as ws:
            await ws.receive()
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            answers = [await api.post("/prompt", json={"prompt": default_editor_graph(), "client_id": "page"})
                       for _ in range(2)]
            assert [a.status_code for a in answers] == [200, 200], answers[0].text
            assert [a.json()["node_errors"] for a in answers] == [{}, {}]
            prompt_ids = {a.json()["prompt_id"] for a in answers}
            frames = await frames_until_end(ws, prompt_ids, timeout_s=60)
        for prompt_id in prompt_ids:
            mine = [f for f in frames if isinstance(f, dict) and f["data"].get("prompt_id") == prompt_id]
            assert [f["data"]["value"] for f in mine if f["type"] == "progress"] == list(range(1, 9))
            assert [f["type"] for f in mine][-2:] == ["execution_success", "executing"]
            entry = (await api.get(f"/history/{prompt_id}")).json()[prompt_id]
            [image] = entry["outputs"]["9"]["images"]
            view = await api.get("/view", params=image)
            with Image.open(io.BytesIO(view.content)) as png:
                assert png.format == "PNG" and png.size == (1024, 1024)
                assert json.loads(png.info["prompt"])["68"]["class_type"] == "EmptySD3LatentImage"
        assert len([f for f in frames if isinstance(f, bytes)]) == 16  # each step's preview
        records = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        assert [r["status"] for r in records] == ["completed", "completed"]
