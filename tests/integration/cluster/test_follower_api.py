"""A standby replica answers like the leader (issue 24, follower parity): two ``comfyart serve`` processes on one
redis-server over emulators. The standby mirrors the leader's pool (``pool.mirror``): ``/readyz``, ``/object_info``,
``/api/pool``, ``/api/scheduler`` and ``/healthz`` answer as on the leader, and a ComfyUI prompt, a REST task and a
v2 job submitted to it are admitted against the fleet and run by the leader; the admin's pool and scheduler changes
and ComfyUI's ``/interrupt`` made on it take effect on the leader (``api.forward``). When the leader dies, a
forwarded request answers 503 until the standby takes over, and then its own pool runs."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.cluster import ReplicaProcess, eventually, leader_and_standby, leader_of, wait_completed
from tests.support.graphs import text_to_image_graph
from tests.support.v2 import wait_for_job

SLOW = ("--step-seconds", "0.1")  # a 4-step prompt takes about half a second, a 40-step one four




def get(replica: ReplicaProcess, path: str, key: str | None = "ops", **params: Any) -> httpx.Response:
    with replica.http(key) as client:
        return client.get(path, params=params)


def backends(replica: ReplicaProcess) -> dict[str, tuple[str, str]]:
    return {b["id"]: (b["status"], b["mode"]) for b in get(replica, "/api/pool").json()["backends"]}


def test_a_standby_answers_like_the_leader_and_forwards_its_changes(tmp_path: Path, redis_url: str, emulator):
    emulators = [emulator(*SLOW), emulator(*SLOW)]
    extra = emulator(*SLOW)
    with leader_and_standby(tmp_path, redis_url, emulators) as (leader, standby):
        ready = eventually(lambda: get(standby, "/readyz", None).status_code == 200, "standby ready")
        assert ready and get(standby, "/readyz", None).json()["role"] == "standby"
        eventually(lambda: backends(leader) == {"static:emu0": ("healthy", "active"),
                                                "static:emu1": ("healthy", "active")}, "leader's pool healthy")
        eventually(lambda: backends(standby) == backends(leader), "the same pool on the standby")
        assert get(standby, "/object_info", "alice").json() == get(leader, "/object_info", "alice").json()
        health = get(standby, "/healthz", None).json()
        assert (health["backends"], health["healthy_backends"]) == (2, 2)
        assert get(standby, "/api/scheduler").json()["strategy"] == get(leader, "/api/scheduler").json()["strategy"]

        # submitted to the standby, checked there against the fleet, run by the leader
        with standby.http("alice") as alice:
            prompt = alice.post("/prompt", json={"prompt": text_to_image_graph(seed=7)})
            assert prompt.status_code == 200, prompt.text
            refused = alice.post("/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
            assert refused.status_code == 400 and "NoSuchNode" in refused.text
            job = alice.post("/api/v2/jobs", json={"workflow": text_to_image_graph(seed=8)})
            assert job.status_code in (200, 201, 202), job.text
            assert wait_for_job(alice, job.json()["id"])["status"] == "succeeded"
        ids = standby.submit(2, seed=20)
        wait_completed(standby, ids)
        pid = prompt.json()["prompt_id"]
        history = eventually(lambda: get(standby, f"/history/{pid}", "alice").json(), "prompt in history")
        assert history[pid]["status"]["status_str"] == "success"

        # the admin's changes, made on the standby, take effect on the leader (and come back through the mirror)
        with standby.http("ops") as admin:
            scaled = admin.post("/api/pool/scale", json={"max_containers": 3})
            assert scaled.status_code == 200, scaled.text
            added = admin.post("/api/pool/backends", json={"name": "extra", "url": extra.url})
            assert added.status_code == 201, added.text
            put = admin.put("/api/scheduler", json={"lookahead": 7})
            assert put.status_code == 200 and put.json()["lookahead"] == 7
        assert get(leader, "/api/pool").json()["config"]["max_containers"] == 3

        # a browser signed in on the standby (its session cookie, its page's Origin) changes the scale too: the
        # standby checked the Origin; the leader, whose host the page's Origin is not, must not refuse it
        with httpx.Client(base_url=standby.base_url, timeout=30) as browser:
            signed = browser.post("/comfy/signin", data={"key": standby.key("ops")},
                                  headers={"Origin": standby.base_url})
            assert signed.status_code == 303 and browser.cookies, signed.text
            scaled = browser.post("/api/pool/scale", json={"max_containers": 3},
                                  headers={"Origin": standby.base_url})
            assert scaled.status_code == 200, scaled.text
        assert get(leader, "/api/scheduler").json()["lookahead"] == 7
        eventually(lambda: backends(leader).get("static:extra") == ("healthy", "active"), "extra healthy")
        eventually(lambda: backends(standby) == backends(leader), "the extra backend on the standby")
        eventually(lambda: get(standby, "/api/pool").json()["config"]["max_containers"] == 3, "scale mirrored")
        eventually(lambda: get(standby, "/api/scheduler").json()["lookahead"] == 7, "scheduler mirrored")

        # ComfyUI's /interrupt on the standby interrupts the prompt the leader runs
        with standby.http("alice") as alice:
            slow = alice.post("/prompt", json={"prompt": text_to_image_graph(seed=9, steps=40)}).json()["prompt_id"]
            eventually(lambda: [i[1] for i in alice.get("/queue").json()["queue_running"]] == [slow], "running")
            time.sleep(0.5)  # under way on its backend
            assert alice.post("/interrupt", json={"prompt_id": slow}).status_code == 200
            ended = eventually(lambda: alice.get(f"/history/{slow}").json(), "interrupted prompt in history")
        assert ended[slow]["status"]["messages"][-1][0] == "execution_interrupted"

        # the leader dies: a change on the standby has nowhere to go until it takes over; then its own pool runs
        leader.stop(signal.SIGKILL)
        with standby.http("ops") as admin:
            gone = admin.post("/api/pool/scale", json={"max_containers": 4})
        assert gone.status_code == 503 and gone.headers["retry-after"] == "1", gone.text
        assert "leader" in gone.json()["detail"]
        assert leader_of([standby], timeout_s=10) is standby
        eventually(lambda: "term started" in standby.log(), "its term")
        eventually(lambda: len([s for s, _ in backends(standby).values() if s == "healthy"]) == 3, "its own pool")
        assert get(standby, "/readyz", None).status_code == 200
        wait_completed(standby, standby.submit(2, seed=40))
        with standby.http("ops") as admin:  # a leader runs the route itself
            assert admin.post("/api/pool/scale", json={"max_containers": 4}).status_code == 200


def test_a_request_forwarded_once_is_not_forwarded_again(tmp_path: Path, redis_url: str, emulator):
    with leader_and_standby(tmp_path, redis_url, [emulator()]) as (leader, standby):
        with standby.http("ops") as admin:
            looped = admin.post("/api/pool/scale", json={"max_containers": 17},
                                headers={"X-Comfyart-Forwarded": "elsewhere"})
        assert looped.status_code == 503 and "does not lead either" in looped.json()["detail"]
        assert get(leader, "/api/pool").json()["config"]["max_containers"] != 17
