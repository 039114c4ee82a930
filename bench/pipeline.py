"""Core pipeline benchmark: comfyart's overhead and throughput against emulated ComfyUI backends.

    python3 bench/pipeline.py [--quick]

1. overhead: one backend, tasks of fixed duration; comfyart's makespan versus the same prompts posted straight
   into the emulator's own queue (the limit), and the latency comfyart adds per task (created → completed, minus
   the run time the backend's history reports).
2. throughput: several backends, zero-duration tasks; tasks completed per second end to end (records, tracking
   and downloaded outputs included) and the daemon's CPU time per task.
Starts its own redis-server (or uses REDIS_URL), emulator processes, and `comfyart serve` as a subprocess.
Prints a table and writes bench/results/pipeline.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def graph(i: int) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": i}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"bench/{i}"}}}


class Rig:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], port: int, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        wait_port(port)
        return process

    def redis(self) -> str:
        if os.environ.get("REDIS_URL"):
            return os.environ["REDIS_URL"]
        port = free_port()
        binary = "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else shutil.which("redis-server")
        self.spawn([binary, "--port", str(port), "--save", "", "--appendonly", "no"], port)
        return f"redis://127.0.0.1:{port}/0"

    def emulator(self, node_s: float) -> str:
        port = free_port()
        self.spawn([sys.executable, "-m", "comfyart.emulator", "--port", str(port), "--node-seconds", str(node_s),
                    "--base-dir", str(self.workdir / f"emu-{port}")], port)
        return f"http://127.0.0.1:{port}"

    def daemon(self, redis_url: str, backends: list[str], name: str, headers: dict | None = None,
               **sections: dict) -> tuple:
        """``comfyart serve`` over static ``backends``; ``sections`` (e.g. ``scheduler={...}``) extend the config;
        ``headers`` carry an admin key when the config turns auth on."""
        port = free_port()
        config = {"server": {"port": port}, "redis": {"url": redis_url, "prefix": f"bench-{name}"},
                  "data_dir": str(self.workdir / f"data-{name}"),
                  "static_backends": [{"name": f"b{i}", "url": u} for i, u in enumerate(backends)],
                  "pool": {"min_containers": 0}, "scheduler": {"prefetch": 0}}
        for key, value in sections.items():
            config[key] = {**config.get(key, {}), **value}
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        process = self.spawn([sys.executable, "-m", "comfyart", "serve", "--config", str(path), "--log-level",
                              "warning"], port)
        api = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while sum(b["status"] == "healthy"
                  for b in httpx.get(api + "/api/pool", headers=headers).json()["backends"]) < len(backends):
            if time.monotonic() > deadline:
                raise TimeoutError("backends not healthy")
            time.sleep(0.1)
        return process, api

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def register(api: str, urls: list[str]) -> None:
    """Announce ``urls`` as static backends b0, b1, … to the daemon at ``api``, 16 at a time."""
    def one(item: tuple[int, str]) -> None:
        index, url = item
        answer = httpx.post(f"{api}/api/pool/backends", json={"name": f"b{index}", "url": url}, timeout=60)
        if answer.status_code >= 300:
            raise RuntimeError(f"registering {url}: HTTP {answer.status_code} {answer.text}")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, enumerate(urls)))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_through_comfyart(api: str, count: int, offset: int) -> tuple:
    with httpx.Client(base_url=api, timeout=30) as client:
        start = time.monotonic()
        ids = [client.post("/api/tasks", json={"prompt": graph(offset + i)}).json()["id"] for i in range(count)]
        while True:
            done = client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"]
            failed = client.get("/api/tasks", params={"status": "failed", "limit": 1}).json()["total"]
            if failed:
                raise RuntimeError(f"{failed} tasks failed")
            if done >= count:
                break
            time.sleep(0.02)
        makespan = time.monotonic() - start
        records = [client.get(f"/api/tasks/{task_id}").json() for task_id in ids]
    return makespan, records


def run_direct(backend: str, count: int, offset: int) -> float:
    with httpx.Client(timeout=30) as client:
        start = time.monotonic()
        ids = [client.post(backend + "/prompt", json={"prompt": graph(offset + i), "client_id": "bench"}).json()
               ["prompt_id"] for i in range(count)]
        while not client.get(f"{backend}/history/{ids[-1]}").json():
            time.sleep(0.005)
        return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def overhead(rig: Rig, redis_url: str, count: int, node_s: float) -> dict[str, float]:
    direct_backend, comfyart_backend = rig.emulator(node_s), rig.emulator(node_s)
    direct = run_direct(direct_backend, count, 0)
    _, api = rig.daemon(redis_url, [comfyart_backend], "overhead")
    makespan, records = run_through_comfyart(api, count, 0)
    with httpx.Client(timeout=30) as client:
        added = []
        for record in records:
            entry = client.get(f"{comfyart_backend}/history/{record['prompt_id']}").json()[record["prompt_id"]]
            messages = dict((kind, data) for kind, data in entry["status"]["messages"])
            run_ms = messages["execution_success"]["timestamp"] - messages["execution_start"]["timestamp"]
            added.append(record["finished_ms"] - record["started_ms"] - run_ms)
    return {"tasks": count, "task_seconds": round(3 * node_s, 3), "direct_makespan_s": round(direct, 3),
            "comfyart_makespan_s": round(makespan, 3), "ratio": round(makespan / direct, 4),
            "added_after_run_ms_p50": percentile(added, 0.5), "added_after_run_ms_p99": percentile(added, 0.99),
            "per_task_gap_ms": round((makespan - direct) / count * 1000, 2)}


def throughput(rig: Rig, redis_url: str, count: int, backends: int) -> dict[str, float]:
    urls = [rig.emulator(0.0) for _ in range(backends)]
    process, api = rig.daemon(redis_url, urls, "throughput")
    cpu_before = cpu_seconds(process.pid)
    makespan, records = run_through_comfyart(api, count, 10_000)
    cpu = cpu_seconds(process.pid) - cpu_before
    latency = [r["finished_ms"] - r["created_ms"] for r in records]
    return {"tasks": count, "backends": backends, "makespan_s": round(makespan, 3),
            "tasks_per_s": round(count / makespan, 1), "daemon_cpu_ms_per_task": round(cpu / count * 1000, 2),
            "latency_ms_p50": percentile(latency, 0.5), "latency_ms_p99": percentile(latency, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks (a smoke run)")
    args = parser.parse_args()
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-bench-")))
    try:
        redis_url = rig.redis()
        results = {"overhead": overhead(rig, redis_url, 10 if args.quick else 40, node_s=0.1),
                   "throughput": throughput(rig, redis_url, 100 if args.quick else 600, backends=8)}
    finally:
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    report("pipeline", results)


def report(name: str, results: dict[str, Any]) -> None:
    """Add the machine to ``results``, write them to bench/results/NAME.json and print them, a figure a line."""
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2))
    sections = [section for section in results if section != "machine"]
    width = max(len(key) for section in sections for key in results[section]) + 2
    print(f"{'benchmark':<12} {'figure':<{width}} value")
    for section in sections:
        for key, value in results[section].items():
            print(f"{section:<12} {key:<{width}} {value}")
    print(f"written to {RESULTS / f'{name}.json'}")


if __name__ == "__main__":
    main()
