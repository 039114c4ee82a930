"""The emulator's file routes (emulator.routes_files): /view as ComfyUI answers it, paths outside its folders
refused, uploads."""
from __future__ import annotations

import httpx

from tests.support.emulator import post_prompt, wait_history
from tests.support.graphs import basic_graph


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
