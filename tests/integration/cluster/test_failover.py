"""Several ``comfyart serve`` processes on one redis-server over the same emulators (issue 24): exactly one leads,
tasks submitted to any replica run exactly once (counted in the emulators' own /history), and the leader's death
(SIGKILL), pause (SIGSTOP past its lease) or stop (SIGTERM) hands the fleet to the other without a prompt run twice.
Leases of 2 s, renewed every 0.5 s, standbys polling every 0.25 s (``tests.support.cluster.TEST_CLUSTER``). The
figures (takeover times) are printed: ``pytest -s`` shows them."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.cluster import ReplicaProcess, assert_each_ran_once, leader_of, replica_set, tasks_of, wait_completed
from tests.support.daemon import serve_subprocess

SLOW = ("--step-seconds", "0.1")  # 4 steps: about half a second a prompt


def test_one_leads_and_tasks_submitted_to_both_run_once(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW), emulator(*SLOW)]
    with replica_set(tmp_path, redis_url, emulators) as (first, second):
        leader = leader_of([first, second])
        standby = second if leader is first else first
        view = standby.cluster()
        assert {r["name"]: r["role"] for r in view["replicas"]} in (
            {leader.name: "leader", standby.name: "standby"},)
        ids = first.submit(10) + second.submit(10, seed=100)
        records = wait_completed(standby, ids)
        assert_each_ran_once(records, emulators)
        assert "term started" not in standby.log()  # the standby never ran the leader's loops


def test_sigkill_of_the_leader_hands_its_tasks_in_flight_to_the_standby(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW) for _ in range(3)]
    with replica_set(tmp_path, redis_url, emulators) as pair:
        leader = leader_of(pair)
        standby = next(r for r in pair if r is not leader)
        ids = leader.submit(30) + standby.submit(30, seed=100)
        deadline = time.monotonic() + 30
        while sum(r["status"] == "completed" for r in tasks_of(standby, ids)) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        killed_ms = int(time.time() * 1000)
        leader.stop(signal.SIGKILL)
        assert leader_of([standby], timeout_s=10) is standby
        records = wait_completed(standby, ids)
        assert_each_ran_once(records, emulators)
        since_ms = standby.cluster()["leader"]["since_ms"]
        dispatched = min(r["submitted_ms"] for r in records if r["submitted_ms"] > killed_ms)
        completed = min(r["finished_ms"] for r in records if r["finished_ms"] > killed_ms)
        print(f"\nSIGKILL -> lease taken {since_ms - killed_ms} ms, first dispatch {dispatched - killed_ms} ms, "
              f"first completion {completed - killed_ms} ms")
        assert since_ms - killed_ms < 2000 + 250 + 1000  # the lease, a poll, and a loaded machine's slack
        assert dispatched - killed_ms < 2000 + 250 + 3000


def test_a_leader_paused_past_its_lease_writes_nothing_when_it_wakes(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW), emulator(*SLOW)]
    with replica_set(tmp_path, redis_url, emulators) as pair:
        old = leader_of(pair)
        new = next(r for r in pair if r is not old)
        old_epoch = new.cluster()["leader"]["epoch"]
        ids = new.submit(30)
        time.sleep(1.0)  # some under way on the backends
        old.signal(signal.SIGSTOP)
        stopped_ms = int(time.time() * 1000)
        deadline = time.monotonic() + 15
        while (new.cluster()["leader"] or {}).get("name") != new.name:
            assert time.monotonic() < deadline, "no takeover"
            time.sleep(0.1)
        while not any((r["submitted_ms"] or 0) > stopped_ms for r in tasks_of(new, ids)):
            assert time.monotonic() < deadline, "the new leader did not dispatch"
            time.sleep(0.1)
        old.signal(signal.SIGCONT)
        records = wait_completed(new, ids)
        assert_each_ran_once(records, emulators)
        assert leader_of(pair) is new  # the old one did not take the lease back
        deadline = time.monotonic() + 10
        while f"stepped down epoch={old_epoch}" not in old.log():
            assert time.monotonic() < deadline, old.log()[-3000:]
            time.sleep(0.1)
        roles = {r["name"]: r["role"] for r in old.cluster()["replicas"]}
        assert roles == {old.name: "standby", new.name: "leader"}


def test_sigterm_of_the_leader_hands_over_within_a_second(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW), emulator(*SLOW)]
    with replica_set(tmp_path, redis_url, emulators) as pair:
        leader = leader_of(pair)
        other = next(r for r in pair if r is not leader)
        ids = other.submit(40)
        time.sleep(1.5)
        stopped_ms = int(time.time() * 1000)
        leader.stop(signal.SIGTERM)
        records = wait_completed(other, ids)
        assert_each_ran_once(records, emulators)
        dispatched = min(r["submitted_ms"] for r in records if r["submitted_ms"] > stopped_ms)
        print(f"\nSIGTERM -> first dispatch by the new leader {dispatched - stopped_ms} ms")
        assert dispatched - stopped_ms < 2000  # target ~1 s; a loaded 2-core machine's slack


def test_a_daemon_with_other_backends_stands_by_and_is_shown_differing(tmp_path: Path, redis_url: str, emulator):
    mine, theirs = emulator(), emulator()
    first = ReplicaProcess(tmp_path, redis_url, [mine], "r0")
    second = ReplicaProcess(tmp_path, redis_url, [theirs], "r1")
    try:
        first.start()
        assert leader_of([first]) is first
        second.start()
        time.sleep(1.5)  # a few of its lease tries
        view = second.cluster()
        assert view["leader"]["name"] == "r0"
        shown = {r["name"]: (r["role"], r["config_differs"], r["differing_sections"]) for r in view["replicas"]}
        assert shown == {"r0": ("leader", False, []), "r1": ("standby", True, ["static_backends"])}
        log = second.log()
        assert "another fleet configuration (differs in: static_backends)" in log
        assert "term started" not in log and "removing" not in log  # never ran the pool: touched nothing of r0's
        with first.http("ops") as admin:
            assert [b["id"] for b in admin.get("/api/pool").json()["backends"]] == ["static:emu0"]
    finally:
        second.stop(signal.SIGKILL)
        first.stop(signal.SIGKILL)


def test_a_second_replica_of_the_same_name_refuses_to_start(tmp_path: Path, redis_url: str, emulator):
    backend = emulator()
    first = ReplicaProcess(tmp_path / "a", redis_url, [backend], "gpu")
    twin = ReplicaProcess(tmp_path / "b", redis_url, [backend], "gpu")  # the same cluster.name, another port
    try:
        first.start()
        assert leader_of([first]) is first
        epoch = first.cluster()["leader"]["epoch"]
        twin.process = serve_subprocess(twin.config, twin.workdir / "comfyart.yaml")
        assert twin.process.wait(60) == 2
        assert "another live replica is named gpu" in twin.log()
        assert "term started" not in twin.log()  # it never asked for the lease
        assert first.cluster()["leader"] | {"since": None, "since_ms": None} == {
            "name": "gpu", "epoch": epoch, "since": None, "since_ms": None}  # the first one's term went on
    finally:
        twin.stop(signal.SIGKILL)
        first.stop(signal.SIGKILL)
