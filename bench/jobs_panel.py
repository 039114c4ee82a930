"""The web editor's job panel on a long history: what its two lists cost (frontend 1.58 asks both at every change
of the queue: ``GET /api/jobs?status=in_progress,pending&limit=200`` and
``GET /api/jobs?status=completed,failed,cancelled&limit=64``).

    python3 bench/jobs_panel.py [--jobs N] [--requests N] [--workflow-kb K]

Starts its own redis-server and an emulator, and ``comfyart serve`` as a subprocess; queues N prompts through the
ComfyUI-compatible API, each carrying a UI workflow of K KB in ``extra_data.extra_pnginfo`` (the editor's own
prompts carry theirs, 20-60 KB), waits until all have finished, then times each list --requests times. Run it from a
checkout of an older commit (with this file copied there) for the figures before.
Prints a table and writes bench/results/jobs_panel.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, Rig  # noqa: E402  (bench/ is not a package)

LISTS = {"running and waiting": {"status": "in_progress,pending", "limit": 200},
         "finished, first page": {"status": "completed,failed,cancelled", "limit": 64}}


def prompt(i: int, workflow: dict) -> dict:
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "panel"}}}
    return {"prompt": graph, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}


def fill(api: str, jobs: int, workflow_kb: int) -> None:
    workflow = {"nodes": [{"id": i, "type": "Note", "widgets_values": ["x" * 1000]} for i in range(workflow_kb)]}
    with httpx.Client(base_url=api, timeout=60) as client:
        for i in range(jobs):
            client.post("/prompt", json=prompt(i, workflow)).raise_for_status()
        while client.get("/api/jobs", params=LISTS["running and waiting"]).json()["pagination"]["total"]:
            time.sleep(0.5)


def timed(api: str, requests: int) -> dict:
    figures = {}
    with httpx.Client(base_url=api, timeout=60) as client:
        for name, params in LISTS.items():
            times, size = [], 0
            for _ in range(requests):
                start = time.perf_counter()
                answer = client.get("/api/jobs", params=params)
                times.append((time.perf_counter() - start) * 1000)
                answer.raise_for_status()
                size = len(answer.content)
            times.sort()
            figures[name] = {"median_ms": round(statistics.median(times), 2),
                             "p90_ms": round(times[int(len(times) * 0.9) - 1], 2), "bytes": size}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--workflow-kb", type=int, default=25)
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="bench-jobs-")))
    try:
        redis_url = rig.redis()
        _, api = rig.daemon(redis_url, [rig.emulator(0.0)], "jobs", scheduler={"prefetch": 4})
        fill(api, args.jobs, args.workflow_kb)
        results = {"jobs": args.jobs, "workflow_kb": args.workflow_kb, "lists": timed(api, args.requests),
                   "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    finally:
        rig.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jobs_panel.json").write_text(json.dumps(results, indent=2))
    print(f"{args.jobs} finished jobs, each with a {args.workflow_kb} KB workflow")
    for name, figure in results["lists"].items():
        print(f"  {name:22} median {figure['median_ms']:8.2f} ms   p90 {figure['p90_ms']:8.2f} ms   "
              f"{figure['bytes']} bytes")


if __name__ == "__main__":
    main()
