"""Webhooks (webhooks) against a running daemon and a loopback receiver that fails once: signed, retried, recorded."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.daemon import http_receiver, make_settings, running_daemon, static_backends, wait_for_tasks
from tests.support.graphs import basic_graph


async def test_webhooks_are_signed_retried_and_recorded(tmp_path: Path, redis_url, emulator):
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        received.append({"body": body, "headers": dict(request.headers)})
        return web.Response(status=503 if len(received) == 1 else 204)

    emu = emulator()
    settings = make_settings(tmp_path, redis_url, static_backends=static_backends(emu),
                             webhooks={"secret": "s3cret", "backoff_s": 0.2})
    async with http_receiver(hook) as hook_url, running_daemon(settings) as api:
        assert (await api.post("/api/tasks", json={"prompt": basic_graph(), "webhook": "ftp://x"})).status_code \
            == 422
        task_id = (await api.post("/api/tasks", json={"prompt": basic_graph(), "webhook": hook_url})).json()["id"]
        await wait_for_tasks(api, [task_id])
        async with asyncio.timeout(15):
            while True:
                record = (await api.get(f"/api/tasks/{task_id}")).json()
                if any(d["delivered"] for d in record["webhook_deliveries"]):
                    break
                await asyncio.sleep(0.1)
        assert [d["status"] for d in record["webhook_deliveries"]] == [503, 204]
        assert record["webhook_deliveries"][0]["next_attempt_ms"] >= record["webhook_deliveries"][0]["at_ms"]
        assert len(received) == 2 and received[0]["body"] == received[1]["body"]
        body, headers = received[1]["body"], received[1]["headers"]
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Comfyart-Signature"] == expected
        assert headers["X-Comfyart-Event"] == "task.completed" and headers["X-Comfyart-Delivery"] == task_id
        delivered = json.loads(body)
        assert delivered["id"] == task_id and delivered["status"] == "completed"
        url = delivered["outputs"][0]["url"]
        assert url.startswith(str(api.base_url)) and (await api.get(url)).status_code == 200
        assert "s3cret" not in json.dumps(record)
