"""The emulator as the newest ComfyUI server (``--newest``, emulator.newest): prompt ids, usage source and secrets,
the jobs API, previews only where a prompt asks for them, a loading node's activity, several devices; 0.3.64 mode
keeps its own answers."""
from __future__ import annotations

import json
import struct
import uuid

import aiohttp
import httpx

from tests.support.emulator import wait_history
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.sockets import frames_until_quiet


def test_the_newest_server_refuses_a_prompt_id_that_is_not_a_canonical_uuid(emulator):
    new, old = emulator("--newest"), emulator()
    answer = httpx.post(new.url + "/prompt", json={"prompt": basic_graph(), "prompt_id": "comfyart-1"})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_prompt_id" and answer.json()["node_errors"] == {}
    assert httpx.post(old.url + "/prompt", json={"prompt": basic_graph(), "prompt_id": "comfyart-1"}).status_code == 200
    mine = str(uuid.uuid4())
    answer = httpx.post(new.url + "/prompt", json={"prompt": basic_graph(), "prompt_id": mine})
    assert answer.json()["prompt_id"] == mine
    assert wait_history(new.url, mine)["status"]["status_str"] == "success"


def test_the_newest_server_keeps_the_usage_source_drops_secrets_and_lists_jobs(emulator):
    emu = emulator("--newest")
    body = {"prompt": basic_graph(), "extra_data": {"auth_token_comfy_org": "secret", "api_key_comfy_org": "key"}}
    pid = httpx.post(emu.url + "/prompt", json=body, headers={"Comfy-Usage-Source": "tests"}).json()["prompt_id"]
    entry = wait_history(emu.url, pid)
    extra = entry["prompt"][3]
    assert extra["comfy_usage_source"] == "tests" and isinstance(extra["create_time"], int)
    assert "secret" not in json.dumps(entry) and "key" not in json.dumps(extra)
    listed = httpx.get(emu.url + "/api/jobs", params={"status": "completed,failed,cancelled", "limit": 200}).json()
    assert [j["id"] for j in listed["jobs"]] == [pid] and listed["jobs"][0]["status"] == "completed"
    assert listed["pagination"] == {"offset": 0, "limit": 200, "total": 1, "has_more": False}
    assert listed["jobs"][0]["preview_output"]["filename"].startswith("basic_")
    job = httpx.get(f"{emu.url}/api/jobs/{pid}").json()
    assert job["outputs"] == entry["outputs"] and job["workflow"]["prompt"] == basic_graph()
    assert httpx.get(f"{emu.url}/api/jobs/{uuid.uuid4()}").status_code == 404
    assert httpx.get(emu.url + "/api/jobs", params={"status": "done"}).status_code == 400
    bad = httpx.post(emu.url + "/api/jobs/cancel", json={"job_ids": ["x"]})
    assert bad.status_code == 400 and bad.json()["invalid_ids"] == ["x"]
    assert httpx.post(f"{emu.url}/api/jobs/{pid}/cancel").json() == {"cancelled": False}
    assert httpx.get(emulator().url + "/api/jobs").status_code == 404  # 0.3.64 has no jobs API


async def _run(url: str, body: dict, metadata: bool = True) -> list:
    socket_url = url.replace("http", "ws") + "/ws?clientId=c"
    async with aiohttp.ClientSession() as session, session.ws_connect(socket_url) as ws:
        await ws.receive()
        if metadata:
            await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            await ws.receive()
        async with session.post(url + "/prompt", json={**body, "client_id": "c"}) as answer:
            assert answer.status == 200, await answer.text()
        return await frames_until_quiet(ws, 1.0)


async def test_previews_come_only_for_a_prompt_that_asks_for_them(emulator):
    new, old = emulator("--newest"), emulator()
    graph = text_to_image_graph(steps=3)
    asked = await _run(new.url, {"prompt": graph, "extra_data": {"preview_method": "auto"}})
    previews = [f for f in asked if isinstance(f, bytes)]
    assert len(previews) == 3
    kind, length = struct.unpack(">II", previews[0][:8])
    assert kind == 4 and json.loads(previews[0][8:8 + length])["image_type"] == "image/jpeg"
    for extra in ({}, {"preview_method": "default"}, {"preview_method": "none"}):
        frames = await _run(new.url, {"prompt": text_to_image_graph(seed=len(extra) + 5, steps=3), "extra_data": extra})
        assert not [f for f in frames if isinstance(f, bytes)], extra
    ignored = await _run(old.url, {"prompt": graph, "extra_data": {"preview_method": "auto"}})
    assert not [f for f in ignored if isinstance(f, bytes)]  # 0.3.64: only --preview-method decides
    launched = emulator("--newest", "--preview-method", "latent2rgb")
    legacy = await _run(launched.url, {"prompt": graph}, metadata=False)
    assert [struct.unpack(">II", f[:8]) for f in legacy if isinstance(f, bytes)] == [(1, 1)] * 3


async def test_a_loading_checkpoint_loader_reports_its_activity_on_the_newest_server(emulator):
    new, old = emulator("--newest", "--model-load-seconds", "0.2"), emulator("--model-load-seconds", "0.2")
    for emu, expected in ((new, ["loading"]), (old, [])):
        frames = await _run(emu.url, {"prompt": text_to_image_graph(steps=1)})
        activities = [state["activity"] for f in frames if isinstance(f, dict) and f["type"] == "progress_state"
                      for state in f["data"]["nodes"].values() if "activity" in state]
        assert activities == expected


def test_the_newest_server_lists_every_device_and_its_version(emulator):
    new = httpx.get(emulator("--newest", "--devices", "3", "--gpu", "2").url + "/system_stats").json()
    assert [d["index"] for d in new["devices"]] == [0, 1, 2] and new["devices"][0]["name"].startswith("cuda:0")
    assert new["system"]["comfyui_version"] != "0.3.64" and "deploy_environment" in new["system"]
    old = httpx.get(emulator("--devices", "3", "--gpu", "2").url + "/system_stats").json()
    assert len(old["devices"]) == 1 and old["system"]["comfyui_version"] == "0.3.64"
    features = httpx.get(emulator("--newest").url + "/features").json()
    assert features["node_replacements"] is True and features["supports_preview_metadata"] is True
