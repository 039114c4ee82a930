"""Failover benchmark (issue 24): the leader is killed (SIGKILL) N times under a steady load, and each time a standby
takes over; how long from the kill until the new leader holds the lease, dispatches its first task and completes
its first task.

    python3 bench/failover.py [--kills 10] [--replicas 2|3] [--fast] [--quick]

2 or 3 ``comfyart serve`` replicas on one redis-server (one prefix), emulated backends, every replica configured
with every backend. A feeder thread keeps ``--backlog`` tasks queued (POST /api/tasks on the standbys, never on
the replica about to be killed, so no submission is lost with it). Each round: the replicas agree on a leader, the
load runs ``--settle-s``, the leader is SIGKILLed, the bench waits for the new term and a completion, and starts
the killed replica again under its name (the next kill has a standby).

The measure, per kill (``pair_takeovers``): three instants after the kill, all on this host's clock (Redis runs
here): ``lease`` the new term's ``since_ms`` (``P:leader:history``, Redis's clock at the election), ``dispatch``
the first recorded submission in the event stream ``P:events`` at or after that election (the entry's id is
Redis's clock at the commit; a submission is the entry ``t=task s=pending p=pending`` whose data has
``submitted_ms``), ``completion`` the first move to ``completed`` at or after the election (often before the
first dispatch: a task the dead leader had submitted, which the new leader's tracker adopts). Counting from the
election, not the kill, leaves out a script the dead leader had already sent (Redis runs it after the kill, under
the old, still valid epoch). The stream is on, as by default with ``redis.url``. Printed as p50/p90/max; every
task must complete exactly once (every record completed, each prompt in the emulators' own /history once, no
other prompt run).

Cluster timing: ``--lease-s 5 --renew-interval-s 1 --standby-poll-s 0.25`` (the product's defaults), ``--fast``
2 / 0.5 / 0.25 (the failover tests'). About 12 s a kill with the defaults (the lease, a restart, the settling),
8 s with ``--fast``: the default run takes 2-3 minutes on 2 cores. Writes bench/results/failover.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import Rig, graph, percentile, report  # noqa: E402
from replicas import Replica, agreed_leader  # noqa: E402

PREFIX = "bench-failover"
DEFAULT_TIMING = {"lease_s": 5.0, "renew_interval_s": 1.0, "standby_poll_s": 0.25}
FAST_TIMING = {"lease_s": 2.0, "renew_interval_s": 0.5, "standby_poll_s": 0.25}


# ---------------------------------------------------------------------------------------------------- measure
def stream_ms(entry_id: str) -> int:
    """The ms part of a stream id ("ms-seq"): Redis's clock when the entry was added."""
    return int(entry_id.split("-", 1)[0])


def mark_of(fields: dict[str, str]) -> str | None:
    """``dispatch`` for an entry of ``P:events`` that records a submission to a backend, ``completion`` for a
    task's move to completed, None for any other."""
    if fields.get("t") != "task":
        return None
    if fields.get("s") == "completed" and fields.get("p") != "completed":
        return "completion"
    if fields.get("s") == "pending" and fields.get("p") == "pending":
        return "dispatch" if "submitted_ms" in json.loads(fields.get("d") or "{}") else None
    return None


def pair_takeovers(kills: list[int], elections: list[int], marks: list[tuple[int, str]],
                   ) -> list[dict[str, int | None]]:
    """Per kill (ms, ascending), the ms from it to the first election at or after it, and to the first
    ``dispatch`` and ``completion`` mark at or after that election; each looked for before the next kill only.
    None where there is none (no takeover, or nothing dispatched before the next kill)."""
    rows: list[dict[str, int | None]] = []
    for index, killed in enumerate(kills):
        end = kills[index + 1] if index + 1 < len(kills) else float("inf")
        elected = min((ms for ms in elections if killed <= ms < end), default=None)
        row: dict[str, int | None] = {"killed_ms": killed, "lease": None, "dispatch": None, "completion": None}
        if elected is not None:
            row["lease"] = elected - killed
            for kind in ("dispatch", "completion"):
                first = min((ms for ms, mark in marks if mark == kind and elected <= ms < end), default=None)
                row[kind] = None if first is None else first - killed
        rows.append(row)
    return rows


def summary(values: list[int | None]) -> dict[str, Any]:
    """p50/p90/max of the values there are, and how many are missing."""
    there = [v for v in values if v is not None]
    if not there:
        return {"count": 0, "missing": len(values)}
    return {"count": len(there), "missing": len(values) - len(there), "p50": percentile(there, 0.5),
            "p90": percentile(there, 0.9), "max": max(there)}


# ---------------------------------------------------------------------------------------------------- load
class Feeder(threading.Thread):
    """Keeps ``backlog`` tasks in the queue, posting to ``targets`` in turn (a list the bench swaps)."""

    def __init__(self, redis_url: str, backlog: int) -> None:
        super().__init__(daemon=True)
        self.redis_url = redis_url
        self.backlog = backlog
        self.targets: list[str] = []
        self.ids: list[str] = []
        self.refused = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                if r.zcard(f"{PREFIX}:queue") >= self.backlog:
                    time.sleep(0.02)
                    continue
                targets = self.targets
                answer = client.post(targets[len(self.ids) % len(targets)] + "/api/tasks",
                                     json={"prompt": graph(len(self.ids))})
                if answer.status_code >= 300:
                    self.refused += 1
                    time.sleep(0.1)
                else:
                    self.ids.append(answer.json()["id"])
        r.close()


# ---------------------------------------------------------------------------------------------------- run
def wait_for(condition: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)
    return value


def kill_rounds(replicas: list[Replica], r: redis.Redis, feeder: Feeder, args: argparse.Namespace,
                timing: dict[str, float]) -> tuple[list[int], list[int]]:
    """Kill the leader ``args.kills`` times; the kills' and the following elections' ms."""
    kills, elections = [], []
    completed_key, history_key = f"{PREFIX}:tasks:completed", f"{PREFIX}:leader:history"
    for round_number in range(args.kills):
        leader = agreed_leader(replicas)
        feeder.targets = [x.api for x in replicas if x is not leader]
        time.sleep(args.settle_s)
        before = r.lindex(history_key, 0)
        kills.append(int(time.time() * 1000))
        leader.kill()
        latest = wait_for(lambda before=before: (r.lindex(history_key, 0) != before) and r.lindex(history_key, 0),
                          f"no election after kill {round_number + 1}", timing["lease_s"] * 3 + 30)
        elections.append(int(json.loads(latest)["since_ms"]))
        done = r.zcard(completed_key)
        wait_for(lambda done=done: r.zcard(completed_key) > done, f"no completion after kill {round_number + 1}", 60)
        leader.start()
        print(f"kill {round_number + 1}/{args.kills}: {leader.name} killed, "
              f"{json.loads(latest)['replica']} leads", flush=True)
    return kills, elections


def outcome(replicas: list[Replica], backends: list[str], ids: list[str]) -> dict[str, Any]:
    """Every task completed exactly once: its record completed, its prompt run once, no other prompt run."""
    live = replicas[0].api
    with httpx.Client(base_url=live, timeout=30) as client:
        wait_for(lambda: client.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"]
                 >= len(ids), "tasks not all completed", 300)
        records = [client.get(f"/api/tasks/{task_id}").json() for task_id in ids]
    ran: list[str] = []
    with httpx.Client(timeout=30) as client:
        for url in backends:
            ran += list(client.get(url + "/history", params={"max_items": 1_000_000}).json())
    expected = sorted(r["prompt_id"] for r in records)
    return {"tasks": len(ids), "completed": sum(r["status"] == "completed" for r in records),
            "retried": sum(1 for r in records if r.get("history")), "prompts_run": len(ran),
            "exactly_once": (all(r["status"] == "completed" for r in records) and len(ran) == len(set(ran))
                             and sorted(ran) == expected)}


def run(args: argparse.Namespace, timing: dict[str, float]) -> dict[str, Any]:
    rig = Rig(Path(tempfile.mkdtemp(prefix="comfyart-failover-")))
    replicas: list[Replica] = []
    feeder: Feeder | None = None
    try:
        redis_url = rig.redis()
        backends = [rig.emulator(args.node_seconds) for _ in range(args.backends)]
        replicas = [Replica(rig.workdir, redis_url, PREFIX, f"r{i}", backends, cluster=timing)
                    for i in range(args.replicas)]
        for replica in replicas:
            replica.start()
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        feeder = Feeder(redis_url, args.backlog or 2 * args.backends)
        feeder.targets = [x.api for x in replicas]
        feeder.start()
        kills, elections = kill_rounds(replicas, r, feeder, args, timing)
        feeder.stopping.set()
        feeder.join(30)
        checked = outcome(replicas, backends, feeder.ids)
        marks = [(stream_ms(entry_id), mark) for entry_id, fields in r.xrange(f"{PREFIX}:events")
                 if (mark := mark_of(fields))]
    finally:
        if feeder is not None:
            feeder.stopping.set()
        for replica in replicas:
            replica.stop()
        rig.close()
        shutil.rmtree(rig.workdir, ignore_errors=True)
    rows = pair_takeovers(kills, elections, marks)
    return {"run": {"replicas": args.replicas, "backends": args.backends, "task_s": round(3 * args.node_seconds, 3),
                    "kills": args.kills, **timing, "refused_submissions": feeder.refused, **checked},
            "kill_to_lease_ms": summary([row["lease"] for row in rows]),
            "kill_to_first_dispatch_ms": summary([row["dispatch"] for row in rows]),
            "kill_to_first_completion_ms": summary([row["completion"] for row in rows]),
            "per_kill_ms": {str(i + 1): f"lease {row['lease']} dispatch {row['dispatch']} "
                                        f"completion {row['completion']}" for i, row in enumerate(rows)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--replicas", type=int, choices=(2, 3), default=2)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--node-seconds", type=float, default=0.1, help="the emulators' time per node (3 nodes)")
    parser.add_argument("--backlog", type=int, default=0, help="tasks kept queued (default: 2 per backend)")
    parser.add_argument("--settle-s", type=float, default=2.0, help="load before each kill")
    parser.add_argument("--lease-s", type=float, default=DEFAULT_TIMING["lease_s"])
    parser.add_argument("--renew-interval-s", type=float, default=DEFAULT_TIMING["renew_interval_s"])
    parser.add_argument("--standby-poll-s", type=float, default=DEFAULT_TIMING["standby_poll_s"])
    parser.add_argument("--fast", action="store_true", help="lease 2 s, renewed every 0.5 s, polled every 0.25 s")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 kills, --fast")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.fast = 3, True
    timing = dict(FAST_TIMING) if args.fast else {"lease_s": args.lease_s, "renew_interval_s": args.renew_interval_s,
                                                  "standby_poll_s": args.standby_poll_s}
    results = run(args, timing)
    report("failover-quick" if args.quick else "failover", results)
    if not results["run"]["exactly_once"]:
        raise SystemExit("a task was lost or ran twice")


if __name__ == "__main__":
    main()
