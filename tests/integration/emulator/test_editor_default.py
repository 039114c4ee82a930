"""The web editor's default workflow (ComfyUI frontend 1.58.1's ``defaultGraph``, Z-Image Turbo) on a plain
emulator, as 0.3.64 and as the newest server: its models are there, it runs to a saved image with its sampler's
progress and previews, and without its models it is refused as ComfyUI refuses it."""
from __future__ import annotations

import io
import json
import struct

import aiohttp
import httpx
import pytest
from PIL import Image

from tests.support.graphs import default_editor_graph
from tests.support.sockets import frames_until_quiet

SAMPLER, SAVER = "70", "9"


async def _run(url: str, body: dict) -> list:
    """The frames the page's socket hears for ``body``, sent as the page sends it (its client id, previews with
    metadata)."""
    socket_url = url.replace("http", "ws") + "/ws?clientId=p"
    async with aiohttp.ClientSession() as session, session.ws_connect(socket_url) as ws:
        await ws.receive()
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        await ws.receive()
        async with session.post(url + "/prompt", json={**body, "client_id": "p"}) as answer:
            assert answer.status == 200, await answer.text()
        return await frames_until_quiet(ws, 1.0)


def test_a_plain_emulator_holds_the_default_workflows_models(emulator):
    url = emulator().url
    for folder, name in (("text_encoders", "qwen_3_4b.safetensors"), ("vae", "ae.safetensors"),
                         ("diffusion_models", "z_image_turbo_bf16.safetensors")):
        assert httpx.get(f"{url}/models/{folder}").json() == [name]
    info = httpx.get(url + "/object_info").json()
    assert info["VAELoader"]["input"]["required"]["vae_name"] == [["ae.safetensors", "pixel_space"]]
    assert info["CLIPLoader"]["input"]["required"]["clip_name"] == [["qwen_3_4b.safetensors"]]
    assert info["EmptySD3LatentImage"]["display_name"] is None


@pytest.mark.parametrize("flavour", [(), ("--newest",)])
async def test_the_default_workflow_runs_to_a_saved_image_with_progress_and_previews(emulator, flavour):
    emu = emulator(*flavour, "--preview-method", "auto")
    frames = await _run(emu.url, {"prompt": default_editor_graph()})
    texts = [f for f in frames if isinstance(f, dict)]
    assert [(f["data"]["value"], f["data"]["node"]) for f in texts if f["type"] == "progress"] == [
        (step, SAMPLER) for step in range(1, 9)]
    previews = [f for f in frames if isinstance(f, bytes)]
    assert len(previews) == 8 and {struct.unpack(">I", f[:4])[0] for f in previews} == {4}
    length = struct.unpack(">I", previews[0][4:8])[0]
    assert json.loads(previews[0][8:8 + length])["node_id"] == SAMPLER
    assert texts[-2]["type"] == "status" and texts[-1] == {
        "type": "executing", "data": {"node": None, "prompt_id": texts[-1]["data"]["prompt_id"]}}
    [executed] = [f["data"] for f in texts if f["type"] == "executed"]
    [image] = executed["output"]["images"]
    assert executed["node"] == SAVER and image == {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}
    with Image.open(io.BytesIO(httpx.get(emu.url + "/view", params=image).content)) as png:
        assert png.format == "PNG" and png.size == (1024, 1024)
        assert json.loads(png.info["prompt"])["70"]["inputs"]["sampler_name"] == "res_multistep"
    history = httpx.get(f"{emu.url}/history/{texts[-1]['data']['prompt_id']}").json()
    assert [entry["status"]["status_str"] for entry in history.values()] == ["success"]
    stats = httpx.get(emu.url + "/emulator/stats").json()  # UNETLoader loads a model as a checkpoint loader does
    assert stats["model_loads"] == 1 and stats["loaded_model"] == "z_image_turbo_bf16.safetensors"


def test_without_its_models_the_default_workflow_is_refused_as_comfyui_refuses_it(emulator):
    emu = emulator("--models", "")
    answer = httpx.post(emu.url + "/prompt", json={"prompt": default_editor_graph()})
    assert answer.status_code == 400
    errors = answer.json()["node_errors"]
    assert sorted(errors) == ["62", "63", "66"]
    assert errors["63"]["errors"][0]["details"] == "vae_name: 'ae.safetensors' not in ['pixel_space']"
    assert errors["66"]["errors"][0]["details"] == "unet_name: 'z_image_turbo_bf16.safetensors' not in []"
