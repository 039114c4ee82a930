"""Comfy API v2 benchmark: what the v2 layer costs over comfyart's own task API, how fast it takes idempotent
submissions, what a finished v2 job keeps in Redis, and (once the assets route exists) how fast it takes uploads.

    python3 bench/v2.py [--latency-jobs N] [--jobs N] [--clients N] [--upload-mb N] [--quick]

1. latency   one job at a time, the same graph both ways, alternating: ``POST /api/v2/jobs`` then
             ``GET /api/v2/jobs/{id}`` until terminal, against ``POST /api/tasks`` then ``GET /api/tasks/{id}``,
             both polled every --poll-ms: submit-to-result p50/p99 as the client sees it, the submit call alone,
             one poll, and the record's own created-to-finished (no polling in it: what the server took); the v2
             overhead of each (p50).
2. submits   --clients concurrent clients submit --jobs jobs through v2, each with an Idempotency-Key used once
             (and the same through /api/tasks, no key): jobs/s accepted. Then, every job finished, the Redis bytes
             a finished v2 job keeps (MEMORY USAGE over every key of the daemon's prefix, less what was there
             before; split into the task record, its idempotency key, and the indexes and the rest).
3. upload    runs only when the daemon's OpenAPI lists POST /api/v2/assets: one --upload-mb MB asset as
             multipart (parts ``file``, ``content_type``, ``file_path``), MB/s and comfyart's peak RSS while it
             lasted (sampled) and over its life (VmHWM).

Auth is on (a client key submits, an admin key reads the pool); the backend is one emulator whose nodes take no
time, so the figures are comfyart's own. Starts its own redis-server (or uses REDIS_URL), the emulator and
``comfyart serve``. Prints a table and writes bench/results/v2.json.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import Rig, percentile, report  # noqa: E402  (bench/ is not a package)

CLIENT_KEY = "bench-v2-client-key-0123456789abcdef"
ADMIN_KEY = "bench-v2-admin-key-0123456789abcdef"
PREFIX = "bench-v2"
V2_DONE = ("succeeded", "failed", "canceled", "expired")
TASK_DONE = ("completed", "failed", "canceled")


def graph(i: int) -> dict[str, Any]:
    """A graph the emulator runs at once; ``i`` makes each one distinct (no cached answer)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "v2bench"}}}


ROUTES = {  # route -> (submit path, body of graph i, read path of an id, field of the status, terminal statuses)
    "v2": ("/api/v2/jobs", lambda i: {"workflow": graph(i)}, "/api/v2/jobs/{}", V2_DONE),
    "tasks": ("/api/tasks", lambda i: {"prompt": graph(i)}, "/api/tasks/{}", TASK_DONE),
}


def one_job(client: httpx.Client, route: str, i: int, poll_s: float) -> dict[str, Any]:
    """Submit graph ``i`` through ``route`` and poll it to its end: the submit call, submit-to-result and each
    poll (ms, as the client saw them), the record's own created-to-finished (ms: no polling in it), the status."""
    submit_path, body, read_path, done = ROUTES[route]
    start = time.perf_counter()
    answer = client.post(submit_path, json=body(i))
    submitted = time.perf_counter()
    answer.raise_for_status()
    job_id = answer.json()["id"]
    polls = []
    while True:
        asked = time.perf_counter()
        status = client.get(read_path.format(job_id)).json()["status"]
        polls.append((time.perf_counter() - asked) * 1000)
        if status in done:
            result = (time.perf_counter() - start) * 1000
            record = client.get(f"/api/tasks/{job_id}").json()  # a v2 job is a task
            return {"submit": (submitted - start) * 1000, "result": result, "poll": polls,
                    "in_server": record["finished_ms"] - record["created_ms"], "status": status}
        time.sleep(poll_s)


def latency(api: str, count: int, poll_ms: float) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {r: {"submit": [], "result": [], "poll": [], "in_server": []}
                                                for r in ROUTES}
    statuses: dict[str, set[str]] = {r: set() for r in ROUTES}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for i in range(count):
            for route in (ROUTES if i % 2 == 0 else reversed(list(ROUTES))):  # alternate: no drift favours one
                measured = one_job(client, route, 1_000_000 + i * 2 + len(route), poll_ms / 1000)
                for kind in ("submit", "result", "in_server"):
                    times[route][kind].append(measured[kind])
                times[route]["poll"] += measured["poll"]
                statuses[route].add(measured["status"])
    figures: dict[str, Any] = {"jobs_per_route": count, "poll_ms": poll_ms}
    for route, measured in times.items():
        for kind, values in measured.items():
            figures[f"{route}_{kind}_ms_p50"] = round(percentile(values, 0.5), 2)
            figures[f"{route}_{kind}_ms_p99"] = round(percentile(values, 0.99), 2)
        figures[f"{route}_statuses"] = sorted(statuses[route])
    for kind in ("submit", "result", "poll", "in_server"):
        figures[f"v2_overhead_{kind}_ms_p50"] = round(figures[f"v2_{kind}_ms_p50"] - figures[f"tasks_{kind}_ms_p50"], 2)
    return figures


async def submit_all(api: str, route: str, count: int, clients: int, offset: int) -> tuple[float, list[str]]:
    """``clients`` concurrent clients submit ``count`` graphs through ``route`` (v2: each with a key of its own);
    (seconds, ids)."""
    submit_path, body, _, _ = ROUTES[route]
    numbers = iter(range(count))
    ids: list[str] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in numbers:  # one shared iterator: each number goes to one client
            headers = {"Idempotency-Key": f"bench-{uuid.uuid4()}"} if route == "v2" else None
            answer = await client.post(submit_path, json=body(offset + i), headers=headers)
            answer.raise_for_status()
            ids.append(answer.json()["id"])

    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return time.perf_counter() - start, ids


def wait_finished(api: str, route: str, ids: list[str], timeout_s: float = 600) -> None:
    _, _, read_path, done = ROUTES[route]
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api, headers=headers, timeout=30) as client:
        for job_id in ids:
            while client.get(read_path.format(job_id)).json()["status"] not in done:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{route} job {job_id} not finished after {timeout_s} s")
                time.sleep(0.05)


def key_bytes(store: redis.Redis) -> dict[str, int]:
    """Every key of the daemon's prefix -> its MEMORY USAGE (all its samples: a whole index, not an estimate)."""
    return {key: int(store.memory_usage(key, samples=0) or 0)
            for key in store.scan_iter(match=f"{PREFIX}:*", count=1000)}


def kept_per_job(before: dict[str, int], after: dict[str, int], ids: list[str]) -> dict[str, float]:
    """The bytes ``ids`` (finished v2 jobs) added, per job: their records, their idempotency keys, the rest (the
    indexes that list them, the prompt maps...)."""
    records = {f"{PREFIX}:task:{job_id}" for job_id in ids}
    record_bytes = sum(size for key, size in after.items() if key in records)
    idem_bytes = sum(size for key, size in after.items() if ":idem:" in key and key not in before)
    total = sum(after.values()) - sum(before.values())
    count = len(ids)
    return {"jobs": count, "bytes_per_job": round(total / count), "task_record_bytes": round(record_bytes / count),
            "idempotency_key_bytes": round(idem_bytes / count),
            "indexes_and_rest_bytes": round((total - record_bytes - idem_bytes) / count)}


def submits(api: str, redis_url: str, count: int, clients: int) -> dict[str, Any]:
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    before = key_bytes(store)
    v2_s, v2_ids = asyncio.run(submit_all(api, "v2", count, clients, 2_000_000))
    wait_finished(api, "v2", v2_ids)
    time.sleep(1.0)  # the last outputs stored, the records final
    kept = kept_per_job(before, key_bytes(store), v2_ids)
    tasks_s, tasks_ids = asyncio.run(submit_all(api, "tasks", count, clients, 3_000_000))
    wait_finished(api, "tasks", tasks_ids)
    store.close()
    return {"clients": clients, "jobs": count, "v2_keyed_jobs_per_s": round(count / v2_s, 1),
            "tasks_jobs_per_s": round(count / tasks_s, 1), "redis_per_finished_v2_job": kept}


def has_upload_route(api: str) -> bool:
    schema = httpx.get(api + "/openapi.json", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).json()
    return "post" in schema.get("paths", {}).get("/api/v2/assets", {})


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def upload(api: str, pid: int, workdir: Path, megabytes: int) -> dict[str, Any]:
    """One ``megabytes`` MB asset through POST /api/v2/assets (multipart: ``file``, ``content_type``,
    ``file_path``), comfyart's RSS sampled every 10 ms meanwhile."""
    path = workdir / "upload.bin"
    with path.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1 << 20))
    peak, stop = [rss_kb(pid)], threading.Event()
    rss_before = peak[0]

    def sample() -> None:
        while not stop.wait(0.01):
            peak.append(rss_kb(pid))

    sampler = threading.Thread(target=sample, name="rss sampler")
    sampler.start()
    try:
        with path.open("rb") as blob, httpx.Client(base_url=api, timeout=600) as client:
            start = time.perf_counter()
            answer = client.post("/api/v2/assets", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                                 files={"file": ("upload.bin", blob, "application/octet-stream")},
                                 data={"content_type": "application/octet-stream", "file_path": "bench/upload.bin"})
            seconds = time.perf_counter() - start
    finally:
        stop.set()
        sampler.join()
        path.unlink()
    return {"megabytes": megabytes, "status": answer.status_code, "answer": answer.text[:200],
            "mb_per_s": round(megabytes / seconds, 1), "rss_before_mb": round(rss_before / 1024, 1),
            "peak_rss_during_mb": round(max(peak) / 1024, 1), "vmhwm_mb": round(rss_kb(pid, "VmHWM") / 1024, 1)}


def start(rig: Rig) -> tuple[Any, str, str]:
    redis_url = rig.redis()
    keys = [{"name": "bench", "key": CLIENT_KEY}, {"name": "ops", "role": "admin", "key": ADMIN_KEY}]
    auth = {"keys": keys, "quotas": {"max_queued": 100_000, "submissions_per_minute": 1_000_000, "burst": 100_000}}
    process, api = rig.daemon(redis_url, [rig.emulator(0.0)], "v2", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                              auth=auth, redis={"prefix": PREFIX}, scheduler={"prefetch": 1})
    return process, api, redis_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs per route, one at a time")
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=640, help="jobs per route submitted by the clients")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--upload-mb", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="30 latency jobs, 64 submitted, a 10 MB upload")
    args = parser.parse_args()
    if args.quick:
        args.latency_jobs, args.jobs, args.upload_mb = 30, 64, 10
    rig = Rig(Path(tempfile.mkdtemp(prefix="bench-v2-")))
    try:
        process, api, redis_url = start(rig)
        results: dict[str, Any] = {"latency": latency(api, args.latency_jobs, args.poll_ms),
                                   "submits": submits(api, redis_url, args.jobs, args.clients)}
        results["upload"] = (upload(api, process.pid, rig.workdir, args.upload_mb) if has_upload_route(api)
                             else {"skipped": "the daemon's OpenAPI lists no POST /api/v2/assets"})
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    report("v2", results)


if __name__ == "__main__":
    main()
