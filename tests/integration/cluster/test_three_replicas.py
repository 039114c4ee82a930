"""Three ``comfyart serve`` replicas on one redis-server under load (issue 24): 300 tasks submitted round-robin to
all three through the three APIs (REST, ComfyUI ``/prompt``, Comfy API v2), the leader SIGKILLed at about a third.
Every task completes exactly once (each prompt id once in the emulators' own ``/history``, one output set per task
in the replicas' output stores), and the clients following on the surviving replicas get every end: the events
socket (``/api/events``) every task's, the ComfyUI socket the end marker of each of its prompts, a v2 job's event
stream (SSE) its terminal status."""
from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tests.support.cluster import (
    ReplicaProcess,
    all_tasks,
    assert_each_ran_once,
    leader_of,
    output_files,
    replica_set,
)
from tests.support.graphs import text_to_image_graph

TASKS = 300
FINAL = {"completed", "failed", "canceled"}
FOLLOWED_BY_SSE = 12  # v2 jobs whose event stream a client on a follower reads (a key may hold 8 per replica)


class Ends:
    """What the clients on one follower heard end: task ids (events socket), ComfyUI prompt ids (its ``/ws``),
    v2 job ids (SSE)."""

    def __init__(self, replica: ReplicaProcess) -> None:
        self.replica = replica
        self.client_id = f"page-{replica.name}"
        self.tasks: set[str] = set()
        self.prompts: set[str] = set()
        self.jobs: set[str] = set()
        self.lagged = 0

    def ws_url(self, path: str) -> str:
        return self.replica.base_url.replace("http", "ws", 1) + path

    async def events(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.ws_url("/api/events"), headers=auth("ops")) as ws:
            async for message in ws:
                event = json.loads(message.data)
                if event.get("type") == "lagged":
                    self.lagged += 1
                elif event.get("status") in FINAL:
                    self.tasks.add(event["id"])

    async def comfy(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.ws_url(f"/ws?clientId={self.client_id}"), headers=auth("alice")) as ws:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame["type"] == "executing" and frame["data"].get("node") is None:
                    self.prompts.add(frame["data"]["prompt_id"])

    async def job(self, session: aiohttp.ClientSession, job_id: str) -> None:
        url = f"{self.replica.base_url}/api/v2/jobs/{job_id}/events"
        async with session.get(url, headers={**auth("alice"), "Accept": "text/event-stream"}) as answer:
            assert answer.status == 200, await answer.text()
            event = None
            async for raw in answer.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif event == "status" and line.startswith("data: ") and json.loads(
                        line[len("data: "):])["status"] in ("succeeded", "failed", "canceled"):
                    self.jobs.add(job_id)
                    return


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ReplicaProcess.key(name)}"}


def submit_round_robin(trio: Sequence[ReplicaProcess], client_ids: Sequence[str]) -> dict[str, list[str]]:
    """``TASKS`` submissions, the i-th to replica i % 3 (or the next one, when that one is gone: a refused
    connection is certain to have created nothing), through REST, ComfyUI ``/prompt`` (its client id one of the
    followers' sockets) and v2 in turn; the ids each API answered."""
    made: dict[str, list[str]] = {"rest": [], "prompt": [], "v2": []}
    clients = [r.http("alice") for r in trio]
    pages = itertools.cycle(client_ids)
    try:
        for i in range(TASKS):
            graph = text_to_image_graph(seed=i, steps=4)
            kind = ("rest", "prompt", "v2")[(i // 3) % 3]
            if kind == "rest":
                path, body, field = "/api/tasks", {"prompt": graph}, "id"
            elif kind == "prompt":
                path, body, field = "/prompt", {"prompt": graph, "client_id": next(pages)}, "prompt_id"
            else:
                path, body, field = "/api/v2/jobs", {"workflow": graph}, "id"
            answer = post_to_any(clients, i, path, body)
            assert answer.status_code in (200, 201), (kind, answer.status_code, answer.text)
            made[kind].append(answer.json()[field])
    finally:
        for client in clients:
            client.close()
    return made


def post_to_any(clients: Sequence[httpx.Client], first: int, path: str, body: dict[str, Any]) -> httpx.Response:
    for turn in range(len(clients)):
        try:
            return clients[(first + turn) % len(clients)].post(path, json=body)
        except httpx.ConnectError:
            continue
    raise AssertionError("no replica took the connection")


def completed_count(replica: ReplicaProcess) -> int:
    with replica.http("ops") as admin:
        return int(admin.get("/api/tasks", params={"status": "completed", "limit": 1}).json()["total"])


async def until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.25)


async def test_three_replicas_lose_nothing_when_the_leader_is_killed_at_a_third(tmp_path: Path, redis_url: str,
                                                                              emulator):
    emulators = [emulator("--step-seconds", "0.05") for _ in range(4)]
    with replica_set(tmp_path, redis_url, emulators, 3) as trio:
        leader = leader_of(trio)
        followers = [r for r in trio if r is not leader]
        heard = [Ends(r) for r in followers]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session, \
                asyncio.TaskGroup() as group:
            listeners = [group.create_task(coroutine) for ends in heard
                         for coroutine in (ends.events(session), ends.comfy(session))]
            await asyncio.sleep(0.5)  # the sockets are open
            made = await asyncio.to_thread(submit_round_robin, trio, [e.client_id for e in heard])
            streams = [group.create_task(heard[i % 2].job(session, job_id))
                       for i, job_id in enumerate(made["v2"][-FOLLOWED_BY_SSE:])]
            await until(lambda: completed_count(followers[0]) >= TASKS // 3, 120, "a third never completed")
            killed = time.monotonic()
            await asyncio.to_thread(leader.stop, signal.SIGKILL)
            await until(lambda: completed_count(followers[0]) == TASKS, 240, "not every task completed")
            async with asyncio.timeout(20):
                await asyncio.gather(*streams)
            await asyncio.sleep(1.0)  # the last ends reach the sockets
            for listener in listeners:
                listener.cancel()
        print(f"\n{TASKS} tasks on 3 replicas, leader killed; all completed {time.monotonic() - killed:.1f} s after")

        records = await asyncio.to_thread(all_tasks, followers[0])
        assert len(records) == TASKS and {r["status"] for r in records} == {"completed"}
        assert_each_ran_once(records, emulators)
        outputs = output_files(trio)
        assert len(outputs) == len(set(outputs)) == TASKS  # one image a task, stored once

        task_ids = {r["id"] for r in records}
        for ends in heard:
            assert ends.lagged == 0
            assert ends.tasks == task_ids, f"{ends.replica.name} missed {len(task_ids - ends.tasks)} ends"
        mine = [set(made["prompt"][i::2]) for i in range(2)]  # the pages' ids alternate: follower 0, follower 1
        for ends, prompts in zip(heard, mine, strict=True):
            assert prompts <= ends.prompts, f"{ends.replica.name}'s page missed {len(prompts - ends.prompts)} ends"
        assert set().union(*(e.jobs for e in heard)) == set(made["v2"][-FOLLOWED_BY_SSE:])
        with httpx.Client() as plain:  # the survivors agree on one new leader
            names = {plain.get(f"{r.base_url}/api/cluster", headers=auth("ops")).json()["leader"]["name"]
                     for r in followers}
        assert len(names) == 1 and names != {leader.name}
