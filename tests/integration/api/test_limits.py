"""Limits on input against a running daemon (api.limits and the routes that apply them): oversized, deep and huge
requests get a 4xx, names that try to leave their folder are refused."""
from __future__ import annotations

from pathlib import Path

from tests.support.daemon import make_settings, running_daemon


async def test_oversized_deep_and_huge_requests_get_4xx(tmp_path: Path, redis_url):
    limits = {"max_body_bytes": 1 << 20, "max_json_depth": 16, "max_graph_nodes": 50, "max_upload_bytes": 1 << 20}
    async with running_daemon(make_settings(tmp_path, redis_url, limits=limits)) as api:
        big = {"prompt": {"1": {"class_type": "X", "inputs": {"text": "x" * (1100 << 10)}}}}
        answer = await api.post("/api/tasks", json=big)
        assert answer.status_code == 413 and "body larger than 1048576 bytes" in answer.json()["detail"]

        async def chunked():  # no Content-Length: counted as it arrives
            for _ in range(1100):
                yield b" " * 1024
        answer = await api.post("/api/tasks", content=chunked(), headers={"content-type": "application/json"})
        assert answer.status_code == 413
        deep = "[" * 40 + "]" * 40
        for path in ("/api/tasks", "/api/workflows/infer"):
            answer = await api.post(path, content=f'{{"prompt": {deep}}}', headers={"content-type": "application/json"})
            assert answer.status_code == 422 and "nested more than 16 levels" in answer.json()["detail"]
        very_deep = "[" * 100_000 + "]" * 100_000  # past the parser's own recursion limit
        answer = await api.post("/api/tasks", content=very_deep, headers={"content-type": "application/json"})
        assert answer.status_code == 422
        assert (await api.post("/prompt", content=very_deep)).status_code == 400
        many = {str(i): {"class_type": "X", "inputs": {}} for i in range(51)}
        answer = await api.post("/api/tasks", json={"prompt": many})
        assert answer.status_code == 422 and "at most 50 are allowed" in answer.json()["detail"]
        answer = await api.post("/prompt", json={"prompt": many})
        assert answer.status_code == 400 and "at most 50" in answer.json()["error"]["message"]
        # uploads: an image only, and within its own limit
        files = {"image": ("x.png", b"#!/bin/sh\nrm -rf /\n", "image/png")}
        assert (await api.post("/upload/image", files=files)).status_code == 415
        assert (await api.post("/api/inputs", files=files)).status_code == 415
        huge = {"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (3 << 20), "image/png")}
        assert (await api.post("/api/inputs", files=huge)).status_code == 413
        # names that try to leave their folder
        for query in ("filename=../../etc/passwd", "filename=/etc/passwd", "filename=x&subfolder=../..",
                      "filename=..%2F..%2Fetc%2Fpasswd&type=input", "filename=x&type=../../etc"):
            assert (await api.get(f"/view?{query}")).status_code in (400, 404), query
        assert (await api.get("/api/healthz")).status_code == 404
        # numbers past what Redis takes are clamped, not passed on
        assert (await api.get("/history", params={"offset": 2**63, "max_items": 2**64})).json() == {}
