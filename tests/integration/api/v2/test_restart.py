"""A v2 job outlives the daemon: submitted with an Idempotency-Key, ``comfyart serve`` stopped (SIGTERM, or
SIGKILL as in a crash) while the job runs on a slow backend, started again on the same Redis and data directory.
The job completes exactly once (the emulators took one prompt), GET answers succeeded, and its key still refuses
a second submission with the job's id."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.graphs import text_to_image_graph
from tests.support.v2 import V2Server, v2_config, wait_for_job


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_running_job_completes_once_across_a_restart(tmp_path: Path, redis_url: str, emulator,
                                                       sig: signal.Signals):
    emulators = [emulator("--step-seconds", "1.0"), emulator("--step-seconds", "1.0")]  # 4 steps: 4 s a prompt
    server = V2Server(tmp_path, v2_config(tmp_path, redis_url, emulators), emulators)
    headers = {"Idempotency-Key": "restart-1"}
    body = {"workflow": text_to_image_graph(seed=5)}
    server.start()
    try:
        with server.http("alice") as alice:
            submitted = alice.post("/api/v2/jobs", json=body, headers=headers)
            assert submitted.status_code == 201, submitted.text
            job_id = submitted.json()["id"]
            wait_for_job(alice, job_id, ("running",), timeout_s=20)
        server.stop(sig)
        server.start()
        with server.http("alice") as alice:
            done = wait_for_job(alice, job_id, timeout_s=60)
            assert done["status"] == "succeeded" and [o["node_id"] for o in done["outputs"]] == ["9"]
            reused = alice.post("/api/v2/jobs", json=body, headers=headers)
            assert reused.status_code == 422
            assert reused.json()["error"]["code"] == "idempotency_key_reuse"
            assert reused.json()["error"]["details"] == {"job_id": job_id}
            with server.http("ops") as admin:
                assert admin.get("/api/tasks").json()["total"] == 1
    finally:
        server.stop()
    assert server.prompts_run() == 1
