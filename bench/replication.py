"""The replication section of ``bench/scheduling.py`` (issue 24): what followers cost the hot path. The throughput
section's run (zero-duration tasks on 64 backends, queued first, then the backends registered: tasks/s end to end)
with one ``comfyart serve`` without the event stream (``cluster.replicated: false``), with it (the default with a
Redis of its own), and one leader plus ``--replicas - 1`` followers, each follower with ``--clients``
WebSocket clients of ``/api/events`` following every task (the followers' bridges read the event stream, their
hubs publish each event, their sockets send it). Same machine, the modes taking turns ``--rounds`` times on the same
emulators (a fresh prefix each run; each round starts with another mode); the figures are each mode's median.

    python3 bench/scheduling.py --only replication [--replicas 3] [--clients 1] [--rounds 3]
                                [--submit-to leader|round_robin] [--quick]

``stream_*`` figures: what the event stream costs one process; ``followers_*``: what the followers and their
clients cost the leader, whose CPU they compete for on this machine (on a real deployment they run elsewhere; their
own CPU is reported apart, Redis's too; the clients run in the benchmark's process). ``--submit-to`` picks where
the tasks are posted (``round_robin``: every replica in turn); the posting is not timed, the makespan starts when
the backends register.
"""
from __future__ import annotations

import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import Rig, cpu_seconds, graph, register  # noqa: E402
from replicas import EventClients, Replica, agreed_leader  # noqa: E402

SECTIONS = {"scheduler": {"prefetch": 1}, "tracking": {"silence_s": 30}}  # the throughput section's daemon


def post_round_robin(apis: list[str], count: int) -> list[str]:
    with httpx.Client(timeout=60) as client:
        return [client.post(apis[i % len(apis)] + "/api/tasks", json={"prompt": graph(20_000 + i)}).json()["id"]
                for i in range(count)]


def wait_completed(api: str, count: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api, timeout=60) as client:
        while client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError("tasks not completed")
            time.sleep(0.1)


def one_run(rig: Rig, redis_url: str, urls: list[str], count: int, replicas: int, prefix: str,
            options: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """One leader (started first: it takes the lease at once) and ``replicas - 1`` followers; the tasks posted,
    then the backends registered on the leader, and timed until the last task completed."""
    started = [Replica(rig.workdir, redis_url, prefix, name, [], cluster=cluster, **SECTIONS)
               for name in ["leader"] + [f"follower{i}" for i in range(1, replicas)]]
    leader, followers = started[0], started[1:]
    try:
        for replica in started:
            replica.start()
        if agreed_leader(started) is not leader:
            raise RuntimeError("a follower took the lease")
        apis = [leader.api] if options["submit_to"] == "leader" else [r.api for r in started]
        redis_pid = next((p.pid for p in rig.processes if "redis-server" in str(p.args[0])), None)
        clients = EventClients([f.api for f in followers], options["clients"]) if followers else nullcontext()
        with clients:
            ids = post_round_robin(apis, count)
            pids = {"leader": leader.process.pid, "followers": [f.process.pid for f in followers],
                    "redis": redis_pid}
            cpu_before = {who: cpu_of(pid) for who, pid in pids.items()}
            start = time.monotonic()
            register(leader.api, urls)
            wait_completed(leader.api, count)
            makespan = time.monotonic() - start
            cpu = {who: cpu_of(pid) - cpu_before[who] for who, pid in pids.items()}
            heard = clients.wait_completed(len(ids)) if followers else True
            lagged = clients.lagged if followers else 0
            with redis.Redis.from_url(redis_url) as r:
                entries = r.xlen(f"{prefix}:events")
    finally:
        for replica in reversed(started):
            replica.stop()
    return {"tasks_per_s": count / makespan, "stream_entries_per_task": entries / count,
            **{f"{who}_cpu_ms_per_task": cpu[who] / count * 1000 for who in cpu},
            "clients_heard_every_completion": heard, "lagged_streams": lagged}


def cpu_of(pid: int | list[int] | None) -> float:
    if pid is None:
        return 0.0
    return sum(cpu_seconds(p) for p in pid) if isinstance(pid, list) else cpu_seconds(pid)


def replication(rig: Rig, redis_url: str, urls: list[str], count: int, options: dict[str, Any]) -> dict[str, Any]:
    """The modes ``options["rounds"]`` times in turn; each figure's median per mode, and the ratios."""
    replicas = options["replicas"]
    modes = {"one_process_no_stream": (1, {"replicated": False}), "one_process": (1, {}),
             f"{replicas}_replicas": (replicas, {})}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    names = list(modes)
    for round_number in range(options["rounds"]):
        for index in range(len(names)):  # each round starts with the next mode: none always runs first (cold)
            mode = names[(round_number + index) % len(names)]
            size, cluster = modes[mode]
            runs[mode].append(one_run(rig, redis_url, urls, count, size, f"bench-repl-{round_number}-{mode}",
                                      options, cluster))
    result: dict[str, Any] = {"tasks": count, "backends": len(urls), "rounds": options["rounds"],
                              "submit_to": options["submit_to"], "clients_per_follower": options["clients"]}
    for mode, rounds in runs.items():
        result[mode] = {key: (round(statistics.median(r[key] for r in rounds), 2)
                              if isinstance(rounds[0][key], float) else all(r[key] for r in rounds)
                              if isinstance(rounds[0][key], bool) else sum(r[key] for r in rounds))
                        for key in rounds[0]}
    bare, one, many = result["one_process_no_stream"], result["one_process"], result[f"{replicas}_replicas"]
    result["stream_tasks_per_s_ratio"] = round(one["tasks_per_s"] / bare["tasks_per_s"], 3)
    result["stream_cpu_ms_per_task_added"] = round(one["leader_cpu_ms_per_task"] - bare["leader_cpu_ms_per_task"], 2)
    result["followers_tasks_per_s_ratio"] = round(many["tasks_per_s"] / one["tasks_per_s"], 3)
    result["followers_leader_cpu_ms_per_task_added"] = round(
        many["leader_cpu_ms_per_task"] - one["leader_cpu_ms_per_task"], 2)
    return result
