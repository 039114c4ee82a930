"""Kill-and-recover benchmark: ``comfyart serve`` is killed with SIGKILL in the middle of a run and started again.

    python3 bench/recovery.py [--quick]

Emulated backends keep running through the kill. Reports what the kill left in Redis (queued, claimed, in flight),
how long the new process took to serve its API, to submit its first task and to complete its first task, and
checks the outcome: every task completed exactly once (one output each, the backends ran each prompt once).
Starts its own redis-server (or uses REDIS_URL) and emulator processes. Writes bench/results/recovery.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, ROOT, Rig, free_port, graph, wait_port  # noqa: E402

PREFIX = "bench-recovery"


def serve(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "comfyart", "serve", "--config", str(config_path), "--log-level",
                             "warning"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def completed(api: str) -> int:
    return int(httpx.get(api + "/api/tasks", params={"status": "completed", "limit": 1}).json()["total"])


def run(tasks: int, backends: int, node_s: float, kill_at: float) -> dict[str, Any]:
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-recovery-")))
    try:
        redis_url = rig.redis()
        urls = [rig.emulator(node_s) for _ in range(backends)]
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        data_dir = rig.workdir / "data"
        config = {"server": {"port": port}, "redis": {"url": redis_url, "prefix": PREFIX}, "data_dir": str(data_dir),
                  "static_backends": [{"name": f"b{i}", "url": u} for i, u in enumerate(urls)],
                  "pool": {"min_containers": 0, "health_interval_s": 1}, "scheduler": {"prefetch": 1},
                  "tracking": {"silence_s": 2}}
        config_path = rig.workdir / "comfyart.yaml"
        config_path.write_text(yaml.safe_dump(config))

        first = serve(config_path)
        wait_port(port)
        with httpx.Client(base_url=api, timeout=30) as client:
            ids = [client.post("/api/tasks", json={"prompt": graph(i)}).json()["id"] for i in range(tasks)]
        while completed(api) < tasks * kill_at:
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_ms = int(time.time() * 1000)
        with redis.Redis.from_url(redis_url, decode_responses=True) as r:
            at_kill = {"queued": r.zcard(f"{PREFIX}:queue"), "claimed": r.zcard(f"{PREFIX}:claims"),
                       "in_flight": r.scard(f"{PREFIX}:active"),
                       "completed": r.zcard(f"{PREFIX}:tasks:completed")}

        restart = time.monotonic()
        restart_ms = int(time.time() * 1000)
        second = serve(config_path)
        rig.processes.append(second)
        wait_port(port)
        api_ready_s = time.monotonic() - restart
        while completed(api) < tasks:
            if time.monotonic() - restart > 300:
                raise TimeoutError("tasks did not complete after the restart")
            time.sleep(0.05)
        finished_s = time.monotonic() - restart
        with httpx.Client(base_url=api, timeout=30) as client:
            records = [client.get(f"/api/tasks/{task_id}").json() for task_id in ids]
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    finally:
        rig.close()
    submitted_after = [r["submitted_ms"] for r in records if (r.get("submitted_ms") or 0) >= restart_ms]
    finished_after = [r["finished_ms"] for r in records if r["finished_ms"] >= restart_ms]
    outputs = [p for p in (data_dir / "outputs").rglob("*") if p.is_file()]
    prompts_run = sum(1 for p in rig.workdir.glob("emu-*/output/**/*.png"))
    def seconds_after(times: list[int], origin_ms: int) -> Any:
        return round((min(times) - origin_ms) / 1000, 3) if times else None

    result = {
        "tasks": tasks, "backends": backends, "task_seconds": round(3 * node_s, 3), "at_kill": at_kill,
        "restart_to_api_s": round(api_ready_s, 3),
        "restart_to_first_dispatch_s": seconds_after(submitted_after, restart_ms),
        "restart_to_first_completion_s": seconds_after(finished_after, restart_ms),
        "kill_to_first_completion_s": seconds_after(finished_after, killed_ms),
        "restart_to_all_done_s": round(finished_s, 3),
        "completed": sum(r["status"] == "completed" for r in records),
        "retried": sum(1 for r in records if r["history"]),
        "outputs_stored": len(outputs), "prompts_run_on_backends": prompts_run,
        "exactly_once": (all(r["status"] == "completed" and len(r["outputs"]) == 1 for r in records)
                         and len(outputs) == tasks and prompts_run == tasks),
    }
    shutil.rmtree(rig.workdir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks (a smoke run)")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = [run(100 if args.quick else 400, backends=4, node_s=0.05, kill_at=1 / 3)]
    if not args.quick:
        runs.append(run(400, backends=8, node_s=0.0, kill_at=1 / 2))
    results = {"runs": runs, "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "recovery.json").write_text(json.dumps(results, indent=2))
    for i, result in enumerate(runs):
        print(f"run {i + 1}")
        for key, value in result.items():
            print(f"  {key:<32} {value}")
    print(f"written to {RESULTS / 'recovery.json'}")
    if not all(r["exactly_once"] for r in runs):
        raise SystemExit("a task was lost, repeated or downloaded twice")


if __name__ == "__main__":
    main()
