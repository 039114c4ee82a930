"""What a queue of tasks submitted by workflow name costs in Redis, against the same tasks as whole graphs.

    python3 bench/workflow_queue.py [--tasks 100000]

Starts its own redis-server (or uses REDIS_URL, which it flushes), stores the shipped text-to-image workflow,
queues --tasks runs of it by name (random seed, a prompt of 60 characters) through the same code the API uses,
then the same number of raw-graph tasks (the same 7-node graph, and one grown to the size of a typical production
graph with a chain of LoRA loaders and the titles ComfyUI's API export carries), and reports Redis memory per
queued task, the extrapolation to a million, and the submission rate of each kind (one client, awaited one by
one: a lower bound for the API's rate).
Also times the dispatcher's resolution of a queued task into its graph. Prints a table and writes
bench/results/workflow_queue.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, ROOT, Rig  # noqa: E402

sys.path.insert(0, str(ROOT))
from comfyart.files.inputs import InputStore  # noqa: E402
from comfyart.files.outputs import OutputStore  # noqa: E402
from comfyart.store.tasks import TaskStore  # noqa: E402
from comfyart.store.workflows import WorkflowStore  # noqa: E402
from comfyart.workflows.definition import WorkflowDefinition  # noqa: E402
from comfyart.workflows.resolve import Templates  # noqa: E402

EXAMPLES = ROOT / "config" / "workflows"
PROMPT = "a lighthouse on a cliff at dawn, oil painting, dramatic light"


def grown(graph: dict, loras: int) -> dict:
    """``graph`` with ``loras`` LoRA loaders chained between the checkpoint and its users, as big graphs are."""
    big = json.loads(json.dumps(graph))
    model, clip = ["4", 0], ["4", 1]
    for i in range(loras):
        node = str(100 + i)
        big[node] = {"class_type": "LoraLoader", "_meta": {"title": f"Load LoRA {i}"},
                     "inputs": {"lora_name": f"styles/detail-tweaker-{i:02d}-v1.5.safetensors",
                                "strength_model": 0.8, "strength_clip": 0.8, "model": model, "clip": clip}}
        model, clip = [node, 0], [node, 1]
    big["3"]["inputs"]["model"] = model
    for encoder in ("6", "7"):
        big[encoder]["inputs"]["clip"] = clip
    for node in big.values():
        node.setdefault("_meta", {"title": node["class_type"]})
    return big


async def raw_cost(client: aioredis.Redis, tasks: TaskStore, graph: dict, count: int) -> tuple:
    await client.flushall()
    before = await used_memory(client)
    started = time.perf_counter()
    for _ in range(count):
        await tasks.create(graph)
    return (await used_memory(client) - before) / count, time.perf_counter() - started


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def measure(redis_url: str, count: int) -> dict:
    client = aioredis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    workdir = Path(tempfile.mkdtemp(prefix="comfyart-bench-"))
    tasks = TaskStore(client, "bench")
    workflows = WorkflowStore(client, "bench")
    templates = Templates(workflows=workflows, tasks=tasks, inputs=InputStore(workdir / "in"),
                          outputs=OutputStore(workdir / "out"))
    graph = json.loads((EXAMPLES / "text-to-image-api.json").read_text())
    meta = yaml.safe_load((EXAMPLES / "text-to-image.params.yaml").read_text())
    await workflows.put("text-to-image", WorkflowDefinition(graph=graph, **meta))
    params = {"prompt": PROMPT, "steps": 30, "width": 768, "height": 512}

    before = await used_memory(client)
    started = time.perf_counter()
    for _ in range(count):
        await templates.submit("text-to-image", params)
    by_name_s = time.perf_counter() - started
    by_name_bytes = (await used_memory(client) - before) / count

    resolved = {**graph, "6": {**graph["6"], "inputs": {**graph["6"]["inputs"], "text": PROMPT}}}
    raw_bytes, raw_s = await raw_cost(client, tasks, resolved, count)
    big = grown(resolved, 60)
    big_bytes, _ = await raw_cost(client, tasks, big, count // 10)

    await client.flushall()
    await workflows.put("text-to-image", WorkflowDefinition(graph=graph, **meta))
    queued = [await templates.submit("text-to-image", params) for _ in range(1000)]
    started = time.perf_counter()
    for task in queued:
        await templates.prepare(task)
    prepare_ms = (time.perf_counter() - started) * 1000 / len(queued)
    await client.flushall()
    await client.aclose()
    return {"tasks": count, "by_name_bytes_per_task": round(by_name_bytes), "raw_bytes_per_task": round(raw_bytes),
            "by_name_mb_per_million": round(by_name_bytes * 1e6 / 2**20),
            "raw_mb_per_million": round(raw_bytes * 1e6 / 2**20),
            "big_graph_nodes": len(big), "big_graph_json_bytes": len(json.dumps(big, separators=(",", ":"))),
            "big_raw_bytes_per_task": round(big_bytes), "big_raw_mb_per_million": round(big_bytes * 1e6 / 2**20),
            "by_name_submit_per_s": round(count / by_name_s), "raw_submit_per_s": round(count / raw_s),
            "prepare_ms_per_task": round(prepare_ms, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-bench-")))
    try:
        result = asyncio.run(measure(rig.redis(), args.tasks))
    finally:
        rig.close()
    print(f"{'queued tasks':<34}{result['tasks']:>12}")
    big = f"raw {result['big_graph_nodes']} nodes"
    print(f"{'':<34}{'by name':>12}{'raw 7 nodes':>14}{big:>16}")
    print(f"{'Redis bytes per queued task':<34}{result['by_name_bytes_per_task']:>12}"
          f"{result['raw_bytes_per_task']:>14}{result['big_raw_bytes_per_task']:>16}")
    print(f"{'Redis MiB per million':<34}{result['by_name_mb_per_million']:>12}{result['raw_mb_per_million']:>14}"
          f"{result['big_raw_mb_per_million']:>16}")
    print(f"{'submissions per second':<34}{result['by_name_submit_per_s']:>12}{result['raw_submit_per_s']:>12}")
    print(f"{'resolve at dispatch, ms per task':<34}{result['prepare_ms_per_task']:>12}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workflow_queue.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
