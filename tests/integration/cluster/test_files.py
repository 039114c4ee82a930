"""Files from any replica (issue 24): two ``comfyart serve`` processes on one redis-server, each with its own
data_dir, over emulators. An output the leader downloaded is served by the standby (ComfyUI /view, the REST
outputs route, v2 content: the same bytes); an image uploaded to the standby reaches the backend when the leader
dispatches a prompt that loads it; a holder that is gone gives one line, not a stack trace; the peer route wants
the cluster's secret and never leaves its stores."""
from __future__ import annotations

import base64
import io
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from PIL import Image

from tests.support.cluster import ReplicaProcess, leader_and_standby, running_replica, wait_completed
from tests.support.daemon import make_settings, wait_for_tasks
from tests.support.graphs import image_to_image_graph

PEER = "/api/cluster/peer/files"



def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(replica: ReplicaProcess, data: bytes) -> str:
    with replica.http("alice") as alice:
        answer = alice.post("/upload/image", files={"image": ("picture.png", data, "image/png")})
    assert answer.status_code == 200, answer.text
    name: str = answer.json()["name"]
    return name


def output_of(replica: ReplicaProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task, its first output) of one task run through ``replica``."""
    [task_id] = replica.submit(1)
    [record] = wait_completed(replica, [task_id])
    return record, record["outputs"][0]


def test_an_output_the_leader_downloaded_is_served_by_the_standby(tmp_path: Path, redis_url: str, emulator):
    with leader_and_standby(tmp_path, redis_url, [emulator()]) as (leader, standby):
        task, output = output_of(leader)
        assert output["replica"] == leader.name
        stored = (leader.workdir / "data" / "outputs" / output["path"]).read_bytes()
        assert not (standby.workdir / "data" / "outputs" / task["id"]).exists()  # not on the standby's disk
        subfolder = "/".join(filter(None, [task["id"], output["subfolder"]]))
        asset_id = "o1.{}.{}".format(*(base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
                                       for text in (task["id"], output["filename"])))
        with standby.http("alice") as alice:
            view = alice.get("/view", params={"filename": output["filename"], "subfolder": subfolder,
                                              "type": "output"})
            rest = alice.get(f"/api/tasks/{task['id']}/outputs/{output['filename']}")
            content = alice.get(f"/api/v2/assets/{asset_id}/content")
        assert [view.status_code, rest.status_code, content.status_code] == [200, 200, 200]
        assert view.content == rest.content == content.content == stored
        cached = list((standby.workdir / "data" / "cache" / "outputs").rglob("*.png"))
        assert [p.read_bytes() for p in cached] == [stored]  # one copy, kept for the next reader


def test_the_peer_route_wants_the_cluster_secret_and_stays_in_its_stores(tmp_path: Path, redis_url: str, emulator):
    with leader_and_standby(tmp_path, redis_url, [emulator()]) as (leader, standby):
        data = png((10, 200, 30))
        name = upload(standby, data)
        secret = redis.Redis.from_url(redis_url).get("comfyart:cluster:secret")
        assert secret
        (standby.workdir / "secret.txt").write_text("not for peers")
        with httpx.Client(base_url=standby.base_url) as anyone:
            assert anyone.get(f"{PEER}/inputs/{name}").status_code == 403
            assert anyone.get(f"{PEER}/inputs/{name}", headers={"X-Comfyart-Peer": "guess"}).status_code == 403
            peer = {"X-Comfyart-Peer": secret.decode()}
            assert anyone.get(f"{PEER}/inputs/{name}", headers=peer).content == data
            # encoded: httpx would resolve a plain ".." before sending, and the route would never see it
            for path in ("outputs/..%2F..%2Fsecret.txt", "outputs/%2E%2E/secret.txt", "inputs/..%2Fsecret.txt",
                         "outputs/x/%2E%2E", "blobs/" + "0" * 63, "config/comfyart.yaml"):
                assert anyone.get(f"{PEER}/{path}", headers=peer).status_code == 404, path
        del leader


def test_an_image_uploaded_to_the_standby_reaches_the_backend_through_the_leader(tmp_path: Path, redis_url: str,
                                                                                 emulator):
    backend = emulator()
    with leader_and_standby(tmp_path, redis_url, [backend]) as (leader, standby):
        data = png((200, 40, 90))
        name = upload(standby, data)
        assert not list((leader.workdir / "data" / "inputs").rglob(name))
        with leader.http("alice") as alice:
            answer = alice.post("/prompt", json={"prompt": image_to_image_graph(name), "client_id": "c1"})
            assert answer.status_code == 200, answer.text
            prompt_id = answer.json()["prompt_id"]
            rest = alice.post("/api/tasks", json={"prompt": image_to_image_graph(name, seed=7)})
            assert rest.status_code in (200, 201, 202), rest.text
            deadline = time.monotonic() + 60
            while prompt_id not in (history := alice.get(f"/history/{prompt_id}").json()):
                assert time.monotonic() < deadline, "the prompt did not finish"
                time.sleep(0.2)
        assert history[prompt_id]["status"]["status_str"] == "success"
        wait_completed(leader, [rest.json()["id"]])
        delivered = httpx.get(f"{backend.url}/view", params={"filename": name, "type": "input"})
        assert delivered.status_code == 200 and delivered.content == data


def test_a_holder_that_is_gone_gives_one_line(tmp_path: Path, redis_url: str, emulator):
    with leader_and_standby(tmp_path, redis_url, [emulator()]) as (leader, standby):
        task, output = output_of(leader)
        name = upload(leader, png((1, 2, 3)))
        leader.stop(signal.SIGTERM)
        with standby.http("alice") as alice:
            rest = alice.get(f"/api/tasks/{task['id']}/outputs/{output['filename']}")
            view = alice.get("/view", params={"filename": name, "type": "input"})
        assert rest.status_code == 503
        assert rest.json()["detail"] == (f"output {task['id']}/{output['filename']} is on replica {leader.name}, "
                                         f"which is not reachable")
        assert view.status_code == 503
        assert view.json()["detail"] == f"input {name} is on replica {leader.name}, which is not reachable"


def test_a_task_whose_image_is_on_a_replica_away_waits_for_it(tmp_path: Path, redis_url: str, emulator):
    backend = emulator()
    with leader_and_standby(tmp_path, redis_url, [backend]) as (leader, standby):
        data = png((10, 200, 30))
        name = upload(standby, data)
        standby.stop(signal.SIGTERM)  # restarting, as in a rolling upgrade
        with leader.http("alice") as alice:
            task_id = alice.post("/api/tasks", json={"prompt": image_to_image_graph(name)}).json()["id"]
            time.sleep(3.0)  # tried, put off, tried again
            record = alice.get(f"/api/tasks/{task_id}").json()
        assert record["status"] == "pending", record  # not failed: its file's replica may come back
        assert "task waits for its input file" in leader.log()
        standby.start()
        [done] = wait_completed(leader, [task_id], timeout_s=90)
        assert done["attempts"] == 1  # waiting spent no attempt
        delivered = httpx.get(f"{backend.url}/view", params={"filename": name, "type": "input"})
        assert delivered.status_code == 200 and delivered.content == data


async def test_one_process_writes_no_index_and_serves_no_peer(tmp_path: Path, emulator):
    emu = emulator()
    settings = make_settings(tmp_path, None, static_backends=[{"name": "emu", "url": emu.url}])
    async with running_replica(settings) as (api, daemon):
        assert not daemon.stores.replicated and daemon.services.files is None
        answer = await api.post("/upload/image", files={"image": ("p.png", png((9, 9, 9)), "image/png")})
        name = answer.json()["name"]
        task = (await api.post("/api/tasks", json={"prompt": image_to_image_graph(name)})).json()
        [done] = await wait_for_tasks(api, [task["id"]])
        assert done["status"] == "completed" and done["outputs"][0]["replica"] is None
        assert await daemon.stores.client.keys("comfyart:files:*") == []
        assert await daemon.stores.client.exists("comfyart:cluster:secret") == 0
        assert (await api.get(f"{PEER}/inputs/{name}", headers={"X-Comfyart-Peer": ""})).status_code == 404
