"""Outputs in S3-compatible object storage, over HTTP against moto's standalone server on a loopback port."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from comfyart.config.sections import S3Config
from comfyart.errors import ConfigError
from comfyart.files.objects import S3Outputs
from tests.support.daemon import make_settings, running_daemon, wait_for_tasks
from tests.support.graphs import basic_graph
from tests.support.objects import S3_CREDENTIALS, moto_s3, s3_client


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


async def test_outputs_go_to_the_bucket_with_presigned_urls(tmp_path: Path, redis_url, emulator, s3_endpoint):
    s3_client(s3_endpoint).create_bucket(Bucket="renders")
    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=[{"name": "emu0", "url": emu.url}],
                             outputs={"storage": "s3", "s3": {"endpoint_url": s3_endpoint, "bucket": "renders",
                                                              "prefix": "out/", "region": "us-east-1",
                                                              **S3_CREDENTIALS}})
    async with running_daemon(settings) as api:
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(prefix="s3/x")})).json()["id"]
        [task] = await wait_for_tasks(api, [task_id])
        assert task["status"] == "completed", task
        [output] = task["outputs"]
        assert output["bucket"] == "renders" and output["path"] == f"out/{task_id}/{output['filename']}"
        stored = s3_client(s3_endpoint).get_object(Bucket="renders", Key=output["path"])
        data = stored["Body"].read()
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
        assert stored["ContentType"] == "image/png"
        async with httpx.AsyncClient() as plain:  # the presigned URL works without credentials
            assert (await plain.get(output["url"])).content == data
        assert not list((tmp_path / "data" / "outputs").rglob("*.png"))  # no local copy is kept
        redirect = await api.get(f"/api/tasks/{task_id}/outputs/{output['filename']}")
        assert redirect.status_code == 307 and "renders" in redirect.headers["location"]
        followed = await api.get(f"/api/tasks/{task_id}/outputs/{output['filename']}", follow_redirects=True)
        assert followed.content == data
        assert S3_CREDENTIALS["secret_access_key"] not in redirect.text + str(task)


async def test_a_missing_bucket_stops_the_daemon_with_a_clear_error(tmp_path: Path, redis_url, s3_endpoint):
    settings = make_settings(tmp_path, redis_url, outputs={"storage": "s3", "s3": {
        "endpoint_url": s3_endpoint, "bucket": "absent", "region": "us-east-1", **S3_CREDENTIALS}})
    with pytest.raises(ConfigError, match="cannot use bucket 'absent'"):
        async with running_daemon(settings):
            pass


async def test_objects_of_an_expired_v2_job_are_deleted(tmp_path: Path, s3_endpoint):
    s3_client(s3_endpoint).create_bucket(Bucket="renders")
    objects = S3Outputs(S3Config(endpoint_url=s3_endpoint, bucket="renders", prefix="out/", region="us-east-1",
                                 **S3_CREDENTIALS))
    source = tmp_path / "a.png"
    source.write_bytes(b"png")
    keys = [objects.key("T1", "a.png"), objects.key("T1", "b.png"), objects.key("T2", "a.png")]
    for key in keys:
        await objects.put(source, key, "image/png")
    await objects.delete(keys[:2] + ["out/T1/never-there.png"])  # a missing key is no error
    listed = s3_client(s3_endpoint).list_objects_v2(Bucket="renders")["Contents"]
    assert [o["Key"] for o in listed] == [keys[2]]
