"""The ComfyUI-compatible API (api.comfyui) route by route, against a real redis-server and emulator processes as
static backends. A ComfyUI client library from PyPI (comfy-api-simplified), used unmodified, drives the cluster as if
it were one ComfyUI."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from PIL import Image

from tests.support.daemon import make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.sockets import frames_until_end


def kinds(frames: list[Any], prompt_id: str) -> list[str]:
    return [f["type"] for f in frames if isinstance(f, dict) and f["data"].get("prompt_id") == prompt_id]


async def test_a_comfyui_client_runs_prompts_on_the_cluster_with_comfyuis_messages(tmp_path: Path, redis_url,
                                                                                     emulator):
    emus = [emulator("--node-seconds", "0.05") for _ in range(2)]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        base = str(api.base_url)
        async with session.ws_connect(f"{base.replace('http', 'ws')}/ws?clientId=me") as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                        "sid": "me"}}
            mine = str(uuid.uuid4())
            answers = [await api.post("/prompt", json={"prompt": basic_graph(color=i, prefix="door/p"),
                                                       "client_id": "me", **({"prompt_id": mine} if i == 0 else {})})
                       for i in range(4)]
            assert [a.status_code for a in answers] == [200] * 4
            bodies = [a.json() for a in answers]
            assert bodies[0]["prompt_id"] == mine  # a client's own prompt id is honoured
            assert [b["node_errors"] for b in bodies] == [{}] * 4
            numbers = [b["number"] for b in bodies]
            assert numbers == sorted(numbers) and len(set(numbers)) == 4
            prompt_ids = {b["prompt_id"] for b in bodies}
            frames = await frames_until_end(ws, prompt_ids)

        for prompt_id in prompt_ids:
            sequence = kinds(frames, prompt_id)
            # ComfyUI's order, with the end sent once comfyart stored the outputs
            assert sequence[:2] == ["execution_start", "execution_cached"], sequence
            assert sequence[-2:] == ["execution_success", "executing"], sequence
            assert sequence.index("executed") < sequence.index("execution_success")
            executing = [f["data"]["node"] for f in frames if isinstance(f, dict) and f["type"] == "executing"
                         and f["data"].get("prompt_id") == prompt_id]
            assert executing == ["1", "2", "3", None]
        status_frames = [f for f in frames if isinstance(f, dict) and f["type"] == "status"]
        assert status_frames[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0

        records = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
        assert {r["backend"] for r in records} == {"static:emu0", "static:emu1"}  # the whole cluster ran them

        history = (await api.get("/history")).json()
        assert set(history) == prompt_ids
        entry = (await api.get(f"/history/{mine}")).json()[mine]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert entry["prompt"][1] == mine and entry["prompt"][4] == ["3"]
        [image] = entry["outputs"]["3"]["images"]
        executed = next(f for f in frames if isinstance(f, dict) and f["type"] == "executed"
                        and f["data"]["prompt_id"] == mine)
        assert executed["data"]["output"]["images"] == [image]  # the live frame names what /view serves
        view = await api.get("/view", params=image)
        assert view.status_code == 200 and view.headers["content-type"] == "image/png"
        task = next(r for r in records if r["comfy_prompt_id"] == mine)
        assert hashlib.sha256(view.content).hexdigest() == task["outputs"][0]["sha256"]
        assert (await api.get("/api/view", params=image)).content == view.content
        for path in ("/view", "/api/view"):  # HEAD, as ComfyUI's aiohttp answers it: the GET's headers, no body
            head = await api.head(path, params=image)
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["content-length"] == str(len(view.content)), path
        assert (await api.head("/view", params={**image, "filename": "nope.png"})).status_code == 404
        assert (await api.get("/view", params={**image, "filename": "nope.png"})).status_code == 404
        assert (await api.get("/view", params={**image, "filename": "../x.png"})).status_code == 400

        assert (await api.post("/history", json={"delete": [mine]})).status_code == 200
        assert mine not in (await api.get("/api/history")).json()
        assert (await api.get(f"/history/{mine}")).json() == {}
        assert len((await api.get("/history", params={"max_items": 2})).json()) == 2
        assert (await api.get("/history", params={"max_items": "x"})).status_code == 400


async def test_bad_prompts_get_comfyuis_400_and_nothing_is_queued(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api:
        unknown = await api.post("/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["type"] == "invalid_prompt"
        assert unknown.json()["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."
        graph = basic_graph()
        graph["1"]["inputs"]["width"] = 0
        bad = await api.post("/api/prompt", json={"prompt": graph})
        assert bad.status_code == 400
        body = bad.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert body["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
        assert body["node_errors"]["1"]["dependent_outputs"] == ["3"]
        assert body["node_errors"]["1"]["class_type"] == "EmptyImage"
        assert (await api.post("/prompt", json={"nothing": 1})).json()["error"]["type"] == "no_prompt"
        not_json = await api.post("/prompt", content=b"{not json")
        assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_json"
        no_outputs = await api.post("/prompt", json={"prompt": {"1": basic_graph()["1"]}})
        assert no_outputs.json()["error"]["type"] == "prompt_no_outputs"
        assert (await api.get("/api/tasks")).json()["total"] == 0
        # the pool's /object_info, merged and served
        info = (await api.get("/object_info")).json()
        # gzipped for a client that takes it (the editor's, at every load: a large fleet's runs to megabytes)
        zipped = await api.get("/comfy/api/object_info", headers={"Accept-Encoding": "gzip"})
        plain = await api.get("/comfy/api/object_info", headers={"Accept-Encoding": "identity"})
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        assert zipped.json() == plain.json() == info and len(zipped.content) == len(plain.content)
        assert int(zipped.headers["content-length"]) < len(plain.content) / 3
        assert info["EmptyImage"]["output"] == ["IMAGE"]
        assert (await api.get("/object_info/SaveImage")).json()["SaveImage"]["output_node"] is True
        assert (await api.get("/api/object_info/Nope")).json() == {}
        stats = (await api.get("/system_stats")).json()
        assert stats["devices"] and stats["devices"][0]["name"].startswith("static:emu0: ")
        assert (await api.get("/embeddings")).status_code == 200
        assert (await api.get("/features")).json()["supports_preview_metadata"] is True


async def test_queue_interrupt_and_jobs_api(tmp_path: Path, redis_url, emulator):
    emu = emulator("--step-seconds", "0.1")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        base = str(api.base_url)
        async with session.ws_connect(f"{base.replace('http', 'ws')}/api/ws?clientId=q") as ws:
            await ws.receive()
            ids = [(await api.post("/prompt", json={"prompt": text_to_image_graph(seed=i, steps=40),
                                                    "client_id": "q"})).json()["prompt_id"] for i in range(3)]
            for _ in range(100):
                queue = (await api.get("/queue")).json()
                if queue["queue_running"]:
                    break
                await asyncio.sleep(0.1)
            assert [item[1] for item in queue["queue_running"]] == [ids[0]]
            assert sorted(item[1] for item in queue["queue_pending"]) == sorted(ids[1:])
            assert (await api.get("/prompt")).json()["exec_info"]["queue_remaining"] == 3
            assert (await api.post("/queue", json={"delete": [ids[2]]})).status_code == 200
            assert [item[1] for item in (await api.get("/queue")).json()["queue_pending"]] == [ids[1]]
            jobs = (await api.get("/api/jobs", params={"status": "cancelled"})).json()
            assert [j["id"] for j in jobs["jobs"]] == [ids[2]] and jobs["pagination"]["total"] == 1
            assert (await api.post("/interrupt", json={"prompt_id": ids[0]})).status_code == 200
            frames = await frames_until_end(ws, {ids[0]})
            assert kinds(frames, ids[0])[-2:] == ["execution_interrupted", "executing"]
            assert (await api.post(f"/api/jobs/{ids[1]}/cancel")).json() == {"cancelled": True}
            assert (await api.post(f"/api/jobs/{ids[1]}/cancel")).json() == {"cancelled": False}
        one = (await api.get(f"/api/jobs/{ids[0]}")).json()
        assert one["status"] == "cancelled" and one["execution_status"]["completed"] is False
        assert (await api.get("/api/jobs/nope")).status_code == 404
        page = (await api.get("/api/jobs", params={"limit": 2, "sort_order": "asc"})).json()
        assert [j["id"] for j in page["jobs"]] == ids[:2] and page["pagination"]["has_more"] is True
        assert (await api.get("/api/jobs", params={"status": "bogus"})).status_code == 400
        history = (await api.get(f"/history/{ids[0]}")).json()[ids[0]]
        assert history["status"]["status_str"] == "error"
        assert history["status"]["messages"][-1][0] == "execution_interrupted"
        # the backend's own message (ComfyUI's node and type), not one comfyart made up
        assert history["status"]["messages"][-1][1]["node_type"] == "KSampler"
        assert (await api.get(f"/history/{ids[2]}")).json() == {}  # deleted from the queue: never in history


async def test_an_uploaded_image_reaches_whichever_backend_runs_the_prompt(tmp_path: Path, redis_url, emulator):
    emus = [emulator(), emulator()]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))
    picture = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 10, 10)).save(picture, format="PNG")
    async with running_daemon(settings) as api:
        uploaded = await api.post("/upload/image", files={"image": ("mine.png", picture.getvalue(), "image/png")})
        assert uploaded.status_code == 200
        name = uploaded.json()["name"]
        assert uploaded.json()["type"] == "input"
        not_image = await api.post("/upload/image", files={"image": ("x.png", b"plain text", "image/png")})
        assert not_image.status_code == 415
        graph = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "up"}}}
        ids = [(await api.post("/prompt", json={"prompt": graph})).json()["prompt_id"] for _ in range(4)]
        records = await wait_for_tasks(api, [t["id"] for t in (await api.get("/api/tasks")).json()["tasks"]])
        assert {r["status"] for r in records} == {"completed"}, records
        for prompt_id in ids:
            [image] = (await api.get(f"/history/{prompt_id}")).json()[prompt_id]["outputs"]["2"]["images"]
            with Image.open(io.BytesIO((await api.get("/view", params=image)).content)) as saved:
                assert saved.size == (24, 16)
        assert (await api.get("/view", params={"filename": name, "type": "input"})).content == picture.getvalue()


def test_comfy_api_simplified_runs_unmodified_against_the_cluster(tmp_path: Path, redis_url, emulator):
    """A ComfyUI client library nobody here wrote: queue, wait on the WebSocket, read history, download, upload."""
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    emus = [emulator("--node-seconds", "0.02") for _ in range(3)]
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(*emus))

    async def scenario() -> None:
        async with running_daemon(settings) as api:
            url = str(api.base_url)

            def drive() -> dict[str, Any]:
                client = ComfyApiWrapper(url)
                results = {}
                for i in range(6):
                    graph = basic_graph(color=i, prefix=f"lib/{i}")
                    for node_id, node in graph.items():
                        node["_meta"] = {"title": "Save Image" if node_id == "3" else node["class_type"]}
                    results.update(client.queue_and_wait_images(ComfyWorkflowWrapper(graph), "Save Image"))
                picture = tmp_path / "pic.png"
                Image.new("RGB", (8, 8), (1, 2, 3)).save(picture)
                results["upload"] = client.upload_image(str(picture))
                results["queue"] = client.get_queue()
                results["stats"] = client.get_system_stats()
                return results

            results = await asyncio.to_thread(drive)
            images = {k: v for k, v in results.items() if k.endswith(".png")}
            assert len(images) == 6
            for data in images.values():
                assert data.startswith(b"\x89PNG")
            tasks = (await api.get("/api/tasks", params={"limit": 10})).json()["tasks"]
            assert len({t["backend"] for t in tasks}) >= 2
            assert results["upload"]["type"] == "input"
            assert results["queue"] == {"queue_running": [], "queue_pending": []}
            assert len(results["stats"]["devices"]) == 3

    asyncio.run(scenario())


async def test_without_a_healthy_backend_prompt_answers_503(tmp_path: Path, redis_url):
    settings = make_settings(tmp_path, redis_url)
    async with running_daemon(settings) as api:
        answer = await api.post("/prompt", json={"prompt": basic_graph()})
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert (await api.get("/object_info")).status_code == 503
        async with httpx.AsyncClient(base_url=str(api.base_url)) as plain:
            assert (await plain.get("/queue")).json() == {"queue_running": [], "queue_pending": []}


async def test_previews_reach_the_client_with_metadata_and_a_second_socket_takes_over(tmp_path: Path, redis_url,
                                                                                      emulator):
    emu = emulator("--node-seconds", "0.05")
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 7}},
             "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        url = f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=viewer"
        async with session.ws_connect(url) as first, session.ws_connect(url) as second:
            await first.receive()
            await second.receive()
            await second.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
            flags = json.loads((await second.receive()).data)
            assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
            prompt_id = (await api.post("/prompt", json={"prompt": graph, "client_id": "viewer"})).json()["prompt_id"]
            frames = await frames_until_end(second, {prompt_id})
            previews = [f for f in frames if isinstance(f, bytes)]
            assert len(previews) == 3
            for preview in previews:
                kind, length = struct.unpack(">II", preview[:8])
                assert kind == 4
                metadata = json.loads(preview[8:8 + length])
                assert metadata["prompt_id"] == prompt_id and metadata["node_id"] == "2"
                assert preview[8 + length:].startswith(b"\x89PNG")
            progress = [f["data"]["value"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
            assert progress == [0, 1, 2]
            with pytest.raises(TimeoutError):  # the replaced socket stays open but hears nothing
                async with asyncio.timeout(0.5):
                    await first.receive()


async def test_a_mask_upload_becomes_the_alpha_of_its_original(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu))
    original, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(original, format="PNG")
    Image.new("RGBA", (8, 8), (0, 0, 0, 77)).save(mask, format="PNG")
    async with running_daemon(settings) as api:
        name = (await api.post("/upload/image", files={"image": ("o.png", original.getvalue())})).json()["name"]
        answer = await api.post("/upload/mask", files={"image": ("m.png", mask.getvalue())},
                                data={"original_ref": json.dumps({"filename": name, "subfolder": "",
                                                                  "type": "input"})})
        assert answer.status_code == 200, answer.text
        stored = (await api.get("/view", params={"filename": answer.json()["name"], "type": "input"})).content
        with Image.open(io.BytesIO(stored)) as composite:
            assert composite.mode == "RGBA" and composite.getpixel((3, 3)) == (10, 20, 30, 77)
        missing = await api.post("/upload/mask", files={"image": ("m.png", mask.getvalue())},
                                 data={"original_ref": json.dumps({"filename": "nope.png"})})
        assert missing.status_code == 400


async def test_view_gives_the_mask_editor_an_images_colours_and_alpha_apart(tmp_path: Path, redis_url, emulator):
    """The editor's mask editor loads an image twice, ``channel=rgb`` and ``channel=a``; with the Comfy.PreviewFormat
    setting the page asks ``preview=webp;90``; and its "Open Image" shows an image rather than downloading it.
    Answers as ComfyUI 0.3.64's /view (read against a real one)."""
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator()))
    picture = io.BytesIO()
    Image.new("RGBA", (8, 6), (10, 20, 30, 77)).save(picture, format="PNG")
    async with running_daemon(settings) as api:
        name = (await api.post("/upload/image", files={"image": ("o.png", picture.getvalue())})).json()["name"]

        async def view(**options: str) -> tuple[httpx.Response, Image.Image]:
            answer = await api.get("/api/view", params={"filename": name, "type": "input", **options})
            assert answer.status_code == 200 and answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["content-disposition"].startswith("inline")
            return answer, Image.open(io.BytesIO(answer.content))

        answer, image = await view()
        assert answer.content == picture.getvalue() and answer.headers["content-type"] == "image/png"
        answer, image = await view(channel="rgb")
        assert image.mode == "RGB" and image.getpixel((2, 2)) == (10, 20, 30)
        answer, image = await view(channel="a")
        assert image.mode == "RGBA" and image.getpixel((2, 2)) == (0, 0, 0, 77)
        answer, image = await view(preview="webp;90")
        assert answer.headers["content-type"] == "image/webp" and image.format == "WEBP" and image.size == (8, 6)
        answer, image = await view(preview="jpeg;80")
        assert answer.headers["content-type"] == "image/jpeg" and image.mode == "RGB"
