"""The ComfyUI-compatible API's sockets (api.comfyui.sockets and relay) with real WebSocket clients, against a real
redis-server and emulator processes as static backends: which frames reach which socket, as ComfyUI sends them
(see ComfyUI's ``send_sync``: a frame without a client id goes to every socket), within each caller's namespace."""
from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.support.daemon import make_settings, running_daemon, static_backends
from tests.support.graphs import basic_graph
from tests.support.sockets import frames_until_end, frames_until_quiet

ALICE_KEY = "alice-client-key-0123456789abcdef"
BOB_KEY = "bob-client-key-0123456789abcdef0"
WS_IMAGES = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2,
                                                          "color": 0xFF8000}},
             "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
IMAGE_SIZE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 2, "color": 0}},
              "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def two_callers(tmp_path: Path, redis_url: str, emulator: Any) -> Any:
    auth = {"keys": [{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}]}
    return make_settings(tmp_path, redis_url, auth=auth, static_backends=static_backends(emulator()))


async def in_history(api: httpx.AsyncClient, prompt_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not (await api.get(f"/history/{prompt_id}")).json():
        assert time.monotonic() < deadline, f"{prompt_id} never reached the history"
        await asyncio.sleep(0.1)


def kinds(frames: list[Any]) -> list[Any]:
    """Each frame's type; a binary frame as its event type (1 preview, 3 text, 4 preview with metadata)."""
    return [struct.unpack(">I", f[:4])[0] if isinstance(f, bytes) else f["type"] for f in frames]


async def test_a_prompt_without_a_client_id_is_broadcast_to_every_socket_of_its_caller(tmp_path: Path, redis_url,
                                                                                        emulator):
    async with running_daemon(two_callers(tmp_path, redis_url, emulator)) as api, aiohttp.ClientSession() as session:
        alice = httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        ws_base = str(api.base_url).replace("http", "ws")
        first = await session.ws_connect(f"{ws_base}/ws?clientId=one&token={ALICE_KEY}")
        second = await session.ws_connect(f"{ws_base}/api/ws?clientId=two&token={ALICE_KEY}")
        other = await session.ws_connect(f"{ws_base}/ws?clientId=one&token={BOB_KEY}")
        for ws in (first, second, other):
            assert json.loads((await ws.receive()).data)["type"] == "status"
        # a socket that asked for preview metadata still gets type 1: ComfyUI checks the flag of the prompt's
        # client, and there is none
        await second.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert json.loads((await second.receive()).data)["type"] == "feature_flags"

        answer = await alice.post("/prompt", json={"prompt": WS_IMAGES})
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        await in_history(alice, prompt_id)
        heard = {name: await frames_until_quiet(ws) for name, ws in
                 (("first", first), ("second", second), ("other", other))}

        for name in ("first", "second"):
            frames = [f for f in heard[name] if not (isinstance(f, dict) and f["type"] == "status")]
            # what ComfyUI 0.3.64 sent each socket (transcript 14): no lifecycle frame, the progress and images
            assert kinds(frames) == ["progress_state"] * 4 + ["progress", 1, "progress_state", "progress", 1,
                                                              "progress_state"], (name, kinds(frames))
            progress = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress"]
            assert progress == [{"value": v, "max": 2, "prompt_id": prompt_id, "node": "9"} for v in (0, 1)]
            states = [f["data"] for f in frames if isinstance(f, dict) and f["type"] == "progress_state"]
            assert {s["prompt_id"] for s in states} == {prompt_id}
            assert {n["prompt_id"] for s in states for n in s["nodes"].values()} == {prompt_id}
            assert all(f[8:].startswith(b"\x89PNG") for f in frames if isinstance(f, bytes))
        # another caller's socket, even under the same client id, hears of the queue length only
        assert {f["type"] for f in heard["other"]} == {"status"}
        await alice.aclose()


async def test_an_interrupted_prompt_without_a_client_id_is_told_to_every_socket_of_its_caller(tmp_path: Path,
                                                                                                 redis_url, emulator):
    auth = {"keys": [{"name": "alice", "key": ALICE_KEY}, {"name": "bob", "key": BOB_KEY}]}
    settings = make_settings(tmp_path, redis_url, auth=auth,
                             static_backends=static_backends(emulator("--node-seconds", "1")))
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        alice = httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        ws_base = str(api.base_url).replace("http", "ws")
        first = await session.ws_connect(f"{ws_base}/ws?clientId=one&token={ALICE_KEY}")
        second = await session.ws_connect(f"{ws_base}/ws?clientId=two&token={ALICE_KEY}")
        other = await session.ws_connect(f"{ws_base}/ws?clientId=one&token={BOB_KEY}")
        for ws in (first, second, other):
            await ws.receive()
        prompt_id = (await alice.post("/prompt", json={"prompt": WS_IMAGES})).json()["prompt_id"]
        async with asyncio.timeout(30):  # running: its progress reaches the caller's sockets
            while (message := await first.receive()).type != aiohttp.WSMsgType.TEXT \
                    or json.loads(message.data)["type"] != "progress_state":
                pass
        assert (await alice.post("/interrupt", json={})).status_code == 200
        await in_history(alice, prompt_id)
        heard = {name: await frames_until_quiet(ws, 1.0) for name, ws in
                 (("first", first), ("second", second), ("other", other))}
        for name in ("first", "second"):
            ends = [f for f in heard[name] if isinstance(f, dict) and f["type"].startswith("execution_")]
            assert [(f["type"], f["data"]["prompt_id"]) for f in ends] == [("execution_interrupted", prompt_id)], \
                (name, heard[name])
        assert {f["type"] for f in heard["other"]} == {"status"}
        await alice.aclose()


async def test_progress_text_goes_to_every_socket_of_the_caller_as_in_comfyui(tmp_path: Path, redis_url, emulator):
    async with running_daemon(two_callers(tmp_path, redis_url, emulator)) as api, aiohttp.ClientSession() as session:
        alice = httpx.AsyncClient(base_url=api.base_url, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        ws_base = str(api.base_url).replace("http", "ws")
        mine = await session.ws_connect(f"{ws_base}/ws?clientId=mine&token={ALICE_KEY}")
        bystander = await session.ws_connect(f"{ws_base}/ws?clientId=bystander&token={ALICE_KEY}")
        other = await session.ws_connect(f"{ws_base}/ws?clientId=mine&token={BOB_KEY}")
        for ws in (mine, bystander, other):
            await ws.receive()
        answer = await alice.post("/prompt", json={"prompt": IMAGE_SIZE, "client_id": "mine"})
        prompt_id = answer.json()["prompt_id"]
        own = await frames_until_end(mine, prompt_id)
        heard = {"bystander": await frames_until_quiet(bystander), "other": await frames_until_quiet(other)}
        # ComfyUI's send_progress_text names no socket: every one hears it, whoever's prompt it is
        for frames in (own, heard["bystander"]):
            [text] = [f for f in frames if isinstance(f, bytes)]
            assert struct.unpack(">II", text[:8]) == (3, 1) and text[8:] == b"2width: 40, height: 30\n batch size: 2"
        assert {f["type"] for f in heard["bystander"] if isinstance(f, dict)} == {"status"}
        assert {f["type"] for f in heard["other"]} == {"status"}
        await alice.aclose()


async def test_a_reused_prompt_id_tells_its_second_run_as_fully_as_its_first(tmp_path: Path, redis_url, emulator):
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator()))
    fixed = "11111111-2222-3333-4444-555555555555"
    async with running_daemon(settings) as api, aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=me") as ws:
            await ws.receive()
            runs = []
            for color in (1, 2):  # two graphs: the second is not served from the cache
                answer = await api.post("/prompt", json={"prompt": basic_graph(color=color, prefix="again/p"),
                                                         "client_id": "me", "prompt_id": fixed})
                assert answer.json()["prompt_id"] == fixed
                frames = await frames_until_end(ws, fixed)
                runs.append([f for f in frames if f["type"] != "status"])
        expected = ["execution_start", "execution_cached", "progress_state", "executing", "progress_state",
                    "progress_state", "executing", "progress_state", "progress_state", "executing", "executed",
                    "progress_state", "execution_success", "executing"]
        assert kinds(runs[0]) == expected
        assert kinds(runs[1]) == expected  # ComfyUI tells a reused prompt id's run in full (transcript 03)
        assert all(f["data"]["prompt_id"] == fixed for run in runs for f in run)
        assert runs[1][-4]["data"]["output"]["images"] != runs[0][-4]["data"]["output"]["images"]


async def test_prompts_run_one_after_another_are_told_one_after_another(tmp_path: Path, redis_url, emulator):
    """One backend runs a client's prompts back to back (the next sent ahead to its queue while one runs). ComfyUI
    tells each one's end before the next one's start; the editor (frontend 1.58) forgets its running prompt on any
    prompt's ``execution_success``, so an end told after the next start loses that one from the page."""
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator("--node-seconds", "0.2")),
                             scheduler={"prefetch": 1})  # the default
    async with (running_daemon(settings) as api, aiohttp.ClientSession() as session,
                session.ws_connect(f"{str(api.base_url).replace('http', 'ws')}/ws?clientId=me") as ws):
        await ws.receive()
        ids = [(await api.post("/prompt", json={"prompt": basic_graph(color=1, prefix="seq/p"),
                                                "client_id": "me"})).json()["prompt_id"]]
        frames = []
        while not frames or frames[-1]["type"] != "execution_start":
            frames.append(json.loads((await ws.receive()).data))
        for color in (2, 3):  # queued while the first runs: sent ahead to the backend's queue
            ids.append((await api.post("/prompt", json={"prompt": basic_graph(color=color, prefix="seq/p"),
                                                        "client_id": "me"})).json()["prompt_id"])
        frames += await frames_until_end(ws, ids[-1])
    told = [(f["data"]["prompt_id"], f["type"]) for f in frames if f["type"] != "status"]
    assert [prompt for prompt, _ in told] == [ids[0]] * 14 + [ids[1]] * 14 + [ids[2]] * 14, told
    for run in (told[0:14], told[14:28], told[28:42]):
        assert [kind for _, kind in run[-2:]] == ["execution_success", "executing"]
