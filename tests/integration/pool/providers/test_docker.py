"""The Docker provider on two real Docker engines (two hosts), with the emulator image built from Debian packages."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from comfyart.config.fleet import DockerConfig, DockerHostConfig
from comfyart.policy.placement import Placement
from comfyart.pool.providers.docker import DockerProvider
from tests.support.daemon import (
    healthy_count,
    make_settings,
    running_daemon,
    serve_subprocess,
    wait_for_pool,
    wait_for_task_sync,
    wait_for_tasks,
)
from tests.support.docker import DockerEngine, remove_test_containers, start_engine, stop_engine
from tests.support.graphs import basic_graph, text_to_image_graph
from tests.support.ports import free_port, free_port_range, wait_for_port

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def no_containers_left(engines: dict) -> Iterator[None]:
    yield
    for engine in engines["engines"].values():
        with engine.client() as client:
            remove_test_containers(client)


def docker_section(engines: dict, *, gpus_b: list | None = None, leftovers: str = "adopt", size: int = 6) -> dict:
    a, b = free_port_range(size), free_port_range(size)
    return {
        "image": engines["image"],
        "command": ["python3", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}",
                    "--base-dir", "/tmp/emulator", "--node-seconds", "0.05"],
        "network": "host", "startup_timeout": 60, "leftovers": leftovers,
        "hosts": [{"name": "host-a", "url": engines["engines"]["a"].url, "address": "127.0.0.1", "ports": list(a)},
                  {"name": "host-b", "url": engines["engines"]["b"].url, "address": "127.0.0.1", "ports": list(b),
                   "gpus": gpus_b or []}],
    }


def container_file(engine: DockerEngine, container_name: str, path: str) -> bytes:
    with engine.client() as client:
        stream, _ = client.containers.get(container_name).get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.getmembers()[0]
            extracted = archive.extractfile(member)
            assert extracted is not None
            return extracted.read()


async def test_twenty_tasks_complete_on_containers_spread_over_two_hosts(tmp_path: Path, redis_url, engines):
    settings = make_settings(tmp_path, redis_url, docker=docker_section(engines),
                             pool={"min_containers": 4, "max_containers": 4})
    async with running_daemon(settings) as api:
        graphs = [basic_graph(color=i * 4099, prefix=f"t/{i}") for i in range(20)]
        ids = [(await api.post("/api/tasks", json={"prompt": g})).json()["id"] for g in graphs]
        records = await wait_for_tasks(api, ids, timeout_s=120)
        assert [r["status"] for r in records] == ["completed"] * 20, [r["error"] for r in records]
        pool = (await api.get("/api/pool")).json()
        hosts = {b["host"] for b in pool["backends"] if b["status"] == "healthy"}
        assert hosts == {"host-a", "host-b"}
        assert len(pool["backends"]) == 4
        assert {r["backend"].split(":")[1] for r in records} == {"host-a", "host-b"}
        names = {b["id"]: b["name"] for b in pool["backends"]}
        for record in records:
            [output] = record["outputs"]
            stored = settings.data_dir / "outputs" / output["path"]
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == output["sha256"]
            engine = engines["engines"]["a" if ":host-a:" in record["backend"] else "b"]
            written = container_file(engine, names[record["backend"]],
                                     f"/tmp/emulator/output/{output['subfolder']}/{output['filename']}")
            assert hashlib.sha256(written).hexdigest() == output["sha256"]
        # the containers carry comfyart's labels and are pinned to nothing (no GPUs listed)
        with engines["engines"]["a"].client() as client:
            [one, *_] = client.containers.list(filters={"label": "comfyart.managed=true"})
            assert one.labels["comfyart.instance"] == "main" and one.labels["comfyart.host"] == "host-a"
            assert one.attrs["HostConfig"]["NetworkMode"] == "host"


async def test_an_unsatisfiable_gpu_request_is_reported_clearly(tmp_path: Path, redis_url, engines):
    settings = make_settings(tmp_path, redis_url, docker=docker_section(engines, gpus_b=[0]),
                             pool={"min_containers": 2, "max_containers": 2})
    async with running_daemon(settings) as api:
        pool = await wait_for_pool(api, lambda p: p["recent_errors"])
        [error, *_] = pool["recent_errors"]
        assert error["host"] == "host-b"
        assert "failed to start" in error["error"] and "capabilities: [[gpu]]" in error["error"]
        assert "GPU 0 was requested: is the NVIDIA container toolkit installed on host-b?" in error["error"]
        assert not [b for b in pool["backends"] if b["host"] == "host-b"]  # removed, not left half-started
    with engines["engines"]["b"].client() as client:
        assert client.containers.list(all=True, filters={"label": "comfyart.managed=true"}) == []


def _wait_for_healthy(port: int, count: int, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    wait_for_port(port, timeout_s=timeout_s)
    while time.monotonic() < deadline:
        pool = httpx.get(f"http://127.0.0.1:{port}/api/pool", timeout=10).json()
        if sum(b["status"] == "healthy" for b in pool["backends"]) >= count:
            return pool
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} healthy backends: {pool}")


@pytest.mark.parametrize("mode", ["remove", "adopt"])
def test_leftovers_of_a_killed_run_are_cleaned_or_adopted(tmp_path: Path, redis_url, engines, mode):
    port = free_port()
    config = {"server": {"port": port}, "redis": {"url": redis_url}, "data_dir": str(tmp_path / "data"),
              "docker": docker_section(engines, leftovers=mode), "pool": {"min_containers": 2, "max_containers": 2,
                                                                          "health_interval_s": 0.5}}
    config_path = tmp_path / "comfyart.yaml"
    first = serve_subprocess(config, config_path)
    try:
        before = {b["id"]: b["name"] for b in _wait_for_healthy(port, 2)["backends"]}
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    managed = {"label": "comfyart.managed=true"}
    with engines["engines"]["a"].client() as a, engines["engines"]["b"].client() as b:
        ids_before = {c.id for c in a.containers.list(filters=managed) + b.containers.list(filters=managed)}
    assert len(ids_before) == 2  # the killed run left its containers behind
    second = serve_subprocess(config, config_path)
    try:
        after = _wait_for_healthy(port, 2)
        with engines["engines"]["a"].client() as a, engines["engines"]["b"].client() as b:
            ids_after = {c.id for c in a.containers.list(all=True, filters=managed) +
                         b.containers.list(all=True, filters=managed)}
        assert len(after["backends"]) == 2
        if mode == "adopt":
            assert ids_after == ids_before and {b["id"] for b in after["backends"]} == set(before)
        else:
            assert not ids_after & ids_before and len(ids_after) == 2
        task = httpx.post(f"http://127.0.0.1:{port}/api/tasks", json={"prompt": basic_graph()}).json()
        assert wait_for_task_sync(port, task["id"])["status"] == "completed"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)


def containers_of(engines: dict) -> list:
    found = []
    for engine in engines["engines"].values():
        with engine.client() as client:
            # sparse: the list alone, with no inspect of each one, which fails for one removed in between
            found += [c.attrs["Names"][0].lstrip("/") for c in client.containers.list(
                all=True, sparse=True, filters={"label": "comfyart.managed=true"})]
    return found


async def test_a_burst_scales_the_pool_to_max_in_one_step_and_back_after_the_idle_timeout(tmp_path: Path, redis_url,
                                                                                           engines):
    settings = make_settings(tmp_path, redis_url, docker=docker_section(engines),
                             pool={"min_containers": 1, "max_containers": 4, "tasks_per_container": 2,
                                   "scale_up_cooldown_s": 0, "scale_down_cooldown_s": 0, "idle_timeout_s": 2})
    async with running_daemon(settings) as api:
        await wait_for_pool(api, lambda p: healthy_count(p) == 1, timeout_s=60)
        # the burst at once: the pool's periodic round (every 0.5 s here) must not see it half arrived
        answers = await asyncio.gather(*(api.post("/api/tasks", json={"prompt": basic_graph(color=i, prefix=f"b/{i}")})
                                         for i in range(50)))
        ids = [answer.json()["id"] for answer in answers]
        sizes, healthy_max, reasons = [], 0, set()
        deadline = time.monotonic() + 180
        while True:
            pool = (await api.get("/api/pool")).json()
            sizes.append(len(pool["backends"]))
            healthy_max = max(healthy_max, healthy_count(pool))
            if pool["autoscaler"]:
                reasons.add(pool["autoscaler"]["reason"])
            records = [(await api.get(f"/api/tasks/{i}")).json() for i in ids]
            if all(r["status"] == "completed" for r in records):
                break
            assert time.monotonic() < deadline and not any(r["status"] == "failed" for r in records)
            await asyncio.sleep(0.2)
        assert healthy_max == 4, sizes
        assert 2 not in sizes and 3 not in sizes[:sizes.index(4)], f"scaled up one at a time: {sizes}"
        # the decisions that acted, kept by the pool (polling alone could miss a short-lived one)
        scaling = [d["start"] for d in pool["recent_scaling"]]
        assert scaling[:2] == [1, 3], (scaling, reasons)
        assert len({r["backend"] for r in records}) == 4
        # idle for idle_timeout_s: drained and stopped down to min_containers, containers removed on Docker
        pool = await wait_for_pool(api, lambda p: len(p["backends"]) == 1, timeout_s=60)
        assert "drain" in pool["autoscaler"]["reason"] or "steady" in pool["autoscaler"]["reason"]
        deadline = time.monotonic() + 30
        while len(containers_of(engines)) != 1:
            assert time.monotonic() < deadline, containers_of(engines)
            await asyncio.sleep(0.2)


async def _slow_containers(api, count: int) -> dict:
    """Wait for ``count`` healthy containers and make their KSampler steps slow (0.05 s each)."""
    pool = await wait_for_pool(api, lambda p: healthy_count(p) == count, timeout_s=90)
    async with httpx.AsyncClient() as plain:
        for b in pool["backends"]:
            (await plain.post(b["url"] + "/emulator/control", json={"step_s": 0.05})).raise_for_status()
    return pool


async def test_docker_kill_of_a_busy_container_moves_its_task_to_another(tmp_path: Path, redis_url, engines):
    settings = make_settings(tmp_path, redis_url, docker=docker_section(engines),
                             pool={"min_containers": 2, "max_containers": 2})
    async with running_daemon(settings) as api:
        pool = await _slow_containers(api, 2)
        task_id = (await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=3, steps=60)})).json()["id"]
        deadline = time.monotonic() + 30
        while (record := (await api.get(f"/api/tasks/{task_id}")).json())["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        victim = next(b for b in pool["backends"] if b["id"] == record["backend"])
        engine = engines["engines"]["a" if victim["host"] == "host-a" else "b"]
        with engine.client() as client:
            client.containers.get(victim["name"]).kill()
        [task] = await wait_for_tasks(api, [task_id], timeout_s=90)
        assert task["status"] == "completed" and task["backend"] != victim["id"] and task["attempts"] == 2
        [attempt] = task["history"]
        assert attempt["backend"] == victim["id"] and attempt["outcome"] == "backend_lost"
        assert "exit code" in attempt["error"] or "disappeared" in attempt["error"]
        # the dead container was replaced to keep min_containers
        pool = await wait_for_pool(api, lambda p: healthy_count(p) == 2, timeout_s=90)
        assert any(e["id"] == victim["id"] for e in pool["recent_errors"])


async def test_a_docker_host_that_goes_away_hands_its_tasks_to_the_other(tmp_path: Path, redis_url, engines):
    settings = make_settings(tmp_path, redis_url, docker=docker_section(engines),
                             pool={"min_containers": 2, "max_containers": 2})
    try:
        async with running_daemon(settings) as api:
            pool = await _slow_containers(api, 2)
            assert {b["host"] for b in pool["backends"]} == {"host-a", "host-b"}
            ids = [(await api.post("/api/tasks", json={"prompt": text_to_image_graph(seed=i, steps=30)})).json()["id"]
                   for i in range(6)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stop_engine, engines["engines"]["b"])
            records = await wait_for_tasks(api, ids, timeout_s=120)
            assert [r["status"] for r in records] == ["completed"] * 6, [r["error"] for r in records]
            moved = [r for r in records if r["history"]]
            assert moved and all(r["history"][0]["backend"].startswith("docker:host-b:") for r in moved)
            assert all(r["backend"].startswith("docker:host-a:") for r in moved)
            pool = (await api.get("/api/pool")).json()
            assert next(h for h in pool["hosts"] if h["name"] == "host-b")["down"]
            assert {b["host"] for b in pool["backends"]} == {"host-a"}  # placement skips the host that is down
    finally:
        engines["engines"]["b"] = await asyncio.to_thread(start_engine, "b")


async def test_a_container_runs_its_command_in_the_configured_working_directory(engines):
    """ComfyUI's ``python main.py`` needs its folder as the working directory, whatever the image's WORKDIR; the
    relative ``--base-dir`` shows where the backend really ran."""
    [port, _] = free_port_range(2)
    host = DockerHostConfig(name="host-a", url=engines["engines"]["a"].url, address="127.0.0.1", ports=(port, port + 1))
    config = DockerConfig(image=engines["image"], working_dir="/srv/comfyui", env={"PYTHONPATH": "/opt/comfyart"},
                          command=["python3", "-m", "comfyart.emulator", "--host", "{address}", "--port", "{port}",
                                   "--base-dir", "emulated-{port}"], hosts=[host])
    provider = DockerProvider(config, instance="main")
    try:
        spawned = await provider.spawn(Placement("host-a", port, None))
        wait_for_port(port, timeout_s=60)
        probe = f"import os; print(os.readlink('/proc/1/cwd'), os.path.isdir('/srv/comfyui/emulated-{port}'))"
        with engines["engines"]["a"].client() as client:
            container = client.containers.get(spawned.handle)
            code, output = container.exec_run(["python3", "-c", probe])
            assert container.attrs["Config"]["WorkingDir"] == "/srv/comfyui"
        assert (code, output.decode().split()) == (0, ["/srv/comfyui", "True"])
    finally:
        await provider.close()


def models_dir(tmp_path: Path, name: str, *checkpoints: str) -> Path:
    folder = tmp_path / f"models-{name}"
    folder.mkdir()
    for checkpoint in checkpoints:
        (folder / checkpoint).write_bytes(b"")
    return folder


def checkpoint_graph(ckpt: str, seed: int) -> dict:
    graph = text_to_image_graph(seed=seed)
    graph["4"]["inputs"]["ckpt_name"] = ckpt
    return graph


async def ckpt_names(api) -> list:
    answer = await api.get("/object_info/CheckpointLoaderSimple")
    return answer.json()["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] if answer.is_success else []


async def test_tasks_for_a_model_only_host_b_has_start_a_container_on_host_b(tmp_path: Path, redis_url, engines):
    """Host a's containers mount a models folder with x, host b's one with x and y (their own ``volumes``). With
    one container up, on a, tasks for y make the pool start one on b, where they run; host b's inventory is known
    from a container it ran before, stopped since."""
    section = docker_section(engines)
    section["command"] += ["--checkpoints", ""]  # the mounted folder alone says what a container has
    mount = "/tmp/emulator/models/checkpoints"
    section["hosts"][0]["volumes"] = [f"{models_dir(tmp_path, 'a', 'x.safetensors')}:{mount}:ro"]
    section["hosts"][1]["volumes"] = [f"{models_dir(tmp_path, 'b', 'x.safetensors', 'y.safetensors')}:{mount}:ro"]
    settings = make_settings(tmp_path, redis_url, docker=section,
                             pool={"min_containers": 2, "max_containers": 2, "tasks_per_container": 10,
                                   "scale_up_cooldown_s": 0})
    async with running_daemon(settings) as api:
        # host b's containers are seen once (their inventory read), then b's is drained and stopped
        pool = await wait_for_pool(api, lambda p: healthy_count(p) == 2, timeout_s=90)
        deadline = time.monotonic() + 30
        while "y.safetensors" not in await ckpt_names(api):
            assert time.monotonic() < deadline, await ckpt_names(api)
            await asyncio.sleep(0.2)
        (await api.post("/api/pool/scale", json={"min_containers": 1})).raise_for_status()
        [on_b] = [b["id"] for b in pool["backends"] if b["host"] == "host-b"]
        (await api.post(f"/api/pool/backends/{on_b}/drain")).raise_for_status()
        pool = await wait_for_pool(api, lambda p: [b["host"] for b in p["backends"]] == ["host-a"], timeout_s=30)
        assert "y.safetensors" in await ckpt_names(api)  # the stopped host's models are still the fleet's
        # tasks for y: 3 at 10 per container want no second container by load; a cannot run them
        answers = [await api.post("/api/tasks", json={"prompt": checkpoint_graph("y.safetensors", i)})
                   for i in range(3)]
        assert [a.status_code for a in answers] == [201] * 3, [a.text for a in answers]
        records = await wait_for_tasks(api, [a.json()["id"] for a in answers], timeout_s=120)
        assert [r["status"] for r in records] == ["completed"] * 3, [r["error"] for r in records]
        assert all(r["backend"].startswith("docker:host-b:") for r in records)
        pool = (await api.get("/api/pool")).json()
        assert sorted(b["host"] for b in pool["backends"]) == ["host-a", "host-b"]
        assert any("blocked" in d["reason"] and d["start"] == 1 for d in pool["recent_scaling"])
        # the container on b really mounts its host's folder
        with engines["engines"]["b"].client() as client:
            [container] = client.containers.list(filters={"label": "comfyart.managed=true"})
            mounts = container.attrs["Mounts"]
            assert any(m["Destination"] == mount and m["Source"].endswith("models-b") for m in mounts), mounts
