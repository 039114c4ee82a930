"""Comfy API v2 assets (api.v2.assets, api.v2.content, api.v2.inputs) on a daemon over an emulated backend: an
upload streams to a blob named by its BLAKE3, answers an Asset the SDK's models read, dedups per key; from-hash,
by-hash, get, delete; content with ranges, of uploads and of job outputs; core/ASSET and file_path inputs load on
the backend that runs the job; every refusal in the v2 envelope; one key never sees another's assets."""
from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from blake3 import blake3
from comfy_low.models import Asset, Job
from PIL import Image

from comfyart.files.outputs import OutputStore
from comfyart.store.jobs import JobIndex
from comfyart.store.stores import Stores
from comfyart.sweeps.jobs import RetentionSweep
from tests.integration.api.test_auth import ADMIN_KEY, ALICE_KEY, CAROL_KEY, as_key, secured
from tests.integration.api.v2.test_jobs import polled
from tests.support.daemon import healthy_count, make_settings, running_daemon, static_backends, wait_for_pool

MAX_UPLOAD = 64 << 10


def png_bytes(color: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(out, format="PNG")
    return out.getvalue()


def blake3_of(data: bytes) -> str:
    return "blake3:" + blake3(data).hexdigest()


async def upload(client: httpx.AsyncClient, data: bytes, file_path: str = "photo.png", **fields: str) -> httpx.Response:
    form = {"content_type": "image/png", "file_path": file_path, **fields}
    return await client.post("/api/v2/assets", data=form, files={"file": ("photo.png", data, "image/png")})


def load_image_graph(image: object) -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v2/asset"}}}


def error_of(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


@pytest.fixture
async def started(tmp_path: Path, redis_url, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu),
                             api_v2={"max_upload_bytes": MAX_UPLOAD})
    async with running_daemon(settings) as client:
        await wait_for_pool(client, lambda pool: healthy_count(pool) == 1)
        yield client, emu, settings


async def test_an_upload_is_an_asset_named_by_its_blake3_and_read_back_in_ranges(started):
    api, _, settings = started
    data = png_bytes()
    made = await upload(api, data, expected_hash=blake3_of(data), tags="a", expires_in="3600")
    assert made.status_code == 201, made.text
    asset = made.json()
    Asset.model_validate(asset)
    assert asset["created_new"] is True and asset["hash"] == blake3_of(data) and asset["size_bytes"] == len(data)
    assert asset["url"] == f"{api.base_url}/api/v2/assets/{asset['id']}/content"
    assert asset["file_path"] == "photo.png" and asset["expires_at"] is not None
    blob = settings.data_dir / "assets" / "blobs" / asset["hash"][7:9] / asset["hash"][7:]
    assert blob.read_bytes() == data
    again = await upload(api, data)
    assert again.status_code == 200 and again.json()["id"] == asset["id"] and again.json()["created_new"] is False
    got = await api.get(f"/api/v2/assets/{asset['id']}")
    assert got.status_code == 200 and "created_new" not in got.json() and got.json()["id"] == asset["id"]
    whole = await api.get(asset["url"])
    assert whole.status_code == 200 and whole.content == data and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "image/png"
    size = len(data)
    for asked, expected, content_range in (("bytes=2-5", data[2:6], f"bytes 2-5/{size}"),
                                           ("bytes=10-", data[10:], f"bytes 10-{size - 1}/{size}"),
                                           ("bytes=-4", data[-4:], f"bytes {size - 4}-{size - 1}/{size}")):
        part = await api.get(asset["url"], headers={"Range": asked})
        assert (part.status_code, part.content, part.headers["content-range"]) == (206, expected, content_range)
    past = await api.get(asset["url"], headers={"Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"


async def test_from_hash_by_hash_and_delete(started):
    api, _, _ = started
    data = png_bytes((1, 2, 3))
    asset = (await upload(api, data)).json()
    assert (await api.head(f"/api/v2/assets/by-hash/{asset['hash']}")).status_code == 200
    assert (await api.head(f"/api/v2/assets/by-hash/{blake3_of(b'nothing')}")).status_code == 404
    assert (await api.head("/api/v2/assets/by-hash/not-a-hash")).status_code == 404
    minted = await api.post("/api/v2/assets/from-hash", json={"hash": asset["hash"], "file_path": "copy.png"})
    assert minted.status_code == 201 and minted.json()["id"] != asset["id"]
    Asset.model_validate(minted.json())
    same = await api.post("/api/v2/assets/from-hash", json={"hash": asset["hash"], "file_path": "copy.png"})
    assert same.status_code == 200 and same.json()["id"] == minted.json()["id"]
    unknown = await api.post("/api/v2/assets/from-hash", json={"hash": blake3_of(b"nothing")})
    assert unknown.status_code == 404 and error_of(unknown) == "blob_not_found"
    malformed = await api.post("/api/v2/assets/from-hash", json={"hash": "sha256:00"})
    assert malformed.status_code == 422 and error_of(malformed) == "invalid_request"
    assert (await api.delete(f"/api/v2/assets/{asset['id']}")).status_code == 204
    gone = await api.delete(f"/api/v2/assets/{asset['id']}")
    assert gone.status_code == 404 and error_of(gone) == "not_found"
    assert error_of(await api.get(f"/api/v2/assets/{asset['id']}")) == "not_found"
    assert error_of(await api.get(f"/api/v2/assets/{asset['id']}/content")) == "not_found"


async def test_refused_uploads_answer_in_the_v2_envelope_and_keep_nothing(started):
    api, _, settings = started
    data = png_bytes()
    mismatch = await upload(api, data, expected_hash=blake3_of(b"other"))
    assert mismatch.status_code == 409 and error_of(mismatch) == "hash_mismatch"
    too_big = await upload(api, os.urandom(MAX_UPLOAD + 1))
    assert too_big.status_code == 413 and error_of(too_big) == "payload_too_large"
    declared = await api.post("/api/v2/assets", content=b"x" * (MAX_UPLOAD + (2 << 20)),
                              headers={"content-type": "multipart/form-data; boundary=b"})
    assert declared.status_code == 413 and error_of(declared) == "payload_too_large"
    for bad in (await upload(api, data, file_path="../escape.png"), await upload(api, data, expires_in="5"),
                await api.post("/api/v2/assets", data={"file_path": "a.png"}),
                await api.post("/api/v2/assets", content=b"{}", headers={"content-type": "application/json"})):
        assert bad.status_code == 422 and error_of(bad) == "invalid_request", bad.text
    assert not list((settings.data_dir / "assets" / "blobs").glob("*/*"))
    assert not list((settings.data_dir / "assets" / "tmp").iterdir())


async def test_uploads_of_the_same_bytes_at_once_make_one_blob(started):
    api, _, settings = started
    data = os.urandom(MAX_UPLOAD - 1024)
    answers = await asyncio.gather(*(upload(api, data, file_path=f"race{i % 2}.bin") for i in range(6)))
    assert {a.status_code for a in answers} <= {200, 201} and len({a.json()["hash"] for a in answers}) == 1
    assert len({a.json()["id"] for a in answers}) == 2  # one asset per file_path
    assert len(list((settings.data_dir / "assets" / "blobs").glob("*/*"))) == 1


async def test_a_job_loads_an_asset_on_the_backend_that_runs_it(started):
    api, emu, _ = started
    data = png_bytes((200, 100, 50))
    asset = (await upload(api, data)).json()
    name = asset["hash"][7:] + ".png"
    reference = {"__type": "core/ASSET", "info": {"id": asset["id"], "hash": asset["hash"]}}
    for image in (reference, "photo.png"):  # a reference, and the asset's file_path as a lone backend knows it
        submitted = await api.post("/api/v2/jobs", json={"workflow": load_image_graph(image)})
        assert submitted.status_code == 201, submitted.text
        done = await polled(api, submitted.json()["urls"]["self"])
        Job.model_validate(done)
        assert done["status"] == "succeeded", done
        workflow = (await api.get(f"/api/v2/jobs/{done['id']}/workflow")).json()["workflow"]
        assert workflow["1"]["inputs"]["image"] == name
        assert (emu.base_dir / "input" / name).read_bytes() == data
    output = done["outputs"][0]
    content = await api.get(f"/api/v2/assets/{output['id']}/content")
    assert content.status_code == 200 and content.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert content.headers["content-type"] == output["content_type"]
    missing = await api.post("/api/v2/jobs", json={"workflow": load_image_graph(
        {"__type": "core/ASSET", "info": {"id": "00000000-0000-4000-8000-000000000000"}})})
    assert missing.status_code == 422 and error_of(missing) == "missing_asset"
    assert missing.json()["error"]["details"] == {"missing_ids": ["00000000-0000-4000-8000-000000000000"]}
    malformed = await api.post("/api/v2/jobs", json={"workflow": load_image_graph({"__type": "core/ASSET"})})
    assert malformed.status_code == 422 and malformed.json()["error"]["details"] == {"missing_ids": [None]}


async def test_an_output_whose_bytes_are_gone_is_unavailable(started):
    api, _, settings = started
    submitted = await api.post("/api/v2/jobs", json={"workflow": load_image_graph(
        {"__type": "core/ASSET", "info": {"id": (await upload(api, png_bytes())).json()["id"]}})})
    done = await polled(api, submitted.json()["urls"]["self"])
    for path in (settings.data_dir / "outputs").rglob("*.png"):
        path.unlink()
    gone = await api.get(f"/api/v2/assets/{done['outputs'][0]['id']}/content")
    assert gone.status_code == 404 and error_of(gone) == "output_unavailable"
    assert error_of(await api.get("/api/v2/assets/o1.bm9qb2I.eC5wbmc/content")) == "not_found"


async def test_one_key_never_sees_another_keys_assets(tmp_path: Path, redis_url, emulator):
    settings = secured(tmp_path, redis_url, static_backends=static_backends(emulator()))
    async with running_daemon(settings) as api:
        alice, carol = as_key(api, ALICE_KEY), as_key(api, CAROL_KEY)
        await wait_for_pool(as_key(api, ADMIN_KEY), lambda pool: healthy_count(pool) == 1)
        asset = (await upload(alice, png_bytes())).json()
        assert error_of(await carol.get(f"/api/v2/assets/{asset['id']}")) == "not_found"
        assert error_of(await carol.get(f"/api/v2/assets/{asset['id']}/content")) == "not_found"
        assert error_of(await carol.delete(f"/api/v2/assets/{asset['id']}")) == "not_found"
        assert (await carol.head(f"/api/v2/assets/by-hash/{asset['hash']}")).status_code == 404
        stolen = await carol.post("/api/v2/assets/from-hash", json={"hash": asset["hash"]})
        assert stolen.status_code == 404 and error_of(stolen) == "blob_not_found"
        theirs = await carol.post("/api/v2/jobs", json={"workflow": load_image_graph(
            {"__type": "core/ASSET", "info": {"id": asset["id"]}})})
        assert theirs.status_code == 422 and error_of(theirs) == "missing_asset"
        # naming the backend file name outright gives nobody the bytes: no backend lists it (and the dispatcher
        # checks the owner: tests/integration/workflows/test_asset_inputs.py)
        guessed = await carol.post("/api/tasks", json={"prompt": load_image_graph(asset["hash"][7:] + ".png")})
        assert guessed.status_code == 400 and "Invalid image file" in guessed.text
        mine = await alice.post("/api/v2/jobs", json={"workflow": load_image_graph("photo.png")})
        done = await polled(alice, mine.json()["urls"]["self"])
        assert done["status"] == "succeeded"
        assert error_of(await carol.get(f"/api/v2/assets/{done['outputs'][0]['id']}/content")) == "not_found"
        assert (await alice.get(f"/api/v2/assets/{done['outputs'][0]['id']}/content")).status_code == 200


async def test_a_large_upload_streams_to_disk_in_flat_memory(tmp_path: Path, redis_url):
    """The daemon runs in this process: tracemalloc sees everything it allocates while 32 MiB go through it."""
    import tracemalloc

    size, piece = 32 << 20, os.urandom(1 << 20)
    boundary = "flat-memory-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file_path\"\r\n\r\nbig.bin\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def streamed():
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield tail

    settings = make_settings(tmp_path, redis_url, api_v2={"max_upload_bytes": size})
    async with running_daemon(settings) as api:
        tracemalloc.start()
        try:
            made = await api.post("/api/v2/assets", content=streamed(),
                                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert made.status_code == 201, made.text
    assert made.json()["size_bytes"] == size
    assert peak < 8 << 20, f"peak {peak} bytes while uploading {size}"


async def test_an_expired_job_shows_no_outputs_and_their_bytes_are_gone(started):
    """The retention sweep, run as the daemon's loop would a retention after the job's end, on the daemon's own
    Redis and output store: the job answers expired without outputs, and its output's content is unavailable."""
    api, _, settings = started
    submitted = await api.post("/api/v2/jobs", json={"workflow": load_image_graph(
        {"__type": "core/ASSET", "info": {"id": (await upload(api, png_bytes())).json()["id"]}})})
    done = await polled(api, submitted.json()["urls"]["self"])
    output_id = done["outputs"][0]["id"]
    assert (await api.get(f"/api/v2/assets/{output_id}/content")).status_code == 200
    retention_s = settings.api_v2.job_retention_s
    redis = aioredis.from_url(settings.redis.url or "", decode_responses=True)
    try:
        jobs = JobIndex(Stores.on(redis, settings.redis.prefix).tasks)
        later = int(time.time() * 1000) + retention_s * 1000 + 1000
        sweep = RetentionSweep(jobs, OutputStore(settings.data_dir / "outputs"), None, retention_s=retention_s,
                               clock=lambda: later)
        assert await sweep.sweep() == 1
    finally:
        await redis.aclose()
    expired = (await api.get(f"/api/v2/jobs/{done['id']}")).json()
    Job.model_validate(expired)
    assert expired["status"] == "expired" and expired["outputs"] == []
    gone = await api.get(f"/api/v2/assets/{output_id}/content")
    assert gone.status_code == 404 and error_of(gone) == "output_unavailable"
    assert not list((settings.data_dir / "outputs").rglob("*.png"))
