"""Scheduling benchmark: does comfyart keep every GPU busy? Six measurements against emulated backends.

    python3 bench/scheduling.py [--quick] [--only overhead,idle_gap,throughput,makespan,affinity,scale]
    python3 bench/scheduling.py --only replication [--replicas 3] [--clients 1] [--rounds 3] [--submit-to leader]

1. overhead    one backend, 1 s tasks: makespan through comfyart ÷ the same prompts posted straight into the
               emulator's queue, and the latency comfyart adds per task (p50/p99).
2. idle_gap    one saturated backend: time from one prompt's execution_success to the next one's
               execution_start (the backend's own timestamps), with prefetch 0 and 1.
3. throughput  zero-duration tasks on 64 backends, queued first: tasks/s completed end to end (records, events,
               downloaded outputs) and the daemon's CPU per task.
4. makespan    heavy-tailed tasks (KSampler steps from a Pareto law) on 16 backends, per strategy in FIFO order,
               then least_busy in longest_first order (prefetch 1 and 0): makespan ÷ the ideal, max(total work ÷
               backends, longest task), from the run times the backends recorded.
5. affinity    tasks over 4 checkpoints on 8 backends that take --model-load seconds to switch checkpoint: model
               loads and makespan, least_busy against affinity.
6. scale       1,000 backends registered, 100,000 tasks of 10 s queued by workflow name: Redis bytes per queued
               task, the daemon's CPU at steady state (every backend busy), and how long a new high-priority task
               takes to reach a backend (the next slot to free up).
7. replication (only when named: issue 24) throughput's run with one process (without, then with the event
               stream) against one leader plus followers whose /api/events clients follow every task, in turns:
               tasks/s and CPU per task of each (bench/replication.py).

Backends are emulator fleets (many independent emulators per process), Redis is a redis-server of its own, and
comfyart runs as `comfyart serve`. Prints a table and writes bench/results/scheduling.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
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
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import RESULTS, Rig, cpu_seconds, graph, percentile, register, run_direct, wait_port  # noqa: E402
from replication import replication  # noqa: E402

CHECKPOINTS = ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors", "dreamshaper_8.safetensors",
               "realisticVision_v60.safetensors"]


def sampler_graph(seed: int, steps: int, checkpoint: str = CHECKPOINTS[0]) -> dict:
    """The text-to-image graph: its duration is ``steps`` × the emulator's step time."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": f"a lighthouse {seed}", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"bench/{seed}", "images": ["8", 0]}},
    }


class Bench(Rig):
    def fleet(self, count: int, per_process: int = 16, *flags: str) -> list[str]:
        """``count`` independent emulators, ``per_process`` to a process."""
        urls = []
        while len(urls) < count:
            size = min(per_process, count - len(urls))
            port = free_port_block(size)
            process = subprocess.Popen(
                [sys.executable, "-m", "comfyart.emulator", "--port", str(port), "--count", str(size),
                 "--base-dir", str(self.workdir / f"fleet-{port}"), *flags],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.processes.append(process)
            wait_port(port + size - 1, 60)
            urls += [f"http://127.0.0.1:{port + i}" for i in range(size)]
        return urls

    def empty_daemon(self, redis_url: str, name: str, **sections: dict) -> tuple:
        """A daemon with no backends yet (prefetch 1 unless given): tasks queue up until ``register`` adds them."""
        return self.daemon(redis_url, [], name, tracking={"silence_s": 30},
                           **{**sections, "scheduler": {"prefetch": 1, **sections.get("scheduler", {})}})


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive free ports."""
    for _ in range(50):
        start = random.randrange(20000, 60000 - size)
        try:
            for port in range(start, start + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    raise RuntimeError("no block of free ports")


def post_tasks(api: str, bodies: list[dict]) -> list[str]:
    with httpx.Client(base_url=api, timeout=60) as client:
        return [client.post("/api/tasks", json=body).json()["id"] for body in bodies]


def wait_all(api: str, count: int, timeout_s: float = 900) -> None:
    """Poll (gently: the polling costs the daemon CPU too) until ``count`` tasks completed; any failure raises."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api, timeout=60) as client:
        while True:
            done = client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"]
            if done >= count:
                return
            failed = client.get("/api/tasks", params={"status": "failed", "limit": 1}).json()["total"]
            if failed:
                raise RuntimeError(f"{failed} tasks failed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {count} done")
            time.sleep(0.1)


def records(api: str, ids: list[str]) -> list[dict]:
    with httpx.Client(base_url=api, timeout=60) as client:
        return [client.get(f"/api/tasks/{task_id}").json() for task_id in ids]


def run_times(api: str, record_list: list[dict]) -> dict[str, float]:
    """Each task's run time in seconds, as its backend recorded it (execution_start → execution_success)."""
    urls = {b["id"]: b["url"] for b in httpx.get(f"{api}/api/pool", timeout=60).json()["backends"]}
    times = {}
    by_backend: dict[str, list[dict]] = {}
    for record in record_list:
        by_backend.setdefault(record["backend"], []).append(record)
    with httpx.Client(timeout=60) as client:
        for backend, group in by_backend.items():
            history = client.get(f"{urls[backend]}/history", params={"max_items": 100000}).json()
            for record in group:
                messages = dict((k, d) for k, d in history[record["prompt_id"]]["status"]["messages"])
                times[record["id"]] = (messages["execution_success"]["timestamp"]
                                       - messages["execution_start"]["timestamp"]) / 1000
    return times


# ---------------------------------------------------------------------------------------------------- 1
def overhead(bench: Bench, redis_url: str, count: int) -> dict[str, Any]:
    node_s = 1.0 / 3  # the 3-node graph: 1 s a task
    direct_url, comfyart_url = bench.emulator(node_s), bench.emulator(node_s)
    direct = run_direct(direct_url, count, 0)
    _, api = bench.daemon(redis_url, [comfyart_url], "overhead", scheduler={"prefetch": 1})
    start = time.monotonic()
    ids = post_tasks(api, [{"prompt": graph(i)} for i in range(count)])
    wait_all(api, count)
    makespan = time.monotonic() - start
    done = records(api, ids)
    times = run_times(api, done)
    added = [r["finished_ms"] - r["started_ms"] - times[r["id"]] * 1000 for r in done]
    return {"tasks": count, "task_s": 1.0, "direct_makespan_s": round(direct, 3),
            "comfyart_makespan_s": round(makespan, 3), "ratio": round(makespan / direct, 4),
            "added_latency_ms_p50": round(percentile(added, 0.5), 1),
            "added_latency_ms_p99": round(percentile(added, 0.99), 1)}


# ---------------------------------------------------------------------------------------------------- 2
def idle_gap(bench: Bench, redis_url: str, count: int) -> dict[str, Any]:
    result: dict[str, Any] = {"tasks": count, "task_s": 0.1}
    for prefetch in (0, 1):
        url = bench.emulator(0.1 / 3)
        _, api = bench.daemon(redis_url, [url], f"gap{prefetch}", scheduler={"prefetch": prefetch})
        post_tasks(api, [{"prompt": graph(1000 + i)} for i in range(count)])
        wait_all(api, count)
        history = httpx.get(f"{url}/history", params={"max_items": 100000}, timeout=60).json()
        spans = sorted(((dict((k, d["timestamp"]) for k, d in entry["status"]["messages"]
                              if k in ("execution_start", "execution_success")))
                        for entry in history.values()), key=lambda span: span["execution_start"])
        gaps = [after["execution_start"] - before["execution_success"]
                for before, after in zip(spans, spans[1:], strict=False)]
        result[f"prefetch{prefetch}_gap_ms_p50"] = percentile(gaps, 0.5)
        result[f"prefetch{prefetch}_gap_ms_p99"] = percentile(gaps, 0.99)
    return result


# ---------------------------------------------------------------------------------------------------- 3
def throughput(bench: Bench, redis_url: str, count: int, backends: int) -> dict[str, Any]:
    # two fleets of 32: on 2 cores, four processes of 16 left the daemon waiting for a core a quarter of the time
    urls = bench.fleet(backends, 32)
    process, api = bench.empty_daemon(redis_url, "throughput", scheduler={"prefetch": 1})
    ids = post_tasks(api, [{"prompt": graph(20_000 + i)} for i in range(count)])
    cpu_before = cpu_seconds(process.pid)
    start = time.monotonic()
    register(api, urls)
    wait_all(api, count)
    makespan = time.monotonic() - start
    cpu = cpu_seconds(process.pid) - cpu_before
    done = records(api, ids)
    outputs = sum(len(r["outputs"]) for r in done)
    return {"tasks": count, "backends": backends, "makespan_s": round(makespan, 3),
            "tasks_per_s": round(count / makespan, 1), "daemon_cpu_ms_per_task": round(cpu / count * 1000, 2),
            "daemon_cpu_share": round(cpu / makespan, 2), "outputs_downloaded": outputs}


# ---------------------------------------------------------------------------------------------------- 4
def heavy_tailed_steps(count: int, rng: random.Random) -> list[int]:
    """Pareto(1.5) step counts, 2 at least, 120 at most: most tasks short, a few very long."""
    return [min(120, max(2, math.ceil(2 * rng.paretovariate(1.5)))) for _ in range(count)]


def makespan(bench: Bench, redis_url: str, count: int, backends: int, step_s: float) -> dict[str, Any]:
    rng = random.Random(7)
    steps = heavy_tailed_steps(count, rng)
    urls = bench.fleet(backends, 8, "--step-seconds", str(step_s))
    result: dict[str, Any] = {"tasks": count, "backends": backends, "step_s": step_s,
                              "steps_p50": percentile(steps, 0.5), "steps_max": max(steps)}
    runs = [(strategy, {"strategy": strategy}) for strategy in ("least_busy", "round_robin", "weighted", "affinity")]
    # longest_first over the whole batch: the window must hold every queued task
    runs += [(f"longest_first_prefetch{prefetch}", {"order": "longest_first", "lookahead": 1000,
                                                    "prefetch": prefetch}) for prefetch in (1, 0)]
    for label, scheduler in runs:
        _, api = bench.empty_daemon(redis_url, f"makespan-{label}", scheduler=scheduler)
        ids = post_tasks(api, [{"prompt": sampler_graph(i, s)} for i, s in enumerate(steps)])
        start_ms = time.time() * 1000
        register(api, urls)
        wait_all(api, count)
        done = records(api, ids)
        span_s = (max(r["finished_ms"] for r in done) - start_ms) / 1000
        times = run_times(api, done)
        ideal = max(sum(times.values()) / backends, max(times.values()))
        result[label] = {"makespan_s": round(span_s, 3), "ideal_s": round(ideal, 3),
                         "ratio": round(span_s / ideal, 4)}
        for url in urls:  # the next strategy gets backends without these histories
            httpx.post(f"{url}/history", json={"clear": True}, timeout=30)
    return result


# ---------------------------------------------------------------------------------------------------- 5
def affinity(bench: Bench, redis_url: str, count: int, load_s: float) -> dict[str, Any]:
    rng = random.Random(5)
    checkpoints = [rng.choice(CHECKPOINTS) for _ in range(count)]
    urls = bench.fleet(8, 8, "--step-seconds", "0.03", "--model-load-seconds", str(load_s))
    result: dict[str, Any] = {"tasks": count, "backends": 8, "checkpoints": 4, "model_load_s": load_s,
                              "task_s_without_load": 0.09}
    for strategy in ("least_busy", "affinity"):
        for url in urls:
            httpx.post(f"{url}/free", json={"unload_models": True}, timeout=30)
        before = sum(httpx.get(f"{u}/emulator/stats", timeout=30).json()["model_loads"] for u in urls)
        _, api = bench.empty_daemon(redis_url, f"affinity-{strategy}", scheduler={"strategy": strategy})
        post_tasks(api, [{"prompt": sampler_graph(5000 + i, 3, ckpt)} for i, ckpt in enumerate(checkpoints)])
        start = time.monotonic()
        register(api, urls)
        wait_all(api, count)
        span = time.monotonic() - start
        loads = sum(httpx.get(f"{u}/emulator/stats", timeout=30).json()["model_loads"] for u in urls) - before
        result[strategy] = {"model_loads": loads, "makespan_s": round(span, 3)}
    result["loads_cut"] = round(result["least_busy"]["model_loads"] / max(1, result["affinity"]["model_loads"]), 2)
    return result


# ---------------------------------------------------------------------------------------------------- 6
SCALE_TASK_S = 10.0  # the workflow's 2 sampler steps
WORKFLOW = {"graph": sampler_graph(1, 2), "params": {
    "prompt": {"target": "6.text", "type": "string", "default": "a lighthouse"},
    "seed": {"target": "3.seed", "type": "int", "default": -1}}}


def scale(bench: Bench, redis_url: str, backends: int, queued: int, probes: int,
          steady_s: float = 20) -> dict[str, Any]:
    # 10 s tasks: every backend stays busy and the queue stays deep, as in production, without the emulators
    # (which share the machine) saturating it
    urls = bench.fleet(backends, 250, "--step-seconds", str(SCALE_TASK_S / 2))
    process, api = bench.empty_daemon(redis_url, "scale", scheduler={"prefetch": 1},
                                      pool={"health_interval_s": 5})
    r = redis.Redis.from_url(redis_url)
    assert httpx.put(f"{api}/api/workflows/t2i", json=WORKFLOW, timeout=30).status_code in (200, 201)
    memory_before = r.info("memory")["used_memory"]
    body = {"workflow": "t2i", "params": {"prompt": "a lighthouse on a cliff at dawn, oil painting, dramatic light"}}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda chunk: post_tasks(api, [body] * chunk), [queued // 8] * 8))
    queued = queued // 8 * 8
    bytes_per_task = (r.info("memory")["used_memory"] - memory_before) / queued
    register(api, urls)
    healthy_deadline = time.monotonic() + 120
    while sum(b["status"] == "healthy" for b in httpx.get(f"{api}/api/pool", timeout=60).json()["backends"]) \
            < backends and time.monotonic() < healthy_deadline:
        time.sleep(0.5)
    time.sleep(5)  # past the start-up burst
    with httpx.Client(base_url=api, timeout=60) as client:
        # steady state, untouched: the probes below poll the API, which would count as the scheduler's CPU
        done_before = client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"]
        cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
        time.sleep(steady_s)
        wall = time.monotonic() - wall_before
        cpu = cpu_seconds(process.pid) - cpu_before
        done = client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"] - done_before
        latencies = []
        for _ in range(probes):
            probe = client.post("/api/tasks", json={**body, "priority": "high"}).json()["id"]
            while True:
                record = client.get(f"/api/tasks/{probe}").json()
                if record.get("submitted_ms"):
                    latencies.append(record["submitted_ms"] - record["created_ms"])
                    break
                time.sleep(0.02)
            time.sleep(0.5)
        still_queued = client.get("/api/pool").json()["queue_length"]
    return {"backends": backends, "queued": queued, "redis_bytes_per_queued_task": round(bytes_per_task),
            "steady_tasks_per_s": round(done / wall, 1), "steady_daemon_cpu_share": round(cpu / wall, 2),
            "steady_daemon_cpu_ms_per_task": round(cpu / max(1, done) * 1000, 2),
            "high_priority_dispatch_ms_p50": percentile(latencies, 0.5),
            "high_priority_dispatch_ms_p99": percentile(latencies, 0.99), "still_queued": still_queued}


def default_workdir() -> str | None:
    """RAM (tmpfs) when the machine has it. Every task writes a file twice (the emulator saves its PNG, the daemon
    downloads it), and on a VM disk creating a file can take a millisecond of kernel CPU: on the 2-core machine
    that CPU would be taken from the daemon, and the benchmark would measure the disk. A GPU server's backends
    write on their own disks, not the scheduler's CPU."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


SECTIONS = ("overhead", "idle_gap", "throughput", "makespan", "affinity", "scale")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks (a smoke run)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections to run (replication runs only when named)")
    parser.add_argument("--replicas", type=int, default=3, help="replication: the leader and its followers")
    parser.add_argument("--clients", type=int, default=1, help="replication: /api/events clients per follower")
    parser.add_argument("--rounds", type=int, help="replication: turns of each mode, medians (default 3, --quick 1)")
    parser.add_argument("--submit-to", choices=("leader", "round_robin"), default="leader",
                        help="replication: where tasks are posted (round_robin: every replica in turn)")
    parser.add_argument("--workdir", default=default_workdir(),
                        help="where the emulators and the daemon keep their files (default: /dev/shm when it is "
                             "there, else the system's temporary directory)")
    args = parser.parse_args()
    wanted = [s for s in args.only.split(",") if s]
    quick = args.quick
    results: dict[str, Any] = {}
    for section in wanted:
        bench = Bench(Path(tempfile.mkdtemp(prefix="comfyart-bench-", dir=args.workdir)))
        try:
            redis_url = bench.redis()
            started = time.monotonic()
            if section == "overhead":
                results[section] = overhead(bench, redis_url, 8 if quick else 30)
            elif section == "idle_gap":
                results[section] = idle_gap(bench, redis_url, 20 if quick else 60)
            elif section == "throughput":
                results[section] = throughput(bench, redis_url, 500 if quick else 3000, 64)
            elif section == "makespan":
                results[section] = makespan(bench, redis_url, 200 if quick else 1000, 16, 0.1)
            elif section == "affinity":
                results[section] = affinity(bench, redis_url, 80 if quick else 320, 0.5)
            elif section == "scale":
                results[section] = scale(bench, redis_url, 200 if quick else 1000, 10_000 if quick else 100_000,
                                         5 if quick else 20)
            elif section == "replication":
                options = {"replicas": args.replicas, "clients": args.clients, "submit_to": args.submit_to,
                           "rounds": args.rounds or (1 if quick else 3)}
                results[section] = replication(bench, redis_url, bench.fleet(64, 32), 500 if quick else 3000,
                                               options)
            else:
                parser.error(f"no section {section}")
            results[section]["bench_seconds"] = round(time.monotonic() - started, 1)
        finally:
            bench.close()
            shutil.rmtree(bench.workdir, ignore_errors=True)
        print(json.dumps({section: results[section]}), flush=True)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "quick": quick,
                          "workdir": args.workdir or tempfile.gettempdir()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "scheduling-quick.json" if quick else "scheduling.json"
    path = RESULTS / name
    earlier = json.loads(path.read_text()) if path.exists() else {}  # --only keeps the other sections' figures
    path.write_text(json.dumps({**earlier, **results}, indent=2))
    print(f"\n{'benchmark':<11} {'figure':<34} value")
    for section in wanted:
        for key, value in results[section].items():
            if isinstance(value, dict):
                for sub, figure in value.items():
                    print(f"{section:<11} {key + '.' + sub:<34} {figure}")
            else:
                print(f"{section:<11} {key:<34} {value}")
    print(f"written to {RESULTS / name}")


if __name__ == "__main__":
    main()
