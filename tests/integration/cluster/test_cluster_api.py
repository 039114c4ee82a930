"""``GET /api/cluster``, ``GET /readyz`` and the cluster's metrics on a running daemon (auth on, an emulator
backend). The leader's lease and the elections are written here as ``store.lease`` writes them."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx

from comfyart.store.keys import Keys
from comfyart.store.replicas import ReplicaRecord, ReplicaStore
from tests.support.cluster import running_replica
from tests.support.daemon import make_settings

ADMIN = {"Authorization": "Bearer cluster-admin-key-0123456789abcdef"}
CLIENT = {"Authorization": "Bearer cluster-client-key-0123456789abcdef"}


def settings_for(tmp_path: Path, redis_url: str, emulator, **sections):
    emu = emulator()
    return make_settings(tmp_path, redis_url, static_backends=[{"name": "emu", "url": emu.url}],
                         auth={"keys": [{"name": "ops", "role": "admin", "key": ADMIN["Authorization"][7:]},
                                        {"name": "app", "key": CLIENT["Authorization"][7:]}]},
                         **{"cluster": {"heartbeat_s": 0.2}, "redis": {"url": redis_url, "prefix": "test-p"},
                            **sections})


async def ready(api: httpx.AsyncClient) -> httpx.Response:
    async with asyncio.timeout(20):
        while (response := await api.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.05)
    return response


async def test_the_cluster_lists_the_replicas_the_leader_and_the_elections(tmp_path: Path, redis_url, emulator,
                                                                         redis_client):
    settings = settings_for(tmp_path, redis_url, emulator, cluster={"name": "blue-1", "heartbeat_s": 0.2})
    async with running_replica(settings) as (api, _):
        await ready(api)
        now = int(time.time() * 1000)
        epoch_now = int(await redis_client.get("test-p:leader:epoch"))  # its own election, at its start
        for epoch, name in ((6, "green-1"), (7, "blue-1")):  # two older ones, as if in another order
            await redis_client.lpush("test-p:leader:history", json.dumps(
                {"epoch": epoch, "replica": name, "since_ms": now - 65_000, "reason": "expired"}))
        # another replica, configured with other static backends
        other = ReplicaRecord("green-1", "http://green:8100", "0.0.9", now - 90_000, now, "standby", 99,
                              {**settings_fleet(await api.get("/api/cluster", headers=ADMIN)), "static_backends": "x"})
        await ReplicaStore(redis_client, Keys("test-p")).beat(other, ttl_ms=60_000)

        assert (await api.get("/api/cluster", headers=CLIENT)).status_code == 403
        assert (await api.get("/api/cluster")).status_code == 401
        answer = (await api.get("/api/cluster", headers=ADMIN)).json()
        assert answer["replica"] == "blue-1"
        assert answer["leader"]["name"] == "blue-1" and answer["leader"]["epoch"] == epoch_now
        assert answer["leader"]["since"].endswith("Z")
        mine, theirs = answer["replicas"][0], answer["replicas"][1]  # by name: blue-1, green-1
        assert (mine["name"], mine["leader"], mine["config_differs"], mine["role"]) == ("blue-1", True, False, "leader")
        assert mine["url"] == f"http://127.0.0.1:{settings.server.port}" and mine["version"]
        assert abs(mine["heartbeat_ms"] - answer["now_ms"]) < 5_000
        assert (theirs["name"], theirs["leader"], theirs["config_differs"], theirs["differing_sections"]) == (
            "green-1", False, True, ["static_backends"])
        assert [e["epoch"] for e in answer["elections"]] == [7, 6, epoch_now]

        metrics = (await api.get("/metrics", headers=ADMIN)).text
        for line in ("comfyart_cluster_replicas 2.0", "comfyart_cluster_leader 1.0",
                     "comfyart_cluster_elections_total 3.0"):
            assert line in metrics, metrics[-1500:]
        epoch_line = next(line for line in metrics.splitlines() if line.startswith("comfyart_cluster_epoch "))
        assert float(epoch_line.split()[1]) == epoch_now  # the lease's epoch, raised by its own election
    assert await redis_client.zrange("test-p:replicas", 0, -1) == ["green-1"]  # it left when it stopped


def settings_fleet(response: httpx.Response) -> dict[str, str]:
    return response.json()["replicas"][0]["fleet"]


async def test_ready_when_joined_and_not_when_stopping(tmp_path: Path, redis_url, emulator):
    settings = settings_for(tmp_path, redis_url, emulator)
    async with running_replica(settings, leading=lambda: False) as (api, daemon):
        response = await ready(api)  # no key needed, as for /healthz
        # the role this replica believes (standby here: running_replica's ``leading`` overrides what it reports)
        assert response.json() == {"ready": True, "replica": f"{socket.gethostname()}:{settings.server.port}",
                                   "role": daemon.services.replica.role}
        assert (await api.get("/healthz")).status_code == 200

        daemon.services.replica.stopping = True  # as the daemon does when it starts to stop
        response = await api.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "stopping" and response.json()["ready"] is False
        assert (await api.get("/healthz")).status_code == 200  # alive all the same


async def test_not_ready_before_the_first_heartbeat(tmp_path: Path, redis_url, emulator):
    settings = settings_for(tmp_path, redis_url, emulator, cluster={"heartbeat_s": 60})
    async with running_replica(settings) as (api, daemon):
        await ready(api)
        async with asyncio.timeout(10):  # its beat as the leader: written at once when its role changed
            while (await api.get("/api/cluster", headers=ADMIN)).json()["replicas"][0]["role"] != "leader":
                await asyncio.sleep(0.05)
        daemon.services.replica.heartbeat.joined.clear()  # as before its first beat (the next is a minute away)
        response = await api.get("/readyz")
        assert response.status_code == 503 and response.json()["reason"].startswith("not joined")


async def test_a_plain_daemon_joins_the_registry_and_leads_at_once(tmp_path: Path, redis_url, emulator):
    from tests.support.daemon import running_daemon

    settings = settings_for(tmp_path, redis_url, emulator)
    async with running_daemon(settings) as api:
        name = f"{socket.gethostname()}:{settings.server.port}"
        assert (await ready(api)).json() == {"ready": True, "replica": name, "role": "leader"}
        cluster = (await api.get("/api/cluster", headers=ADMIN)).json()
        assert cluster["leader"]["name"] == name and [r["name"] for r in cluster["replicas"]] == [name]
        assert cluster["replicas"][0]["role"] == "leader" and cluster["elections"][0]["replica"] == name
