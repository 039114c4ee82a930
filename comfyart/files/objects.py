"""Outputs in S3-compatible object storage (``outputs.storage: s3``): boto3, every call in a thread.

A downloaded output is uploaded as ``<prefix><task id>/<file name>`` and its local copy removed; the task record
then holds the key (``path``), the bucket and a presigned URL. Reading an output answers a redirect to a fresh
presigned URL, so the daemon never streams object storage through itself.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from comfyart.config.sections import S3Config
from comfyart.errors import ConfigError, TransientError


class ObjectStoreUnavailable(TransientError):
    pass


class S3Outputs:
    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.bucket = config.bucket
        secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
        self._client: Any = boto3.client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region,
            aws_access_key_id=config.access_key_id, aws_secret_access_key=secret,
            config=botocore.config.Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"},
                                          connect_timeout=10, read_timeout=60))

    def key(self, task_id: str, filename: str) -> str:
        return f"{self.config.prefix}{task_id}/{filename}"

    async def check(self) -> None:
        """At start-up: the bucket exists and these credentials reach it."""
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise ConfigError(f"outputs.s3: cannot use bucket {self.bucket!r}: {exc}") from exc

    async def put(self, path: Path, key: str, content_type: str) -> str:
        """Upload ``path`` under ``key``; returns a presigned URL of it."""
        try:
            await asyncio.to_thread(self._client.upload_file, str(path), self.bucket, key,
                                    ExtraArgs={"ContentType": content_type})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise ObjectStoreUnavailable(f"uploading {key} to bucket {self.bucket}: {exc}") from exc
        return await self.presign(key)

    async def delete(self, keys: list[str]) -> None:
        """Remove objects (a v2 job's outputs past their retention); a key already gone is no error."""
        for start in range(0, len(keys), 1000):  # S3 deletes at most 1000 objects a request
            chunk = [{"Key": key} for key in keys[start:start + 1000]]
            try:
                await asyncio.to_thread(self._client.delete_objects, Bucket=self.bucket,
                                        Delete={"Objects": chunk, "Quiet": True})
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise ObjectStoreUnavailable(f"deleting from bucket {self.bucket}: {exc}") from exc

    async def presign(self, key: str) -> str:
        return await asyncio.to_thread(self._client.generate_presigned_url, "get_object",
                                       Params={"Bucket": self.bucket, "Key": key},
                                       ExpiresIn=self.config.presign_expires_s)
