"""Schemathesis over comfyart's OpenAPI schema: requests generated from the schema (and mutated past it) against
``comfyart serve`` with a real redis-server and an emulator backend. No answer may be a 500 (a 503 with
Retry-After is the one 5xx allowed: no backend could answer), and none may carry a stack trace. Bounded: 50 examples
per operation."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support.daemon import serve_subprocess
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
EXAMPLES_PER_OPERATION = int(os.environ.get("COMFYART_FUZZ_EXAMPLES", "50"))  # more: a longer hunt
# these take URLs the daemon would then contact: generated ones could point anywhere outside 127.0.0.0/8
NOT_FUZZED = {("POST", "/api/pool/backends")}


@pytest.fixture(scope="module")
def fuzzed_daemon(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("fuzz")
    emulator_port = free_port()
    emulator = subprocess.Popen([sys.executable, "-m", "comfyart.emulator", "--host", "127.0.0.1", "--port",
                                 str(emulator_port), "--base-dir", str(workdir / "emulator")], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    config = {"server": {"host": "127.0.0.1", "port": port}, "redis": {"url": redis_server, "prefix": "fuzz"},
              "data_dir": str(workdir / "data"), "pool": {"min_containers": 0, "health_interval_s": 1.0},
              "static_backends": [{"name": "emu", "url": f"http://127.0.0.1:{emulator_port}"}],
              "workflows": {"directory": str(ROOT / "config" / "workflows")},
              "auth": {"keys": [{"name": "fuzz", "role": "admin", "key": ADMIN_KEY}]}}
    daemon = serve_subprocess(config, workdir / "comfyart.yaml")
    try:
        wait_for_port(emulator_port)
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in (daemon, emulator):
            process.terminate()
            process.wait(20)


@pytest.fixture(scope="module")
def api_schema(fuzzed_daemon: str) -> schemathesis.schemas.BaseSchema:
    loaded = schemathesis.openapi.from_url(f"{fuzzed_daemon}/openapi.json", headers=AUTH)
    for method, path in NOT_FUZZED:
        loaded = loaded.exclude(method=method, path=path)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_request_the_schema_allows_makes_the_daemon_fail(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH, timeout=30)
    described = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code != 500 and response.status_code < 500 or (
        response.status_code == 503 and "retry-after" in {k.lower() for k in response.headers}), described
    assert "Traceback" not in response.text, described


def test_the_daemon_still_answers_after_the_fuzzing(fuzzed_daemon: str) -> None:
    health = httpx.get(f"{fuzzed_daemon}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["healthy_backends"] == 1
