"""What Kubernetes reads of comfyart (issue 25) on any replica: two ``comfyart serve`` processes on one redis-server
over emulators. The standby serves the scaling gauges (the wanted count is the leader's decision, from the pool
mirror; the depth by tags is read from Redis), and ``comfyart drain`` pointed at the standby drains the backend on
the leader (the drain is forwarded) and waits, polling the standby's mirror, until it holds no prompt."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from comfyart.clock import now_ms
from tests.support.cluster import ReplicaProcess, eventually, leader_and_standby, tasks_of, wait_completed
from tests.support.graphs import text_to_image_graph
from tests.support.paths import ROOT

SLOW = ("--step-seconds", "0.25")  # a 12-step prompt: about 3 s



def gauges(replica: ReplicaProcess) -> tuple[float | None, dict[tuple[str, str], float]]:
    """(the wanted count, the depth by (tags, state)) this replica exports."""
    with replica.http("ops") as admin:
        text = admin.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    wanted = next((s.value for s in samples if s.name == "comfyart_autoscaler_wanted_backends"), None)
    return wanted, {(s.labels["tags"], s.labels["state"]): s.value for s in samples
                    if s.name == "comfyart_queue_depth_by_tags"}


def decision(replica: ReplicaProcess) -> dict[str, Any]:
    with replica.http("ops") as admin:
        return admin.get("/api/pool").json()["autoscaler"] or {}


def same_on_both(leader: ReplicaProcess, standby: ReplicaProcess) -> bool:
    """The standby exports the leader's decision and the same depth (read again when a decision fell between)."""
    before = decision(leader)
    (wanted, depth), (leaders_wanted, leaders_depth) = gauges(standby), gauges(leader)
    return before == decision(leader) and wanted == leaders_wanted == before.get("desired") and depth == leaders_depth


def test_a_standby_serves_the_gauges_and_drains_through_the_leader(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW), emulator(*SLOW)]
    with leader_and_standby(tmp_path, redis_url, emulators) as (leader, standby):
        eventually(lambda: gauges(standby)[0] == 0 and same_on_both(leader, standby), "nothing wanted, idle")
        with leader.http("alice") as alice:
            ids = [alice.post("/api/tasks", json={"prompt": text_to_image_graph(seed=i, steps=12)}).json()["id"]
                   for i in range(6)]
        # six tasks, two per backend (pool.tasks_per_container), within max 4: three wanted, on both replicas
        eventually(lambda: gauges(standby)[0] == 3 and same_on_both(leader, standby), "three wanted on the standby")
        assert sum(gauges(standby)[1].values()) == 6

        on_emu0 = eventually(lambda: next((r for r in tasks_of(standby, ids) if r["status"] == "running"
                                           and r["backend"] == "static:emu0"), None), "a prompt running on emu0")
        drain = subprocess.run(
            [sys.executable, "-m", "comfyart", "drain", "--address", f"127.0.0.1:{emulators[0].port}", "--wait",
             "--timeout", "60"], capture_output=True, text=True, timeout=90, cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "COMFYART_URL": standby.base_url,
                 "COMFYART_KEY": standby.key("ops")})
        returned_ms = now_ms()
        assert drain.returncode == 0, drain.stderr
        [ended] = tasks_of(leader, [on_emu0["id"]])
        assert ended["status"] == "completed" and ended["backend"] == "static:emu0"
        assert ended["finished_ms"] <= returned_ms  # it returned once the prompt was done, not before
        with leader.http("ops") as admin:
            emu0 = admin.get("/api/pool/backends/static:emu0").json()
        assert (emu0["mode"], emu0["inflight"]) == ("draining", 0)  # drained on the leader
        records = wait_completed(standby, ids)
        later = [r for r in records if r["started_ms"] > ended["finished_ms"]]
        assert later and all(r["backend"] == "static:emu1" for r in later)  # emu0 took nothing new
        eventually(lambda: gauges(standby)[0] == 0 and same_on_both(leader, standby), "idle again: none wanted")
