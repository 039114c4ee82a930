"""S3-compatible object storage for tests: moto's standalone server on a loopback port (never another address),
a boto3 client of it, and the ``outputs`` section that puts a daemon's outputs there.

    with moto_s3() as endpoint:
        s3_client(endpoint).create_bucket(Bucket="renders")
        settings = make_settings(tmp_path, redis_url, outputs=s3_outputs(endpoint, "renders"))"""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.ports import free_port

S3_CREDENTIALS = {"access_key_id": "comfyart-test", "secret_access_key": "not-a-real-secret"}


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the block; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        # moto keeps its buckets in this process's memory, across servers: the next test starts empty
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_CREDENTIALS["access_key_id"],
                        aws_secret_access_key=S3_CREDENTIALS["secret_access_key"])


def s3_outputs(endpoint: str, bucket: str, prefix: str = "out/") -> dict[str, Any]:
    """The ``outputs`` section of a daemon whose outputs go to ``bucket`` under ``prefix``."""
    return {"storage": "s3", "s3": {"endpoint_url": endpoint, "bucket": bucket, "prefix": prefix,
                                    "region": "us-east-1", **S3_CREDENTIALS}}
