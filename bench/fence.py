"""What the fence (``store.fence``) costs on the hot path: ``TaskStore.update`` and ``TaskQueue.claim_ids``, each
called one at a time and (updates) a batch of 256 at once, under a leader's fence and with none (a user's write:
the script skips the epoch GET).

    python3 bench/fence.py [--calls 3000] [--rounds 5]

Reports the client's wall time per call (one round trip each) and Redis's own time per script call
(``INFO commandstats`` evalsha; a batch is one call), the best of ``rounds`` rounds, the modes taking turns (the
machine's noise is larger than the difference). Run it in a checkout from before the fence for the baseline.
Starts its own redis-server (or uses REDIS_URL). Prints JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comfyart.models import NewTask  # noqa: E402
from comfyart.store.stores import Stores  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import free_port, wait_port  # noqa: E402

try:
    from comfyart.store.fence import FENCE, Fence  # noqa: E402
except ImportError:  # a checkout from before the fence: its numbers are the baseline
    FENCE = None

GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {}}}


async def server_us_per_script(client: aioredis.Redis) -> float:
    stats = await client.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


async def measured(client: aioredis.Redis, calls: int, run: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    await client.config_resetstat()
    start = time.perf_counter()
    await run()
    wall = time.perf_counter() - start
    return {"client_us_per_call": round(wall / calls * 1e6, 1),
            "redis_us_per_script": round(await server_us_per_script(client), 2)}


async def one_mode(stores: Stores, calls: int) -> dict[str, Any]:
    client = stores.client
    await client.flushdb()
    await client.set(stores.keys.leader_epoch, 7)
    ids = [(await stores.tasks.create(NewTask(GRAPH))).id for _ in range(calls)]

    async def updates_one_at_a_time() -> None:
        for task_id in ids:
            await stores.tasks.update(task_id, progress=0.1)

    async def updates_in_batches() -> None:
        for start in range(0, calls, 256):
            await asyncio.gather(*(stores.tasks.update(t, progress=0.2) for t in ids[start:start + 256]))

    async def claims_one_at_a_time() -> None:
        for task_id in ids:
            await stores.queue.claim_ids([task_id], 30)

    return {"update, one at a time": await measured(client, calls, updates_one_at_a_time),
            "update, batches of 256 (per update)": await measured(client, calls, updates_in_batches),
            "claim, one at a time": await measured(client, calls, claims_one_at_a_time)}


async def in_mode(stores: Stores, calls: int, fence: Any) -> dict[str, Any]:
    if FENCE is None:
        return await one_mode(stores, calls)
    token = FENCE.set(fence)
    try:
        return await one_mode(stores, calls)
    finally:
        FENCE.reset(token)


def best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {case: {metric: min(r[case][metric] for r in rounds) for metric in rounds[0][case]}
            for case in rounds[0]}


async def main(redis_url: str, calls: int, rounds: int) -> dict[str, Any]:
    client = aioredis.from_url(redis_url, decode_responses=True)
    stores = Stores.on(client, "bench-fence")
    modes = ({"before the fence": None} if FENCE is None else
             {"no fence (a user's write)": None, "leader's fence": Fence(7)})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
    try:
        await one_mode(stores, 100)  # scripts loaded, connections open
        for _ in range(rounds):
            for name, fence in modes.items():
                runs[name].append(await in_mode(stores, calls, fence))
    finally:
        await stores.aclose()
    return {name: best(results) for name, results in runs.items()}


def with_redis(calls: int, rounds: int) -> dict[str, Any]:
    if url := os.environ.get("REDIS_URL"):
        return asyncio.run(main(url, calls, rounds))
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-fence-")
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        return asyncio.run(main(f"redis://127.0.0.1:{port}/0", calls, rounds))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(with_redis(args.calls, args.rounds), indent=2))
