"""Emulator behaviours the transcripts do not cover: failure modes, VRAM figures, file routes."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import httpx
from PIL import Image

from tests.conftest import ROOT, basic_graph, free_port, wait_for_port


def post_prompt(url: str, graph: dict) -> str:
    response = httpx.post(url + "/prompt", json={"prompt": graph, "client_id": "test"})
    response.raise_for_status()
    return response.json()["prompt_id"]


def wait_history(url: str, prompt_id: str, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = httpx.get(f"{url}/history/{prompt_id}").json()
        if entry:
            return entry[prompt_id]
        time.sleep(0.05)
    raise AssertionError("no history entry")


def test_a_hung_backend_keeps_answering_http_but_never_finishes(emulator):
    emu = emulator()
    emu.control(hang=True)
    prompt_id = post_prompt(emu.url, basic_graph())
    time.sleep(0.5)
    queue = httpx.get(emu.url + "/queue", timeout=2).json()
    assert queue["queue_running"][0][1] == prompt_id
    httpx.post(emu.url + "/interrupt", json={}).raise_for_status()
    time.sleep(0.3)
    assert httpx.get(f"{emu.url}/history/{prompt_id}").json() == {}


def test_vram_figures_follow_the_gpu_pinning(tmp_path):
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "2"}
    process = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--port", str(port), "--base-dir",
                                str(tmp_path), "--vram-mb", "8192"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        [device] = httpx.get(url + "/system_stats").json()["devices"]
        assert device["type"] == "cuda" and "GPU 2" in device["name"]
        assert device["vram_total"] == 8192 << 20 and device["vram_free"] == device["vram_total"]
        graph = {"4": {"class_type": "CheckpointLoaderSimple",
                       "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
                 "9": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
        wait_history(url, post_prompt(url, graph))
        [device] = httpx.get(url + "/system_stats").json()["devices"]
        assert device["vram_free"] < device["vram_total"]  # a loaded checkpoint holds VRAM
    finally:
        process.terminate()
        process.wait(10)


def test_unpinned_emulator_reports_the_cpu(emulator):
    [device] = httpx.get(emulator().url + "/system_stats").json()["devices"]
    assert device["type"] == "cpu" and device["index"] is None


def test_saved_images_are_real_pngs_with_the_prompt_embedded(emulator):
    emu = emulator()
    entry = wait_history(emu.url, post_prompt(emu.url, basic_graph(width=40, height=30, prefix="a/b")))
    [image] = entry["outputs"]["3"]["images"]
    assert image == {"filename": "b_00001_.png", "subfolder": "a", "type": "output"}
    data = httpx.get(emu.url + "/view", params=image).content
    with Image.open(io.BytesIO(data)) as png:
        assert png.format == "PNG" and png.size == (40, 30)
        # inverted as ComfyUI does it, in float32 and truncated: 0x99 (153) becomes 101, not 102; a real ComfyUI
        # 0.3.64 saved exactly these bytes for this graph
        assert png.getpixel((0, 0)) == (204, 153, 101)
        assert '"SaveImage"' in png.info["prompt"]


def test_view_answers_every_way_as_comfyuis_file_response_does(emulator):
    # a plain GET of a small file is answered from memory; conditional and range requests by aiohttp's
    # FileResponse, as ComfyUI answers them all: the headers must not tell them apart
    emu = emulator()
    entry = wait_history(emu.url, post_prompt(emu.url, basic_graph(prefix="v")))
    [image] = entry["outputs"]["3"]["images"]
    plain = httpx.get(emu.url + "/view", params=image)
    ranged = httpx.get(emu.url + "/view", params=image, headers={"Range": "bytes=0-"})
    assert plain.status_code == 200 and ranged.status_code == 206 and plain.content == ranged.content
    for header in ("Content-Type", "Content-Disposition", "ETag", "Last-Modified", "Accept-Ranges"):
        assert plain.headers[header] == ranged.headers[header], header
    assert plain.headers["Content-Type"] == "image/png" and plain.headers["Accept-Ranges"] == "bytes"
    assert plain.headers["Content-Length"] == str(len(plain.content))
    assert plain.content.startswith(b"\x89PNG")
    again = httpx.get(emu.url + "/view", params=image, headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status_code == 304
    part = httpx.get(emu.url + "/view", params=image, headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == plain.content[:8]


def test_view_refuses_paths_outside_its_folders(emulator):
    emu = emulator()
    cases = {"": 404, "?filename=../x.png": 400, "?filename=/etc/passwd": 400, "?filename=x.png&subfolder=../..": 403,
             "?filename=x.png&type=bogus": 400, "?filename=missing.png": 404}
    for query, status in cases.items():
        assert httpx.get(emu.url + "/view" + query).status_code == status, query


def test_upload_keeps_identical_files_once_and_renames_different_ones(emulator):
    emu = emulator()

    def upload(data: bytes) -> dict:
        return httpx.post(emu.url + "/upload/image", files={"image": ("in.png", data, "image/png")}).json()

    assert upload(b"one")["name"] == "in.png"
    assert upload(b"one")["name"] == "in.png"
    assert upload(b"two")["name"] == "in (1).png"
    loaded = post_prompt(emu.url, {"1": {"class_type": "LoadImage", "inputs": {"image": "in (1).png"}},
                                   "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}})
    entry = wait_history(emu.url, loaded)
    assert entry["status"]["status_str"] == "error"  # not an image: fails at run time, like ComfyUI
    assert entry["status"]["messages"][-1][1]["exception_type"] == "PIL.UnidentifiedImageError"
