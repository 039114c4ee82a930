"""Comfy API v2 over outputs kept in object storage (moto's S3 server on a loopback port): a job's output content
answers 302 to a presigned URL on that server whose bytes are the object comfyart stored; the real comfy-sdk
follows it (``to_bytes``) and hands it out (``get_download_url``); the retention sweep deletes the job's objects,
after which the job answers expired and its content ``output_unavailable``."""
from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis.asyncio as aioredis
from comfy_low.models import Job

from comfyart.config.settings import Settings
from comfyart.files.objects import S3Outputs
from comfyart.files.outputs import OutputStore
from comfyart.store.jobs import JobIndex
from comfyart.store.stores import Stores
from comfyart.sweeps.jobs import RetentionSweep
from tests.integration.api.v2.test_jobs import polled
from tests.support.daemon import healthy_count, make_settings, running_daemon, static_backends, wait_for_pool
from tests.support.graphs import basic_graph
from tests.support.objects import moto_s3, s3_client, s3_outputs
from tests.support.v2 import async_sdk_client

BUCKET, PREFIX = "renders", "out/"


@pytest.fixture
async def started(tmp_path: Path, redis_url, emulator) -> AsyncIterator[tuple[httpx.AsyncClient, str, Settings]]:
    with moto_s3() as endpoint:
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emulator()),
                                 outputs=s3_outputs(endpoint, BUCKET, PREFIX))
        async with running_daemon(settings) as api:
            await wait_for_pool(api, lambda pool: healthy_count(pool) == 1)
            yield api, endpoint, settings


def bucket_keys(endpoint: str) -> list[str]:
    return [o["Key"] for o in s3_client(endpoint).list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def is_presigned_on(location: str, endpoint: str, key: str) -> bool:
    """``location`` is a presigned GET of ``key`` in the bucket on ``endpoint`` (path style: an IP endpoint)."""
    parts = urlsplit(location)
    return (f"{parts.scheme}://{parts.netloc}" == endpoint and parts.path == f"/{BUCKET}/{key}"
            and "X-Amz-Signature" in parse_qs(parts.query))


async def succeeded_job(api: httpx.AsyncClient) -> dict[str, Any]:
    submitted = await api.post("/api/v2/jobs", json={"workflow": basic_graph(prefix="v2/s3")})
    assert submitted.status_code == 201, submitted.text
    done = await polled(api, submitted.json()["urls"]["self"])
    Job.model_validate(done)
    assert done["status"] == "succeeded", done
    return done


async def expire_now(settings: Settings) -> int:
    """One retention sweep, as the daemon's loop would run it a retention after the job ended, on the daemon's own
    Redis, output store and bucket; how many jobs it expired."""
    retention_s = settings.api_v2.job_retention_s
    assert settings.outputs.s3 is not None
    redis = aioredis.from_url(settings.redis.url or "", decode_responses=True)
    try:
        jobs = JobIndex(Stores.on(redis, settings.redis.prefix).tasks)
        later = int(time.time() * 1000) + retention_s * 1000 + 1000
        sweep = RetentionSweep(jobs, OutputStore(settings.data_dir / "outputs"), S3Outputs(settings.outputs.s3),
                               retention_s=retention_s, clock=lambda: later)
        return await sweep.sweep()
    finally:
        await redis.aclose()


async def test_an_output_in_object_storage_redirects_to_its_object_until_it_expires(started):
    api, endpoint, settings = started
    job = await succeeded_job(api)
    [output] = job["outputs"]
    key = f"{PREFIX}{job['id']}/{output['name']}"
    assert bucket_keys(endpoint) == [key]
    stored = s3_client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert stored[:8] == b"\x89PNG\r\n\x1a\n" and len(stored) == output["size_bytes"]
    assert not list((settings.data_dir / "outputs").rglob("*.png"))  # the bucket holds the only copy

    content = await api.get(f"/api/v2/assets/{output['id']}/content")
    assert content.status_code == 302, content.text
    location = content.headers["location"]
    assert is_presigned_on(location, endpoint, key), location
    async with httpx.AsyncClient() as plain:  # no credentials: the signature is the authorization
        assert (await plain.get(location)).content == stored

    async with async_sdk_client(str(api.base_url), None) as client:
        [sdk_output] = (await client.jobs.get(job["id"])).outputs
        assert sdk_output.id == output["id"]
        assert await sdk_output.to_bytes() == stored  # the SDK followed the redirect
        link = await sdk_output.get_download_url()
        assert is_presigned_on(link.url, endpoint, key), link.url  # the Location itself, presigned afresh
        async with httpx.AsyncClient() as plain:
            assert (await plain.get(link.url)).content == stored

    assert await expire_now(settings) == 1
    assert bucket_keys(endpoint) == []
    expired = (await api.get(f"/api/v2/jobs/{job['id']}")).json()
    Job.model_validate(expired)
    assert expired["status"] == "expired" and expired["outputs"] == []
    gone = await api.get(f"/api/v2/assets/{output['id']}/content")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "output_unavailable"
    async with httpx.AsyncClient() as plain:  # a URL handed out before is dead too: the object is gone
        assert (await plain.get(location)).status_code == 404
