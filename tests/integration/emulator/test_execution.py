"""Which sockets the emulator's frames (emulator.execution) reach, as ComfyUI's ``send_sync`` sends them: to the
prompt's client id, or to every socket where it has none (``sid=None``)."""
from __future__ import annotations

import asyncio
import struct
from typing import Any

import aiohttp
import httpx

from tests.support.emulator import wait_history
from tests.support.sockets import frames_until_quiet

IMAGE_SIZE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 2, "color": 0}},
              "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
WS_IMAGES = {"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 7}},
             "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}


def kinds(frames: list[Any]) -> list[Any]:
    return [struct.unpack(">I", f[:4])[0] if isinstance(f, bytes) else f["type"] for f in frames
            if isinstance(f, bytes) or f["type"] != "status"]


async def test_progress_text_reaches_every_socket_whoever_s_prompt_it_is(emulator):
    url = emulator().url
    async with aiohttp.ClientSession() as session:
        mine = await session.ws_connect(f"{url.replace('http', 'ws')}/ws?clientId=mine")
        bystander = await session.ws_connect(f"{url.replace('http', 'ws')}/ws?clientId=bystander")
        async with httpx.AsyncClient(base_url=url) as http:
            prompt_id = (await http.post("/prompt", json={"prompt": IMAGE_SIZE, "client_id": "mine"})).json()[
                "prompt_id"]
        await asyncio.to_thread(wait_history, url, prompt_id)
        own, other = await frames_until_quiet(mine), await frames_until_quiet(bystander)
        assert kinds(other) == [3]  # ComfyUI's send_progress_text names no socket
        [text] = [f for f in own if isinstance(f, bytes)]
        assert [f for f in other if isinstance(f, bytes)] == [text]
        assert text[8:] == b"2width: 40, height: 30\n batch size: 2"
        assert kinds(own)[0] == "execution_start" and kinds(own)[-1] == "executing"


async def test_a_prompt_without_a_client_id_sends_every_socket_its_progress_and_images_only(emulator):
    url = emulator().url
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(f"{url.replace('http', 'ws')}/ws?clientId={n}") for n in ("a", "b")]
        await sockets[1].send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        async with httpx.AsyncClient(base_url=url) as http:
            prompt_id = (await http.post("/prompt", json={"prompt": WS_IMAGES})).json()["prompt_id"]
        await asyncio.to_thread(wait_history, url, prompt_id)
        heard = [await frames_until_quiet(ws) for ws in sockets]
        expected = ["progress_state"] * 4 + ["progress", 1, "progress_state", "progress", 1, "progress_state"]
        assert kinds(heard[0]) == expected  # as transcript 14 shows for real ComfyUI
        assert kinds(heard[1]) == ["feature_flags", *expected]  # type 1 all the same: the prompt has no client
