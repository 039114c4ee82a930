"""Event latency across replicas (issue 24): from a status change made by the replica that runs the loops (A, with
the backends) to a client of the events WebSocket (``/api/events``) on another replica (B, no backends), against a
client of A itself. Two ``comfyart serve`` processes on one redis-server (one prefix), emulated backends, the same
host clock: latency = arrival at the client - the time the change carries (``started_ms`` of ``running``,
``finished_ms`` of ``completed``: taken by A just before its status change goes to Redis, so the figure includes
the change's own round trip, the stream and the bridge).

    python3 bench/event_latency.py [--tasks 300] [--backends 8]

Prints p50/p90/p99/max in ms per replica, and the Redis cost (stream length, bytes per entry); writes
bench/results/event_latency.json. ``--tasks 30 --backends 2`` is a smoke run (seconds)."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import Rig, report  # noqa: E402

STAMPS = {"running": "started_ms", "completed": "finished_ms"}


def graph(seed: int) -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": seed}},
            "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"lat/{seed}", "images": ["1", 0]}}}


async def listen(api: str, heard: list[float], done: asyncio.Event, expected: int) -> None:
    ends = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(api.replace("http", "ws") + "/api/events") as ws:
        async for message in ws:
            arrived_ms = time.time() * 1000
            event = json.loads(message.data)
            stamp = STAMPS.get(event.get("status", "")) if event.get("type") == "task" else None
            if stamp and event.get("previous") != event.get("status") and event.get(stamp):
                heard.append(arrived_ms - event[stamp])
                ends += event["status"] == "completed"
                if ends >= expected:
                    done.set()
                    return


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"events": len(ordered), "p50_ms": round(statistics.median(ordered), 2), "p90_ms": round(at(0.9), 2),
            "p99_ms": round(at(0.99), 2), "max_ms": round(ordered[-1], 2)}


async def measure(a: str, b: str, tasks: int) -> dict[str, Any]:
    on_a: list[float] = []
    on_b: list[float] = []
    done_a, done_b = asyncio.Event(), asyncio.Event()
    listeners = [asyncio.create_task(listen(a, on_a, done_a, tasks)),
                 asyncio.create_task(listen(b, on_b, done_b, tasks))]
    await asyncio.sleep(1)
    async with httpx.AsyncClient(base_url=a, timeout=30) as client:
        for i in range(tasks):
            (await client.post("/api/tasks", json={"prompt": graph(i)})).raise_for_status()
            await asyncio.sleep(0.01)  # a steady flow, not one burst
    async with asyncio.timeout(300):
        await asyncio.gather(done_a.wait(), done_b.wait())
    for listener in listeners:
        listener.cancel()
    return {"on_the_replica_that_ran_it": percentiles(on_a), "on_another_replica": percentiles(on_b)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--backends", type=int, default=8)
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-latency-")))
    try:
        redis_url = rig.redis()
        urls = [rig.emulator(0.02) for _ in range(args.backends)]
        shared = {"prefix": "bench-latency"}
        _, a = rig.daemon(redis_url, urls, "a", redis=shared)
        _, b = rig.daemon(redis_url, [], "b", redis=shared)
        result = asyncio.run(measure(a, b, args.tasks))
        client = redis.Redis.from_url(redis_url)
        length = client.xlen("bench-latency:events")
        sample = client.xrange("bench-latency:events", count=200)
        size = statistics.mean(sum(len(k) + len(v) for k, v in fields.items()) for _, fields in sample)
        result["stream"] = {"entries": length, "entries_per_task": round(length / args.tasks, 2),
                            "field_bytes_per_entry": round(size),
                            "memory_bytes_per_entry": round(client.memory_usage("bench-latency:events") / length)}
    finally:
        rig.close()
    report("event_latency", result)


if __name__ == "__main__":
    main()
