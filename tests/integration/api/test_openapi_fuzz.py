"""Schemathesis over comfyart's OpenAPI schema: requests generated from the schema (and mutated past it) against
``comfyart serve`` with a real redis-server and an emulator backend. No answer may be a 500 (a 503 with
Retry-After is the one 5xx allowed: no backend could answer), and none may carry a stack trace. On ``/api/v2`` paths
every answer is one the v2 contract documents (``tests.support.v2_answers``: the v2 error envelope, never
``{"detail": …}``), and POST /api/v2/jobs, whose body FastAPI does not describe, gets bodies, Idempotency-Keys and
job ids from hypothesis strategies of its own. Bounded: 50 examples per operation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.daemon import serve_subprocess
from tests.support.paths import ROOT
from tests.support.ports import free_port, wait_for_port
from tests.support.v2_answers import DOCUMENTED, plain_headers, v2_problems

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
    if case.path.startswith("/api/v2"):
        headers = plain_headers(response.headers)
        assert not v2_problems(case.method, case.path, response.status_code, headers, response.text), described


def test_the_schema_lists_the_v2_routes(api_schema: schemathesis.schemas.BaseSchema) -> None:
    """The fuzzing above reaches the v2 routes only if the schema lists them, and holds each to its own
    statuses only if the table of documented statuses names every one."""
    operations = {(method.upper(), path) for path, item in api_schema.raw_schema["paths"].items()
                  if path.startswith("/api/v2") for method in item if method != "parameters"}
    assert operations == set(DOCUMENTED)


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
# a body as a client might send one: any JSON, an object with a workflow of any shape, bytes that are not JSON
SUBMISSIONS = (JSON_VALUES.map(lambda value: json.dumps(value).encode())
               | st.fixed_dictionaries({"workflow": JSON_VALUES}, optional={"extra_data": JSON_VALUES,
                                                                          "metadata": JSON_VALUES,
                                                                          "priority": JSON_VALUES}).map(
                   lambda value: json.dumps(value).encode())
               | st.binary(max_size=64))
# what an HTTP header can carry (printable ASCII, no space at either end), empty, or longer than the contract's 255
IDEMPOTENCY_KEYS = st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).filter(
    lambda key: key == key.strip())
JOB_IDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"), min_size=1,
                  max_size=40)


@given(body=SUBMISSIONS, key=IDEMPOTENCY_KEYS)
@settings(max_examples=EXAMPLES_PER_OPERATION * 2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_any_v2_submission_answers_in_the_contract(fuzzed_daemon: str, body: bytes, key: str | None) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    if key is not None:
        headers["idempotency-key"] = key
    response = httpx.post(f"{fuzzed_daemon}/api/v2/jobs", content=body, headers=headers, timeout=30)
    problems = v2_problems("POST", "/api/v2/jobs", response.status_code, plain_headers(response.headers),
                           response.text)
    assert not problems, f"{body[:200]!r} key={key!r} -> {response.status_code}: {response.text[:300]} {problems}"


@given(job_id=JOB_IDS, action=st.sampled_from(["GET", "GET /workflow", "POST /cancel"]))
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_any_v2_job_id_answers_in_the_contract(fuzzed_daemon: str, job_id: str, action: str) -> None:
    method, _, suffix = action.partition(" ")
    response = httpx.request(method, f"{fuzzed_daemon}/api/v2/jobs/{job_id}{suffix}", headers=AUTH, timeout=30)
    problems = v2_problems(method, "/api/v2/jobs/{task_id}" + suffix, response.status_code,
                           plain_headers(response.headers), response.text)
    assert not problems, f"{action} {job_id!r} -> {response.status_code}: {response.text[:300]} {problems}"


def test_the_daemon_still_answers_after_the_fuzzing(fuzzed_daemon: str) -> None:
    health = httpx.get(f"{fuzzed_daemon}/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["healthy_backends"] == 1
